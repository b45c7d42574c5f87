"""PNG charts of an experiment (matplotlib, Agg backend: no display needed).

- ``throughput.png``: jobs/s per strategy per workload (median bar, min-max whisker);
- ``latency_cdf.png``: end-to-end latency CDF per strategy, one panel per workload (every job
  of every repeat, from ``jobs.csv``);
- ``memory.png``: peak and idle PSS of the worker tree per strategy per workload;
- ``cpu_scaling.png`` (``--docker`` with several ``--cpus``): jobs/s against the container's CPU
  limit per strategy, with linear scaling dotted;
- ``timeouts.png``: CPU seconds of the worker tree around a job that overran its timeout.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from producer.results import Figures, Results, SummaryRow, TimeoutRun

SHADES = {
    "thread": ("#1f77b4", "#9ecae1", "#08306b", "#4292c6"),
    "process": ("#d62728", "#fcae91", "#67000d", "#fb6a4a"),
    "inline": ("#7f7f7f", "#bdbdbd", "#404040", "#969696"),
    "hybrid": ("#9467bd", "#cbc9e2", "#3f007d", "#807dba"),
    "auto": ("#2ca02c", "#a1d99b", "#00441b", "#41ab5d"),
}
_ASSIGNED: dict[str, str] = {}
Value = Callable[[SummaryRow], float | None]  # the number a bar shows, of one summary row


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _save(fig: Any, path: Path) -> Path:
    """Lays the figure out, writes it to ``path`` and frees it (pyplot keeps every open figure)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(row: SummaryRow) -> str:
    return row.label  # container experiments: the same slots under two limits are two configurations


def _color(label: str) -> str:
    """One colour per strategy, a different shade per size (stable within a run)."""
    if label not in _ASSIGNED:
        strategy = label.split("x")[0]
        shades = SHADES.get(strategy, ("#2ca02c", "#98df8a", "#00441b", "#41ab5d"))
        used = sum(1 for k in _ASSIGNED if k.split("x")[0] == strategy)
        _ASSIGNED[label] = shades[used % len(shades)]
    return _ASSIGNED[label]


def _configs(summary: list[SummaryRow]) -> list[str]:
    order = {s: i for i, s in enumerate(SHADES)}
    rows = sorted(summary, key=lambda r: (order.get(r.strategy, 9), int(r.concurrency)))
    return list(dict.fromkeys(_label(r) for r in rows))


def _bars_on(
    ax: Any,
    summary: list[SummaryRow],
    key: Value,
    low: Value | None = None,
    high: Value | None = None,
    marker: Value | None = None,
) -> None:
    workloads = list(dict.fromkeys(r.workload for r in summary))
    configs = _configs(summary)
    width = 0.8 / max(1, len(configs))
    for i, cfg in enumerate(configs):
        xs, ys, lo, hi, marks = [], [], [], [], []
        for j, w in enumerate(workloads):
            row = next((r for r in summary if r.workload == w and _label(r) == cfg), None)
            value = key(row) if row is not None else None
            if row is None or value is None:
                continue
            y = float(value)
            lo_v, hi_v, mark_v = (
                (low(row) if low else None),
                (high(row) if high else None),
                (marker(row) if marker else None),
            )
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(y)
            lo.append(y - float(lo_v) if lo_v is not None else 0.0)
            hi.append(float(hi_v) - y if hi_v is not None else 0.0)
            marks.append(float(mark_v) if mark_v is not None else math.nan)
        if not xs:
            continue
        ax.bar(xs, ys, width * 0.95, label=cfg, color=_color(cfg))
        if low or high:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="none", ecolor="black", capsize=3, linewidth=1)
        if marker:
            ax.scatter(xs, marks, marker="_", s=200, color="black", zorder=3)
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels(workloads)
    ax.grid(axis="y", alpha=0.3)


def _figure(get: Callable[[Figures], float | None]) -> Value:
    return lambda r: get(r.figures)


def memory_chart(out: Path, summary: list[SummaryRow]) -> Path:
    n = max(1, len(dict.fromkeys(r.workload for r in summary)))
    fig, axes = plt.subplots(1, 2, figsize=(max(10.0, 3.2 * n + 3), 4.2))
    for ax, (peak_key, idle_key, title) in zip(
        axes,
        (
            (
                _figure(lambda m: m.peak_uss_mib),
                _figure(lambda m: m.idle_uss_mib),
                "USS: memory no other process shares",
            ),
            (
                _figure(lambda m: m.peak_pss_mib),
                _figure(lambda m: m.idle_pss_mib),
                "PSS: shared pages divided among their users",
            ),
        ),
        strict=True,
    ):
        _bars_on(ax, summary, peak_key, marker=idle_key)
        ax.set_title(title)
        ax.set_ylabel("MiB, worker tree (bar: peak under load; -: idle)")
        _legend(ax)
    fig.suptitle("Memory per strategy")
    return _save(fig, out / "memory.png")


def _bars(
    out: Path,
    summary: list[SummaryRow],
    key: Value,
    ylabel: str,
    title: str,
    name: str,
    low: Value | None = None,
    high: Value | None = None,
    marker: Value | None = None,
    log_scale: bool = False,
) -> Path:
    workloads = list(dict.fromkeys(r.workload for r in summary))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(workloads) + 2), 4.2))
    _bars_on(ax, summary, key, low, high, marker)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log_scale:
        ax.set_yscale("log")
    _legend(ax)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / name)


def latency_cdf(out: Path, summary: list[SummaryRow]) -> Path | None:
    jobs_csv = out / "jobs.csv"
    if not jobs_csv.exists():
        return None
    series: dict[tuple[str, str], list[float]] = {}
    with open(jobs_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row["status"] != "finished" or not row["ended_at"] or not row["enqueued_at"]:
                continue
            key = (row["workload"], row["cell"].split("/")[0] or f"{row['strategy']}x{row['concurrency']}")
            series.setdefault(key, []).append(float(row["ended_at"]) - float(row["enqueued_at"]))
    workloads = list(dict.fromkeys(r.workload for r in summary))
    if not workloads or not series:
        return None
    cols = min(2, len(workloads))
    rows = math.ceil(len(workloads) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.6 * rows), squeeze=False)
    for idx, w in enumerate(workloads):
        ax = axes[idx // cols][idx % cols]
        for (wl, cfg), vals in sorted(series.items()):
            if wl != w or not vals:
                continue
            vals.sort()
            n = len(vals)
            ax.step(vals, [(i + 1) / n for i in range(n)], where="post", label=cfg, color=_color(cfg))
        ax.set_xscale("log")
        ax.set_title(f"{w}: end-to-end latency (enqueued -> ended)")
        ax.set_xlabel("seconds (log)")
        ax.set_ylabel("fraction of jobs")
        ax.grid(alpha=0.3)
        _legend(ax)
    for idx in range(len(workloads), rows * cols):
        axes[idx // cols][idx % cols].axis("off")
    return _save(fig, out / "latency_cdf.png")


def cpu_scaling_chart(out: Path, summary: list[SummaryRow]) -> Path | None:
    """Container experiments: jobs/s against the CPU limit, one line per strategy (and size
    argument), one panel per workload; the dotted line is linear scaling from the smallest limit."""
    points = [
        (r, r.cpu_limit, r.figures.throughput_jobs_s)
        for r in summary
        if r.cpu_limit is not None and r.figures.throughput_jobs_s is not None
    ]
    if len({cpu for _, cpu, _ in points}) < 2:
        return None
    workloads = list(dict.fromkeys(r.workload for r, _, _ in points))
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.0 * len(workloads), 3.8), squeeze=False)
    for ax, w in zip(axes[0], workloads, strict=True):
        lines: dict[str, list[tuple[str, float, float]]] = {}
        for r, cpu, thr in points:
            if r.workload == w and cpu is not None and thr is not None:
                lines.setdefault(f"{r.strategy} ({r.concurrency_arg or r.concurrency})", []).append(
                    (r.strategy, cpu, thr)
                )
        for label, rs in lines.items():
            rs.sort(key=lambda p: p[1])
            xs = [cpu for _, cpu, _ in rs]
            ys = [thr for _, _, thr in rs]
            color = _color(f"{rs[0][0]}x{label}")
            ax.plot(xs, ys, marker="o", label=label, color=color)
            ax.plot(xs, [ys[0] * x / xs[0] for x in xs], linestyle=":", color=color, alpha=0.6)
        ax.set_title(f"{w}: throughput vs CPU limit")
        ax.set_xlabel("container CPU limit (CPUs)")
        ax.set_ylabel("jobs/s (median)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        _legend(ax)
    return _save(fig, out / "cpu_scaling.png")


def timeouts_chart(out: Path, timeouts: list[TimeoutRun]) -> Path | None:
    if not timeouts:
        return None
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for t in timeouts:
        line = t.cpu_timeline
        if not line:
            continue
        t0 = line[0][1]
        ax.plot([p[0] for p in line], [p[1] - t0 for p in line], label=t.strategy, color=_color(t.strategy))
    limit = timeouts[0].job_timeout_s
    if limit:
        ax.axvline(float(limit), color="black", linestyle="--", linewidth=1, label=f"job_timeout={limit} s")
    ax.set_xlabel("seconds since the overdue job started")
    ax.set_ylabel("CPU seconds of the worker tree")
    ax.set_title("A job that overruns its timeout: does its code stop?")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, out / "timeouts.png")


def write_all(out: Path, results: Results) -> list[Path]:
    summary = results.summary
    paths: list[Path] = []
    if summary:
        paths.append(
            _bars(
                out, summary, _figure(lambda m: m.throughput_jobs_s), "jobs/s (median; whiskers: min-max over repeats)",
                "Throughput per strategy per workload", "throughput.png", lambda r: r.throughput_min,
                lambda r: r.throughput_max, log_scale=True,
            )
        )  # fmt: skip
        paths.append(memory_chart(out, summary))
        cdf = latency_cdf(out, summary)
        if cdf:
            paths.append(cdf)
        scaling = cpu_scaling_chart(out, summary)
        if scaling:
            paths.append(scaling)
    tc = timeouts_chart(out, results.timeouts)
    if tc:
        paths.append(tc)
    return paths
