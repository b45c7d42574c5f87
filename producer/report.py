"""``report.md`` of an experiment: the table, start-up, timeouts, and the articles' claims checked.

It reads results only (:class:`producer.results.Results`, as loaded from ``results.json``), so
``python -m producer report`` redraws it from any results directory. The claims are
:mod:`producer.claims`; the look-ups they share with the tables are :mod:`producer.view`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from producer import claims
from producer.fmt import f, ms, rate
from producer.results import Results, SummaryRow
from producer.stats import group_by, median_of
from producer.view import View

CHARTS = (("throughput.png", "Throughput"), ("latency_cdf.png", "Latency CDFs"), ("memory.png", "Memory"),
          ("cpu_scaling.png", "Throughput vs CPU limit"), ("timeouts.png", "Timeouts"))  # fmt: skip


def _ok(r: SummaryRow) -> str:
    return f"{r.runs_ok}/{r.runs}" + (" ⚠" if r.problems else "")


def results_table(v: View) -> str:
    docker = any(r.cpu_limit is not None for r in v.summary)
    head = (
        "| workload | strategy | "
        + ("CPU limit | " if docker else "")
        + "slots | jobs/s median (min-max) | % of limit | queue wait p50 / p95 / p99 ms "
        "| run p50 / p95 ms | end-to-end p50 / p95 / p99 ms | peak PSS MiB (idle) | peak USS / RSS MiB "
        "| CPU s / 1k jobs | cores busy | other load (cores) | runs ok |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in v.summary:
        m = r.figures
        limit = f"{r.cpu_limit or 0:g} | " if docker else ""
        lines.append(
            f"| {r.workload} | {r.strategy} | {limit}{r.concurrency} "
            f"| {rate(m.throughput_jobs_s)} ({rate(r.throughput_min)}-{rate(r.throughput_max)}) "
            f"| {f(m.pct_of_limit, 0)}% "
            f"| {ms(m.wait_p50_s)} / {ms(m.wait_p95_s)} / {ms(m.wait_p99_s)} "
            f"| {ms(m.run_p50_s)} / {ms(m.run_p95_s)} "
            f"| {ms(m.e2e_p50_s)} / {ms(m.e2e_p95_s)} / {ms(m.e2e_p99_s)} "
            f"| {f(m.peak_pss_mib)} ({f(m.idle_pss_mib)}) | {f(m.peak_uss_mib)} / {f(m.peak_rss_mib)} "
            f"| {f(m.cpu_s_per_1k_jobs, 2)} | {f(m.cores_busy, 2)} | {f(m.other_cores, 2)} | {_ok(r)} |"
        )
    return "\n".join(lines)


def _values(v: Sequence[int | float | None]) -> str:
    vals = [str(int(x)) if isinstance(x, int | float) else "?" for x in v]
    return "/".join(vals) if vals else "—"


def cpu_limit_section(v: View) -> list[str]:
    """Container experiments: throughput against the CPU limit, per strategy and workload."""
    rows = [r for r in v.summary if r.container is not None]
    if not rows:
        return []
    dk = v.meta.docker
    out = [
        f"Each cell ran in a fresh worker container (`{dk.image if dk else '?'}`) limited to the CPU limit "
        f"(`nano_cpus`, a CFS quota) and {f(dk.memory_limit_mib if dk else None, 0)} MiB (`mem_limit`, no swap). "
        "Detected CPUs and pool size are the worker's own (`poolq_available_cpus`, `poolq_pool_size` from its "
        "/metrics): they must follow the quota. Jobs/s per CPU = jobs/s / CPU limit; scaling = jobs/s / jobs/s at "
        "the smallest limit of the same strategy and workload, against the ratio of the limits (linear). Worker PSS "
        "is the worker's process tree (its metrics); container memory is the cgroup's working set (usage minus "
        "inactive file cache, as `docker stats`), peak of the Docker API's stats under load, against the limit. "
        "Container CPU includes the image's health check; throttled = time the CFS quota held the container back. "
        "In the results table above, for these cells, PSS/RSS are the worker's own metrics (it samples its tree "
        "every 2 s; the producer scrapes every 0.5 s), CPU is the container's and “% of limit” uses the cell's CPU "
        "limit.",
        "",
        "| workload | strategy | CPU limit | detected CPUs | pool size | jobs/s median (min-max) | jobs/s per CPU "
        "| scaling (linear) | worker PSS peak MiB (idle) | container memory peak / limit MiB "
        "| container CPU s / 1k jobs | cores busy | throttled s | healthy after s | runs ok |",
        "|" + "---|" * 15,
    ]
    base: dict[tuple[str, str], SummaryRow] = {}
    for r in sorted(rows, key=lambda r: float(r.cpu_limit or 0)):
        base.setdefault((r.workload, r.strategy), r)
    for r in rows:
        c, m = r.container, r.figures
        assert c is not None
        b = base[(r.workload, r.strategy)]
        scaling = "—"
        b_thr = b.figures.throughput_jobs_s
        if m.throughput_jobs_s and b_thr and b is not r:
            scaling = f"{m.throughput_jobs_s / b_thr:.2f}x ({c.cpu_limit / float(b.cpu_limit or 1):.2g}x)"
        elif b is r:
            scaling = "1x"
        cf = c.figures
        out.append(
            f"| {r.workload} | {r.strategy} | {c.cpu_limit:g} | {_values(c.detected_cpus)} "
            f"| {_values(c.pool_sizes)} "
            f"| {rate(m.throughput_jobs_s)} ({rate(r.throughput_min)}-{rate(r.throughput_max)}) "
            f"| {rate(cf.jobs_per_s_per_cpu)} | {scaling} "
            f"| {f(m.peak_pss_mib)} ({f(m.idle_pss_mib)}) "
            f"| {f(cf.container_mem_peak_mib)} / {f(cf.container_mem_limit_mib, 0)} "
            f"| {f(m.cpu_s_per_1k_jobs, 2)} | {f(m.cores_busy, 2)} "
            f"| {f(cf.container_throttled_s, 2)} | {f(cf.healthy_after_s, 1)} | {_ok(r)} |"
        )
    mismatched = [
        f"{r.strategy}@{r.container.cpu_limit:g}: detected {_values(r.container.detected_cpus)}"
        for r in rows
        if r.container is not None
        and r.container.detected_cpus
        and any(c != math.ceil(r.container.cpu_limit) for c in r.container.detected_cpus)
    ]
    if mismatched:
        out += ["", "**The worker did not detect the quota** (expected ceil(CPU limit)): " + "; ".join(mismatched)]
    return out


def limits_note(v: View) -> str:
    parts = [
        f"{w}: {c.cpu_s * 1000:.1f} ms CPU, {c.wall_s * 1000:.1f} ms wall per job alone"
        for w, c in v.r.calibration.items()
    ]
    return (
        "“% of limit” is throughput / the most the machine or the configuration allows: CPU work (cpu) "
        f"→ {v.cpus} CPUs / single-core CPU time per job; waiting work → slots / wall time per job, capped by "
        "CPUs / CPU time per job. Per job, measured alone in the producer process: " + "; ".join(parts) + "."
    )


def startup_section(v: View) -> list[str]:
    out: list[str] = []
    groups = v.startup_groups()
    if groups:
        out += [
            "A fresh worker with N probe jobs (`io(seconds=0.5)`) queued before it starts: seconds from "
            "spawning `python -m worker` until its first job started and until all N slots were busy "
            "(median over repeats); idle PSS/RSS of the tree with the whole pool up.",
            "",
            "| strategy | slots | first job started after s | all slots busy after s | idle USS MiB | idle PSS MiB "
            "| idle RSS MiB | processes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (s, n), rs in groups.items():
            out.append(
                f"| {s} | {n} | {f(median_of(r.first_job_started_s for r in rs), 3)} "
                f"| {f(median_of(r.all_slots_busy_s for r in rs), 3)} | {f(median_of(r.idle_uss_mib for r in rs))} "
                f"| {f(median_of(r.idle_pss_mib for r in rs))} "
                f"| {f(median_of(r.idle_rss_mib for r in rs))} | {max(r.processes for r in rs)} |"
            )
    pool = v.r.pool_start
    if pool:
        kinds = list(dict.fromkeys(p.kind for p in pool))
        by_n = group_by(pool, lambda p: int(p.n))
        out += [
            "",
            "Direct measurement, in a fresh interpreter each time (median of 3): milliseconds from creating N "
            "threads / processes until all N have run their first line of code (`python -m producer.startup`; "
            "forkserver preloads `worker.jobs` like the worker's pool).",
            "",
            "| N | " + " | ".join(kinds) + " |",
            "|---|" + "---|" * len(kinds),
        ]
        for n in sorted(by_n):
            cells = []
            for k in kinds:
                p = next((p for p in by_n[n] if p.kind == k), None)
                cells.append("—" if p is None else f(p.ready_s * 1000, 2))
            out.append(f"| {n} | " + " | ".join(cells) + " |")
    return out


def timeouts_section(v: View) -> list[str]:
    rows = v.r.timeouts
    if not rows:
        return []
    out = [
        f"One-slot worker; a job of {rows[0].job} with `job_timeout={rows[0].job_timeout_s}`, then a noop "
        "job. Seconds after the overdue job started: when RQ recorded it as failed, when the slot started the "
        "next job, and until when the worker tree kept burning CPU (> 0.5 core), i.e. the overdue code still ran.",
        "",
        "| strategy | status | failed after s | next job started after s | CPU burned until s | reason |",
        "|---|---|---|---|---|---|",
    ]
    for t in rows:
        out.append(
            f"| {t.strategy} | {t.status} | {f(t.failed_after_s, 2)} | {f(t.next_job_started_after_s, 2)} "
            f"| {f(t.cpu_burned_until_s, 2)} | {str(t.reason or '')[:110]} |"
        )
    return out


def header(v: View, limits: list[float]) -> list[str]:
    m, dk = v.meta, v.meta.docker
    lines = [
        f"# poolq load experiment — {str(m.started)[:16].replace('T', ' ')} UTC",
        "",
        f"{m.mode} · {m.available_cpus} CPUs available ({m.cpu_count} on the host) · Python "
        f"{m.python} · rq {m.rq} · redis-server {m.redis_server} · poolq {m.poolq} · "
        f"{m.repeats} repeat(s), medians · {f(m.elapsed_s, 0)} s in all"
        + (" · **interrupted**" if m.interrupted else ""),
    ]
    if dk:
        lines += [
            "",
            f"Worker containers: image `{dk.image}`, CPU limits {', '.join(f'{c:g}' for c in limits)}, "
            f"memory limit {f(dk.memory_limit_mib, 0)} MiB; Docker engine {dk.engine} "
            f"({dk.engine_cpus} CPUs, cgroup v{dk.cgroup_version}).",
        ]
    return [
        *lines,
        "",
        "Jobs per cell (all enqueued at once, to a worker already running and warmed up): "
        + "; ".join(f"{w} x {m.counts.get(w)} = `{m.specs.get(w)}`" for w in m.workloads)
        + ".",
    ]


def caveats(v: View) -> list[str]:
    others = [r.figures.other_cores for r in v.summary if r.figures.other_cores is not None]
    noisy = max(others) if others else 0.0
    interval = v.meta.sample_interval_s
    return [
        "## Caveats",
        "",
        f"- Other load: CPU used on the machine during a cell by anything but the worker tree, the producer and a "
        f"local redis-server (“other load” column), at most {noisy:.2f} cores here"
        + (
            " — **other programs competed for the CPUs during some cells; their numbers are pessimistic**."
            if noisy > 0.25
            else "."
        ),
        "- One machine, one run of the matrix: the numbers are this machine's. Cells run one at a time, but the "
        "producer (enqueue, polling, sampling) shares the CPUs with the worker.",
        "- PSS divides every shared page among all the processes that map it, machine-wide: the python binary's "
        "and shared libraries' pages are shared with every other Python process running at the time, so PSS moves "
        "with what else runs. USS (pages no other process maps) does not; per-slot costs above use USS.",
        "- Sampling PSS reads `/proc/<pid>/smaps_rollup` of every process of the tree every "
        f"{interval} s; it costs a little CPU, and a peak shorter than the interval can be missed.",
        "- Queue wait here is mostly the burst itself queueing behind the pool (all jobs arrive at once); for waits "
        "under a given arrival rate use `python -m producer plan` and check it with `python -m producer validate`.",
        "",
    ]


def render(results: Results, out: Path | None = None) -> str:
    """The whole report; ``out``: link only the charts that were drawn there."""
    v = View(results)
    limits = [float(c) for c in (v.meta.docker.cpu_limits if v.meta.docker else [])]
    claims_view = View(results, max(limits)) if limits else v  # container runs: the largest limit's cells
    lines = [
        *header(v, limits),
        "",
        "## Results",
        "",
        results_table(v),
        "",
        "Queue wait = started_at - enqueued_at, run = ended_at - started_at, end-to-end = ended_at - enqueued_at, "
        "all from RQ's job hashes; throughput = finished jobs / (last ended_at - first enqueued_at). Memory: PSS and "
        "RSS summed over the worker's process tree (worker, forkserver, pool children), peak of samples every "
        f"{v.meta.sample_interval_s} s under load; idle = before the burst. CPU: user + system seconds of the "
        "tree during the burst. " + limits_note(v),
    ]
    problems = [f"- {r.strategy}x{r.concurrency} / {r.workload}: {'; '.join(r.problems)}"
                for r in v.summary if r.problems]  # fmt: skip
    if problems:
        lines += ["", "**Problems** (⚠ above):", "", *problems]
    for title, section in (
        ("Throughput vs CPU limit", cpu_limit_section(v)),
        ("Start-up", startup_section(v)),
        ("Timeouts: can an overdue job be stopped?", timeouts_section(v)),
    ):
        if section:
            lines += ["", f"## {title}", "", *section]
    lines += [
        "",
        "## The articles' claims, checked against these numbers",
        "",
        "Sources: the four articles in `seeds/`: "
        + "; ".join(f"{k} = {s}" for k, s in claims.SOURCES.items())
        + "."
        + (f" Container experiment: the cells at the largest CPU limit ({max(limits):g})." if limits else ""),
        "",
        *claims.render(claims_view),
        "Not measured here: isolation (“a bug or memory leak in one process won't affect other processes”, A) "
        "is covered by the worker's crash tests, not by this experiment; race conditions are a property of the "
        "code, not of the pool.",
    ]
    present = [(n, t) for n, t in CHARTS if out is None or (out / n).exists()]
    if present:
        lines += ["", "## Charts", ""]
        for name, title in present:
            lines += [f"![{title}]({name})", ""]
    lines += ["", *caveats(v)]
    return "\n".join(lines)
