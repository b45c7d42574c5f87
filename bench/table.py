"""The benchmark's Markdown report: medians over repeats per runner and workload, the limits,
the fixed start-up cost of a worker run, and issue 7's targets checked against this run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.catalog import STRATEGIES, Workload, available_cpus
from bench.limits import best_limits, nominal_limit
from producer.stats import group_by, median_of


def med(values: Sequence[float | None]) -> float:
    """The median of the repeats that measured something (the producer's rule); NaN if none did."""
    m = median_of(values)
    return math.nan if m is None else m


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:,.{digits}f}"


def fmt_rate(x: float) -> str:
    if math.isnan(x):
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def aggregate(cells: list[dict[str, Any]], limits: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per (runner, workload): medians over the repeats, "% of limit" against the best limit."""
    best = best_limits(limits)
    rows = group_by((c for c in cells if c["workload"] != "empty"), lambda c: (c["runner"], c["workload"]))
    out = []
    for (runner, workload), runs in rows.items():
        rates = [r["jobs_per_s"] for r in runs if not math.isnan(r.get("jobs_per_s", math.nan))]
        pct = []
        for r in runs:
            limit = best.get(workload)
            if limit is None:
                limit = nominal_limit(workload, r["concurrency"], available_cpus())
            if limit and not math.isnan(r.get("jobs_per_s", math.nan)):
                pct.append(100.0 * r["jobs_per_s"] / limit)
        problems = [f"r{r['repeat']}: {', '.join(r['problems'])}" for r in runs if r["problems"]]
        out.append(
            {
                "runner": runner,
                "label": runs[0]["label"],
                "workload": workload,
                "count": runs[0]["count"],
                "concurrency_arg": runs[0]["concurrency_arg"],
                "concurrency": runs[0]["concurrency"],
                "runs": len(runs),
                "runs_ok": sum(1 for r in runs if not r["problems"]),
                "jobs_per_s_median": med(rates),
                "jobs_per_s_min": min(rates) if rates else math.nan,
                "jobs_per_s_max": max(rates) if rates else math.nan,
                "latency_p50_s": med([r.get("latency_p50_s") for r in runs]),
                "latency_p95_s": med([r.get("latency_p95_s") for r in runs]),
                "peak_pss_mib": med([r["peak_pss_mib"] for r in runs]),
                "peak_rss_mib": med([r["peak_rss_mib"] for r in runs]),
                "cpu_s_per_1k_jobs": med([r["cpu_s_per_1k_jobs"] for r in runs]),
                "redis_cmds_per_job": med([r["redis_cmds_per_job"] for r in runs]),
                "pct_of_limit": med(pct),
                "loadavg_min": min(r["loadavg"][0] for r in runs),
                "loadavg_max": max(r["loadavg"][0] for r in runs),
                "others_cpu_pct_max": max((r["others_cpu_pct"] for r in runs), default=math.nan),
                "problems": problems,
            }
        )
    return out


def table(rows: list[dict[str, Any]], order: list[str], workloads: list[str]) -> str:
    head = (
        "| worker | workload | jobs | concurrency | jobs/s median (min-max) | p50 latency s | p95 latency s "
        "| peak PSS MiB | peak RSS MiB | CPU s / 1k jobs | Redis cmds / job | % of limit | load avg at start "
        "| others' CPU % (max) | runs ok |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    key = {r: i for i, r in enumerate(order)}
    wkey = {w: i for i, w in enumerate(workloads)}
    for row in sorted(rows, key=lambda r: (wkey.get(r["workload"], 99), key.get(r["runner"], 99))):
        conc = row["concurrency_arg"]
        conc = f"{conc} → {row['concurrency']}" if conc == "auto" else str(row["concurrency"])
        rate = (
            f"{fmt_rate(row['jobs_per_s_median'])} ({fmt_rate(row['jobs_per_s_min'])}-"
            f"{fmt_rate(row['jobs_per_s_max'])})"
        )
        ok = f"{row['runs_ok']}/{row['runs']}"
        if row["problems"]:
            rate = f"⚠ {rate}"
            ok = f"⚠ {ok}"
        load = f"{row['loadavg_min']:.2f}-{row['loadavg_max']:.2f}"
        others = fmt(row["others_cpu_pct_max"], 0)
        lines.append(
            f"| {row['label']} | {row['workload']} | {row['count']} | {conc} | {rate} "
            f"| {fmt(row['latency_p50_s'], 3)} | {fmt(row['latency_p95_s'], 3)} "
            f"| {fmt(row['peak_pss_mib'])} | {fmt(row['peak_rss_mib'])} | {fmt(row['cpu_s_per_1k_jobs'], 2)} "
            f"| {fmt(row['redis_cmds_per_job'], 1)} | {fmt(row['pct_of_limit'], 0)}% | {load} | {others} | {ok} |"
        )
    return "\n".join(lines)


def startup_table(cells: list[dict[str, Any]], order: list[str]) -> str:
    by: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        if c["workload"] == "empty":
            by.setdefault(c["runner"], []).append(c)
    if not by:
        return ""
    lines = [
        "| worker | wall s (start → exit) | CPU s | peak PSS MiB | peak RSS MiB | processes | Redis cmds |",
        "|---|---|---|---|---|---|---|",
    ]
    for runner in sorted(by, key=lambda r: order.index(r) if r in order else 99):
        runs = by[runner]
        lines.append(
            f"| {runs[0]['label']} | {fmt(med([r['wall_s'] for r in runs]), 2)} "
            f"| {fmt(med([r['cpu_s'] for r in runs]), 2)} | {fmt(med([r['peak_pss_mib'] for r in runs]))} "
            f"| {fmt(med([r['peak_rss_mib'] for r in runs]))} | {max(r['peak_processes'] for r in runs)} "
            f"| {fmt(med([r['redis_cmds_total'] for r in runs]), 0)} |"
        )
    return "\n".join(lines)


def limits_table(limits: dict[int, dict[str, float]]) -> str:
    names = sorted({k for v in limits.values() for k in v})
    if not names:
        return ""
    lines = ["| repeat | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for rep in sorted(limits):
        lines.append(f"| {rep} | " + " | ".join(fmt_rate(limits[rep].get(n, math.nan)) for n in names) + " |")
    best = best_limits(limits)
    lines.append("| **used (best)** | " + " | ".join(f"**{fmt_rate(best.get(n, math.nan))}**" for n in names) + " |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> str:
    """Issue 7's targets, checked against this run's medians (only where the rows exist)."""
    get = {(r["runner"], r["workload"]): r for r in rows}
    out = []

    def line(name: str, value: str, ok: bool | None) -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "**NOT met**")
        out.append(f"| {name} | {value} | {verdict} |")

    t, pool = get.get(("thread", "noop")), get.get(("rq-pool", "noop"))
    if t:
        v = t["jobs_per_s_median"]
        line("noop, thread: ≥ 5,000 jobs/s", fmt_rate(v), v >= 5000)
        if pool:
            ratio = v / pool["jobs_per_s_median"]
            line("noop, thread: ≥ 8x rq worker-pool -n 2", f"{ratio:.1f}x", ratio >= 8)
    p = get.get(("process", "cpu"))
    if p:
        line(
            f"cpu, process ({p['concurrency']} children): ≥ 95% of plain loop",
            f"{fmt(p['pct_of_limit'], 0)}%",
            p["pct_of_limit"] >= 95,
        )
    t = get.get(("thread", "io"))
    if t:
        line(
            f"io, thread ({t['concurrency']} threads): ≥ 90% of concurrency / latency",
            f"{fmt(t['pct_of_limit'], 0)}%",
            t["pct_of_limit"] >= 90 if t["concurrency"] == 64 else None,
        )
    for strategy, cap in (("thread", 35.0), ("process", 50.0)):
        mems = [(r["peak_pss_mib"], w) for (s, w), r in get.items() if s == strategy and w in ("noop", "cpu", "io")]
        if mems:
            worst, w = max(mems)
            line(
                f"memory, {strategy}: ≤ {cap:g} MiB PSS (max over noop/cpu/io)", f"{worst:.1f} MiB ({w})", worst <= cap
            )
    simple = get.get(("rq-simple", "noop"))
    if simple:
        for s in STRATEGIES:
            r = get.get((s, "noop"))
            if r:
                line(
                    f"Redis cmds/job, {s} < rq SimpleWorker (noop)",
                    f"{r['redis_cmds_per_job']:.1f} vs {simple['redis_cmds_per_job']:.1f}",
                    r["redis_cmds_per_job"] < simple["redis_cmds_per_job"],
                )
    if not out:
        return ""
    return "\n".join(["| target (issue 7) | measured | verdict |", "|---|---|---|", *out])


def render(
    meta: dict[str, Any],
    rows: list[dict[str, Any]],
    cells: list[dict[str, Any]],
    limits: dict[int, dict[str, float]],
    order: list[str],
    workloads: list[str],
    counts: dict[str, int],
    wls: dict[str, Workload],
) -> str:
    parts = [
        f"# poolq benchmark — {meta['started'][:19]}Z",
        "",
        f"{meta['cpus_available']} CPUs available · Python {meta['python']} · rq {meta['rq']} · "
        f"redis-server {meta.get('redis_server', '?')} · poolq {meta['git']} · {meta['repeats']} repeat(s), "
        f"median (min-max) · {meta.get('elapsed_s', 0):.0f} s",
        "",
        *(["**Interrupted: partial results.**", ""] if meta.get("interrupted") else []),
        "Jobs: " + "; ".join(f"{w} x {counts[w]} = `{wls[w].describe}`" for w in workloads) + ".",
        "",
        table(rows, order, workloads),
        "",
        "Latency is end-to-end (ended_at - enqueued_at) with every job enqueued before the worker starts, "
        "so it includes the time spent waiting in the queue. ⚠ marks a cell where a run failed jobs, timed "
        "out, exited non-zero or left processes behind (see below and results.json).",
    ]
    problems = [f"- {r['label']} / {r['workload']}: {'; '.join(r['problems'])}" for r in rows if r["problems"]]
    examples = [
        f"  - {c['label']} / {c['workload']} r{c['repeat']}: {e}"
        for c in cells
        for e in c.get("failure_examples", [])[:1]
    ]
    if problems:
        parts += ["", "**Problems**", "", *problems, *examples[:10]]
    lt = limits_table(limits)
    if lt:
        parts += [
            "",
            "Limits measured in this run (noop: LPUSH+RPOP pairs/s of one client; cpu: jobs/s of a "
            f"plain {meta['cpus_available']}-process loop, no queue); % of limit uses the best of the "
            "repeats. io/alloc/mixed limits are nominal: concurrency / job duration (mixed: also capped "
            "by CPUs x 1000 / cpu_ms).",
            "",
            lt,
        ]
    st = startup_table(cells, order)
    if st:
        parts += [
            "",
            "Fixed cost of one worker run on an empty queue (start, register, find nothing, exit; "
            "median of the repeats); included in every cell's CPU and wall time, not in jobs/s:",
            "",
            st,
        ]
    tg = targets(rows)
    if tg:
        parts += ["", tg]
    return "\n".join(parts) + "\n"
