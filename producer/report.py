"""``report.md`` of an experiment: the table, start-up, timeouts, and the articles' claims checked.

The claims come from the four articles in ``../shared/seeds/`` (quoted below with their
titles). Each verdict is computed from this run's numbers with the thresholds stated next to
it, so a different machine may well get a different verdict; that is the point.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

SOURCES = {
    "A": "“Multiprocessing vs Threading in Python: Pros & Cons”",
    "B": "“Threading vs Multiprocessing - Advanced Python 15”",
    "C": "“Multithreading vs Multiprocessing in Python” (N. Chauhan)",
    "D": "“Python threading and multiprocessing guide” (concurrency vs parallelism)",
}


def f(x: Any, digits: int = 1, unit: str = "") -> str:
    if x is None:
        return "—"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "—"
    return f"{v:,.{digits}f}{unit}"


def rate(x: Any) -> str:
    if x is None:
        return "—"
    v = float(x)
    return f(v, 0) if v >= 100 else f(v, 1)


def ms(x: Any) -> str:
    if x is None:
        return "—"
    v = float(x) * 1000
    return f(v, 0) if v >= 100 else f(v, 1)


class Data:
    """Look-ups over a results.json."""

    def __init__(self, results: dict[str, Any], cpu_limit: float | None = None) -> None:
        """``cpu_limit`` (container experiments): only the rows measured under that CPU limit, and
        the CPUs the worker detected there — so the claims compare like with like."""
        self.r = results
        self.meta = results.get("meta", {})
        self.summary: list[dict[str, Any]] = results.get("summary") or []
        self.cpus = int(self.meta.get("available_cpus") or 1)
        if cpu_limit is not None:
            self.summary = [r for r in self.summary if r.get("cpu_limit") == cpu_limit]
            detected = [c for r in self.summary for c in (r.get("detected_cpus") or []) if c]
            self.cpus = int(max(detected)) if detected else math.ceil(cpu_limit)

    def rows(self, strategy: str, workload: str) -> list[dict[str, Any]]:
        return [r for r in self.summary if r["strategy"] == strategy and r["workload"] == workload]

    def primary(self, strategy: str, workload: str) -> dict[str, Any] | None:
        """The row of the strategy's first (default) size for this workload."""
        rows = self.rows(strategy, workload)
        if not rows:
            return None
        sizes = (self.meta.get("concurrency") or {}).get(f"{strategy}:{workload}") or []
        for arg in sizes:
            for r in rows:
                if str(r.get("concurrency_arg")) == str(arg):
                    return r
        return rows[0]

    def thr(self, strategy: str, workload: str) -> float | None:
        row = self.primary(strategy, workload)
        return None if row is None or row.get("throughput_jobs_s") is None else float(row["throughput_jobs_s"])


def results_table(d: Data) -> str:
    docker = any(r.get("cpu_limit") is not None for r in d.summary)
    head = (
        "| workload | strategy | "
        + ("CPU limit | " if docker else "")
        + "slots | jobs/s median (min-max) | % of limit | queue wait p50 / p95 / p99 ms "
        "| run p50 / p95 ms | end-to-end p50 / p95 / p99 ms | peak PSS MiB (idle) | peak USS / RSS MiB "
        "| CPU s / 1k jobs | cores busy | other load (cores) | runs ok |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in d.summary:
        ok = f"{r['runs_ok']}/{r['runs']}" + (" ⚠" if r.get("problems") else "")
        limit = f"{r.get('cpu_limit', 0):g} | " if docker else ""
        lines.append(
            f"| {r['workload']} | {r['strategy']} | {limit}{r['concurrency']} "
            f"| {rate(r['throughput_jobs_s'])} ({rate(r['throughput_min'])}-{rate(r['throughput_max'])}) "
            f"| {f(r['pct_of_limit'], 0)}% "
            f"| {ms(r['wait_p50_s'])} / {ms(r['wait_p95_s'])} / {ms(r['wait_p99_s'])} "
            f"| {ms(r['run_p50_s'])} / {ms(r['run_p95_s'])} "
            f"| {ms(r['e2e_p50_s'])} / {ms(r['e2e_p95_s'])} / {ms(r['e2e_p99_s'])} "
            f"| {f(r['peak_pss_mib'])} ({f(r['idle_pss_mib'])}) | {f(r.get('peak_uss_mib'))} / {f(r['peak_rss_mib'])} "
            f"| {f(r['cpu_s_per_1k_jobs'], 2)} | {f(r['cores_busy'], 2)} | {f(r.get('other_cores'), 2)} | {ok} |"
        )
    return "\n".join(lines)


def _values(v: Any) -> str:
    vals = [str(int(x)) if isinstance(x, int | float) else "?" for x in (v or [])]
    return "/".join(vals) if vals else "—"


def cpu_limit_section(d: Data) -> list[str]:
    """Container experiments: throughput against the CPU limit, per strategy and workload."""
    rows = [r for r in d.summary if r.get("cpu_limit") is not None]
    if not rows:
        return []
    dk = d.meta.get("docker") or {}
    out = [
        f"Each cell ran in a fresh worker container (`{dk.get('image', '?')}`) limited to the CPU limit "
        f"(`nano_cpus`, a CFS quota) and {f(dk.get('memory_limit_mib'), 0)} MiB (`mem_limit`, no swap). "
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
    base: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: float(r["cpu_limit"])):
        base.setdefault((r["workload"], r["strategy"]), r)
    for r in rows:
        b = base[(r["workload"], r["strategy"])]
        scaling = "—"
        if r.get("throughput_jobs_s") and b.get("throughput_jobs_s") and b is not r:
            ratio = float(r["throughput_jobs_s"]) / float(b["throughput_jobs_s"])
            scaling = f"{ratio:.2f}x ({float(r['cpu_limit']) / float(b['cpu_limit']):.2g}x)"
        elif b is r:
            scaling = "1x"
        ok = f"{r['runs_ok']}/{r['runs']}" + (" ⚠" if r.get("problems") else "")
        out.append(
            f"| {r['workload']} | {r['strategy']} | {float(r['cpu_limit']):g} | {_values(r.get('detected_cpus'))} "
            f"| {_values(r.get('pool_sizes'))} "
            f"| {rate(r['throughput_jobs_s'])} ({rate(r['throughput_min'])}-{rate(r['throughput_max'])}) "
            f"| {rate(r.get('jobs_per_s_per_cpu'))} | {scaling} "
            f"| {f(r.get('peak_pss_mib'))} ({f(r.get('idle_pss_mib'))}) "
            f"| {f(r.get('container_mem_peak_mib'))} / {f(r.get('container_mem_limit_mib'), 0)} "
            f"| {f(r.get('cpu_s_per_1k_jobs'), 2)} | {f(r.get('cores_busy'), 2)} "
            f"| {f(r.get('container_throttled_s'), 2)} | {f(r.get('healthy_after_s'), 1)} | {ok} |"
        )
    mismatched = [
        f"{r['strategy']}@{float(r['cpu_limit']):g}: detected {_values(r.get('detected_cpus'))}"
        for r in rows
        if r.get("detected_cpus") and any(c != math.ceil(float(r["cpu_limit"])) for c in r["detected_cpus"])
    ]
    if mismatched:
        out += ["", "**The worker did not detect the quota** (expected ceil(CPU limit)): " + "; ".join(mismatched)]
    return out


def limits_note(d: Data) -> str:
    parts = []
    for w, c in (d.r.get("calibration") or {}).items():
        parts.append(f"{w}: {c['cpu_s'] * 1000:.1f} ms CPU, {c['wall_s'] * 1000:.1f} ms wall per job alone")
    return (
        "“% of limit” is throughput / the most the machine or the configuration allows: CPU work (cpu) "
        f"→ {d.cpus} CPUs / single-core CPU time per job; waiting work → slots / wall time per job, capped by "
        "CPUs / CPU time per job. Per job, measured alone in the producer process: " + "; ".join(parts) + "."
    )


def startup_section(d: Data) -> list[str]:
    rows = d.r.get("startup") or []
    out: list[str] = []
    if rows:
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault((r["strategy"], int(r["concurrency"])), []).append(r)
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
                f"| {s} | {n} | {f(_med([r['first_job_started_s'] for r in rs]), 3)} "
                f"| {f(_med([r['all_slots_busy_s'] for r in rs]), 3)} | {f(_med([r.get('idle_uss_mib') for r in rs]))} "
                f"| {f(_med([r['idle_pss_mib'] for r in rs]))} "
                f"| {f(_med([r['idle_rss_mib'] for r in rs]))} | {max(r['processes'] for r in rs)} |"
            )
    pool = d.r.get("pool_start") or []
    if pool:
        kinds = list(dict.fromkeys(p["kind"] for p in pool))
        sizes = sorted({int(p["n"]) for p in pool})
        out += [
            "",
            "Direct measurement, in a fresh interpreter each time (median of 3): milliseconds from creating N "
            "threads / processes until all N have run their first line of code (`python -m producer.startup`; "
            "forkserver preloads `worker.jobs` like the worker's pool).",
            "",
            "| N | " + " | ".join(kinds) + " |",
            "|---|" + "---|" * len(kinds),
        ]
        for n in sizes:
            cells = []
            for k in kinds:
                p = next((p for p in pool if p["kind"] == k and int(p["n"]) == n), None)
                cells.append("—" if p is None else f(p["ready_s"] * 1000, 2))
            out.append(f"| {n} | " + " | ".join(cells) + " |")
    return out


def _med(values: list[Any]) -> float | None:
    nums = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if not nums:
        return None
    mid = len(nums) // 2
    return nums[mid] if len(nums) % 2 else (nums[mid - 1] + nums[mid]) / 2


def timeouts_section(d: Data) -> list[str]:
    rows = d.r.get("timeouts") or []
    if not rows:
        return []
    out = [
        f"One-slot worker; a job of {rows[0]['job']} with `job_timeout={rows[0]['job_timeout_s']}`, then a noop "
        "job. Seconds after the overdue job started: when RQ recorded it as failed, when the slot started the "
        "next job, and until when the worker tree kept burning CPU (> 0.5 core), i.e. the overdue code still ran.",
        "",
        "| strategy | status | failed after s | next job started after s | CPU burned until s | reason |",
        "|---|---|---|---|---|---|",
    ]
    for t in rows:
        out.append(
            f"| {t['strategy']} | {t['status']} | {f(t['failed_after_s'], 2)} | {f(t['next_job_started_after_s'], 2)} "
            f"| {f(t['cpu_burned_until_s'], 2)} | {str(t.get('reason', ''))[:110]} |"
        )
    return out


# ---------------------------------------------------------------------------------------------
# claims


def _claim(n: int, title: str, quotes: list[tuple[str, str]], measured: list[str], verdict: str) -> list[str]:
    out = [f"### {n}. {title}", ""]
    for src, q in quotes:
        out.append(f"> “{q}” — {SOURCES[src]}")
        out.append(">")
    if out[-1] == ">":
        out.pop()
    out += ["", *measured, "", f"**Verdict: {verdict}**", ""]
    return out


def claims(d: Data) -> list[str]:
    out: list[str] = []
    measured: list[str]
    # 1. threads on CPU work
    t, i, p = d.primary("thread", "cpu"), d.primary("inline", "cpu"), d.primary("process", "cpu")
    quotes = [
        ("B", "Multithreading has no effect for CPU-bound tasks due to the GIL"),
        ("C", "for CPU-bound tasks (tasks that require heavy computation), multithreading does not provide true "
              "parallelism"),
        ("A", "The GIL can limit the performance of CPU-bound tasks in multi-threaded programs."),
    ]  # fmt: skip
    if t and i and t.get("throughput_jobs_s") and i.get("throughput_jobs_s"):
        ratio = t["throughput_jobs_s"] / i["throughput_jobs_s"]
        measured = [
            f"cpu jobs: {t['concurrency']} threads {rate(t['throughput_jobs_s'])} jobs/s vs one job at a time "
            f"(inline) {rate(i['throughput_jobs_s'])} jobs/s: **{ratio:.2f}x** with {t['concurrency']}x the slots, on "
            f"{d.cpus} CPUs. The thread worker kept {f(t['cores_busy'], 2)} cores busy "
            f"({f(t['pct_of_limit'], 0)}% of the {d.cpus}-CPU limit); run time per job grew from "
            f"{ms(i['run_p50_s'])} ms to {ms(t['run_p50_s'])} ms (p50) as {t['concurrency']} jobs shared one GIL.",
        ]
        if ratio > 1.05:
            measured.append(
                f"What threads did gain ({ratio:.2f}x) is overlap of the queue's own waiting (Redis round trips "
                "before and after each job, during which a one-job-at-a-time worker leaves the core idle) with "
                "other jobs' computation — not parallel Python."
            )
        if ratio <= 1.3:
            verdict = f"agrees — threads gave no parallel speed-up on CPU-bound Python code ({ratio:.2f}x)."
        elif ratio < 0.8 * min(d.cpus, t["concurrency"]):
            verdict = f"partly — threads gained {ratio:.2f}x, less than the {d.cpus} CPUs would allow."
        else:
            verdict = f"disagrees — threads scaled ({ratio:.2f}x); is this a free-threaded Python?"
    else:
        measured, verdict = ["Needs the thread and inline strategies on the cpu workload."], "not measured"
    out += _claim(1, "Threads do not speed up CPU-bound work (the GIL)", quotes, measured, verdict)

    # 2. processes scale CPU work
    quotes = [
        ("A", "This makes multiprocessing ideal for CPU-bound tasks, as it takes full advantage of multiple CPU "
              "cores."),
        ("B", "Takes advantage of multiple CPUs and cores"),
        ("D", "Can utilize multiple CPU cores effectively for CPU-bound tasks."),
    ]  # fmt: skip
    if p and i and p.get("throughput_jobs_s") and i.get("throughput_jobs_s"):
        ratio = p["throughput_jobs_s"] / i["throughput_jobs_s"]
        ideal = min(d.cpus, int(p["concurrency"]))
        measured = [
            f"cpu jobs: {p['concurrency']} processes {rate(p['throughput_jobs_s'])} jobs/s vs inline "
            f"{rate(i['throughput_jobs_s'])} jobs/s: **{ratio:.2f}x** (ideal {ideal}x on {d.cpus} CPUs); "
            f"{f(p['pct_of_limit'], 0)}% of the machine's limit, {f(p['cores_busy'], 2)} cores busy.",
        ]
        if d.cpus < 2:
            verdict = "not measurable — this machine has one CPU, so nothing can scale."
        elif ratio >= 0.8 * ideal:
            verdict = f"agrees — {ratio:.2f}x of an ideal {ideal}x."
        elif ratio > 1.2:
            verdict = f"partly — {ratio:.2f}x, short of the ideal {ideal}x."
        else:
            verdict = f"disagrees — {ratio:.2f}x."
    else:
        measured, verdict = ["Needs the process and inline strategies on the cpu workload."], "not measured"
    out += _claim(2, "Processes scale CPU-bound work across cores", quotes, measured, verdict)

    # 3. threads suit I/O
    t, i, p = d.primary("thread", "io"), d.primary("inline", "io"), d.primary("process", "io")
    quotes = [
        ("A", "Threading is more suited for I/O-bound tasks, where waiting for I/O operations to complete is the "
              "main bottleneck."),
        ("B", "Great for I/O-bound tasks"),
        ("C", "for I/O-bound tasks, threads are still highly effective because they release the GIL while waiting "
              "for external operations."),
    ]  # fmt: skip
    if t and i and t.get("throughput_jobs_s") and i.get("throughput_jobs_s"):
        ratio = t["throughput_jobs_s"] / i["throughput_jobs_s"]
        measured = [
            f"io jobs: {t['concurrency']} threads {rate(t['throughput_jobs_s'])} jobs/s vs inline "
            f"{rate(i['throughput_jobs_s'])} jobs/s: **{ratio:.1f}x** with {t['concurrency']} slots, "
            f"{f(t['pct_of_limit'], 0)}% of slots/latency, using {f(t['cores_busy'], 2)} cores.",
        ]
        same = [r for r in d.rows("process", "io") if int(r["concurrency"]) == int(t["concurrency"])]
        if p:
            measured.append(
                f"The default process pool ({p['concurrency']} processes, one per CPU) made "
                f"{rate(p['throughput_jobs_s'])} jobs/s: it has fewer slots, not slower ones."
            )
        if same and same[0].get("throughput_jobs_s"):
            s = same[0]
            measured.append(
                f"With as many processes as threads ({s['concurrency']}), processes made "
                f"{rate(s['throughput_jobs_s'])} jobs/s at {f(s['peak_pss_mib'])} MiB PSS vs "
                f"{f(t['peak_pss_mib'])} MiB for the threads: for I/O the difference is the cost of a slot, "
                "not its speed."
            )
        ok = ratio >= 0.7 * int(t["concurrency"]) or (t.get("pct_of_limit") or 0) >= 70
        verdict = (
            f"agrees — {t['concurrency']} threads overlapped their waits ({ratio:.1f}x inline)."
            if ok
            else f"partly — {ratio:.1f}x inline with {t['concurrency']} threads."
        )
    else:
        measured, verdict = ["Needs the thread and inline strategies on the io workload."], "not measured"
    out += _claim(3, "Threads suit I/O-bound work", quotes, measured, verdict)

    # 4. memory
    quotes = [
        ("A", "Higher memory usage: Each process requires its own memory space, leading to higher memory "
              "consumption compared to threads."),
        ("B", "Larger memory footprint"),
        ("B", "Leightweight - low memory footprint"),
    ]  # fmt: skip
    measured = []
    verdict = "not measured"
    base = _slot_costs(d)
    if base:
        measured.append(
            "Idle memory of the whole worker tree with its pool up (start-up runs), USS (private) / PSS: "
            + ", ".join(f"{k[0]}x{k[1]}: {f(v[0])} / {f(v[1])} MiB" for k, v in sorted(base.items()))
            + "."
        )
        inl = next((v for k, v in base.items() if k[0] == "inline"), None)
        per: dict[str, tuple[int, float, float]] = {}
        for (strat, slots), (uss, pss) in base.items():
            if strat != "inline" and inl is not None and (strat not in per or slots > per[strat][0]):
                per[strat] = (slots, (uss - inl[0]) / slots, (pss - inl[1]) / slots)
        if "thread" in per and "process" in per:
            t_n, t_u, t_p = per["thread"]
            p_n, p_u, p_p = per["process"]
            measured.append(
                f"Cost of one more slot over the inline baseline: **{f(p_u)} MiB private (USS) per process** "
                f"({f(p_p)} MiB PSS, from {p_n} processes) vs **{f(t_u, 2)} MiB per thread** ({f(t_p, 2)} MiB PSS, "
                f"from {t_n} threads). A forkserver child shares the preloaded modules' pages at first, but "
                "reference counting writes to the objects and copies their pages."
            )
            verdict = (
                f"agrees — a process slot costs {f(p_u)} MiB of private memory, a thread slot {f(t_u, 2)} MiB."
                if p_u > t_u
                else "disagrees — process slots did not cost more than thread slots."
            )
    a_t, a_p = d.primary("thread", "alloc"), d.primary("process", "alloc")
    if a_t and a_p and a_t.get("peak_pss_mib") is not None and a_p.get("peak_pss_mib") is not None:

        def per_slot(r: dict[str, Any]) -> float:
            return (float(r["peak_pss_mib"]) - float(r.get("idle_pss_mib") or 0.0)) / int(r["concurrency"])

        measured.append(
            f"Under load with data (`{a_t['spec']}`): peak PSS {f(a_t['peak_pss_mib'])} MiB with "
            f"{a_t['concurrency']} threads vs {f(a_p['peak_pss_mib'])} MiB with {a_p['concurrency']} processes, i.e. "
            f"{f(per_slot(a_t))} vs {f(per_slot(a_p))} MiB above idle per slot: the jobs' own data dominates and "
            "grows with the jobs in flight, whatever runs them."
        )
    out += _claim(4, "Processes cost more memory than threads", quotes, measured or ["No start-up runs."], verdict)

    # 5. start-up
    quotes = [
        ("B", "Starting a process is slower that starting a thread"),
        ("D", "Processes are more resource-intensive to create and manage than threads."),
        ("C", "Since they share memory, threads are lightweight and quick to create."),
    ]  # fmt: skip
    measured = []
    verdict = "not measured"
    pool: list[dict[str, Any]] = d.r.get("pool_start") or []
    if pool:
        for n in sorted({int(x["n"]) for x in pool}):
            by = {x["kind"]: x["ready_s"] for x in pool if int(x["n"]) == n}
            if "thread" in by:
                others = ", ".join(f"{k} {f(v * 1000, 1)} ms" for k, v in by.items() if k != "thread")
                measured.append(f"{n} threads ready in {f(by['thread'] * 1000, 2)} ms; {n} processes: {others}.")
        th_runs = [x for x in pool if x["kind"] == "thread"]
        pr_runs = [x for x in pool if x["kind"] != "thread"]
        if th_runs and pr_runs:
            slower = all(
                x["ready_s"] > next((t["ready_s"] for t in th_runs if t["n"] == x["n"]), math.inf) for x in pr_runs
            )
            ratio = min(x["ready_s"] for x in pr_runs) / max(max(t["ready_s"] for t in th_runs), 1e-9)
            verdict = (
                f"agrees — every process start was slower than the threads', by {ratio:,.0f}x or more."
                if slower
                else "disagrees — some process start was not slower than the threads."
            )
    st = d.r.get("startup") or []
    if st:
        parts = []
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in st:
            groups.setdefault((r["strategy"], int(r["concurrency"])), []).append(r)
        order = {"thread": 0, "process": 1, "inline": 2}
        for (strat, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 9))):
            busy = f(_med([r["all_slots_busy_s"] for r in rs]), 2)
            parts.append(f"{strat}x{n} all slots busy after {busy} s")
        measured.append(
            "Whole worker, from spawn (interpreter, imports, Redis registration, pool): " + "; ".join(parts) + ". "
            "A pool is started once per worker, so this is paid at deploy/scale-out time, not per job."
        )
    out += _claim(5, "Processes start slower than threads", quotes, measured or ["No start-up runs."], verdict)

    # 6. killability
    quotes = [
        ("B", "Child processes are interruptable/killable"),
        ("B", "Not interruptible/killable -> be careful with memory leaks"),
    ]
    rows = {t["strategy"]: t for t in (d.r.get("timeouts") or [])}
    measured = []
    verdict = "not measured"
    if rows:
        for strat, t in rows.items():
            measured.append(
                f"{strat}: job {t['status']} after {f(t['failed_after_s'], 2)} s, next job started after "
                f"{f(t['next_job_started_after_s'], 2)} s, its code burned CPU until {f(t['cpu_burned_until_s'], 2)} s."
            )
        t6, p6 = rows.get("thread"), rows.get("process")
        if t6 and p6:
            jt = float(t6["job_timeout_s"])
            pr_stopped = (p6.get("cpu_burned_until_s") or math.inf) <= jt + 1.0
            th_ran_on = (t6.get("cpu_burned_until_s") or 0.0) > jt + 1.0
            if pr_stopped and th_ran_on:
                verdict = (
                    f"agrees — the process was killed at its {jt:g} s timeout; the thread's code ran on to "
                    f"{f(t6['cpu_burned_until_s'], 1)} s (poolq fails the job and replaces the thread's slot, "
                    "but the CPU stays taken)."
                )
            else:
                verdict = "disagrees — see the numbers above."
    out += _claim(6, "Processes can be killed at a timeout, threads cannot", quotes, measured or ["No timeout runs."],
                  verdict)  # fmt: skip

    # 7. communication overhead
    quotes = [
        ("A", "Communication overhead: Inter-process communication (IPC) can be slower than inter-thread "
              "communication"),
        ("D", "If your tasks are very short-lived or involve frequent creation/destruction, threading might have "
              "lower overhead."),
    ]  # fmt: skip
    t, p = d.primary("thread", "io"), d.primary("process", "io")
    calib = (d.r.get("calibration") or {}).get("io")
    measured, verdict = [], "not measured"
    if t and p and t.get("cpu_s_per_1k_jobs") is not None and p.get("cpu_s_per_1k_jobs") is not None:
        measured.append(
            f"io jobs (almost no CPU of their own): the worker tree spent {f(p['cpu_s_per_1k_jobs'], 2)} CPU s per "
            f"1,000 jobs with processes vs {f(t['cpu_s_per_1k_jobs'], 2)} with threads (queue handling, plus pickling "
            "each call to a child and back for processes)."
        )
        if calib:
            over_t = (t["run_p50_s"] or 0) - calib["wall_s"]
            over_p = (p["run_p50_s"] or 0) - calib["wall_s"]
            measured.append(
                f"Run time over the job's own {ms(calib['wall_s'])} ms (p50): threads +{ms(over_t)} ms, "
                f"processes +{ms(over_p)} ms."
            )
        verdict = (
            "agrees — handing jobs to child processes costs more CPU per job than handing them to threads, though "
            "per job it is small next to most real work."
            if p["cpu_s_per_1k_jobs"] > t["cpu_s_per_1k_jobs"]
            else "disagrees — processes did not cost more CPU per job."
        )
    out += _claim(7, "Processes pay for inter-process communication", quotes, measured or ["Needs io cells."],
                  verdict)  # fmt: skip
    return out


def _slot_costs(d: Data) -> dict[tuple[str, int], tuple[float, float]]:
    """(strategy, slots) -> (idle USS MiB, idle PSS MiB), medians of the start-up runs."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in d.r.get("startup") or []:
        groups.setdefault((r["strategy"], int(r["concurrency"])), []).append(r)
    out: dict[tuple[str, int], tuple[float, float]] = {}
    for key, rs in groups.items():
        uss, pss = _med([r.get("idle_uss_mib") for r in rs]), _med([r.get("idle_pss_mib") for r in rs])
        if uss is not None and pss is not None:
            out[key] = (uss, pss)
    return out


def render(results: dict[str, Any], out: Path | None = None) -> str:
    d = Data(results)
    m = d.meta
    dk = m.get("docker")
    limits = [float(c) for c in (dk or {}).get("cpu_limits") or []]
    claims_data = Data(results, max(limits)) if limits else d
    lines = [
        f"# poolq load experiment — {str(m.get('started', ''))[:16].replace('T', ' ')} UTC",
        "",
        f"{m.get('mode')} · {m.get('available_cpus')} CPUs available ({m.get('cpu_count')} on the host) · Python "
        f"{m.get('python')} · rq {m.get('rq')} · redis-server {m.get('redis_server')} · poolq {m.get('poolq')} · "
        f"{m.get('repeats')} repeat(s), medians · {f(m.get('elapsed_s'), 0)} s in all"
        + (" · **interrupted**" if m.get("interrupted") else ""),
        *(
            [
                "",
                f"Worker containers: image `{dk.get('image')}`, CPU limits {', '.join(f'{c:g}' for c in limits)}, "
                f"memory limit {f(dk.get('memory_limit_mib'), 0)} MiB; Docker engine {dk.get('engine')} "
                f"({dk.get('engine_cpus')} CPUs, cgroup v{dk.get('cgroup_version')}).",
            ]
            if dk
            else []
        ),
        "",
        "Jobs per cell (all enqueued at once, to a worker already running and warmed up): "
        + "; ".join(f"{w} x {m['counts'].get(w)} = `{m['specs'].get(w)}`" for w in m.get("workloads", []))
        + ".",
        "",
        "## Results",
        "",
        results_table(d),
        "",
        "Queue wait = started_at - enqueued_at, run = ended_at - started_at, end-to-end = ended_at - enqueued_at, "
        "all from RQ's job hashes; throughput = finished jobs / (last ended_at - first enqueued_at). Memory: PSS and "
        "RSS summed over the worker's process tree (worker, forkserver, pool children), peak of samples every "
        f"{m.get('sample_interval_s', 0.1)} s under load; idle = before the burst. CPU: user + system seconds of the "
        "tree during the burst. " + limits_note(d),
    ]
    problems = [f"- {r['strategy']}x{r['concurrency']} / {r['workload']}: {'; '.join(r['problems'])}"
                for r in d.summary if r.get("problems")]  # fmt: skip
    if problems:
        lines += ["", "**Problems** (⚠ above):", "", *problems]
    cl = cpu_limit_section(d)
    if cl:
        lines += ["", "## Throughput vs CPU limit", "", *cl]
    su = startup_section(d)
    if su:
        lines += ["", "## Start-up", "", *su]
    to = timeouts_section(d)
    if to:
        lines += ["", "## Timeouts: can an overdue job be stopped?", "", *to]
    lines += [
        "",
        "## The articles' claims, checked against these numbers",
        "",
        "Sources: the four articles in `seeds/`: "
        + "; ".join(f"{k} = {v}" for k, v in SOURCES.items())
        + "."
        + (f" Container experiment: the cells at the largest CPU limit ({max(limits):g})." if limits else ""),
        "",
        *claims(claims_data),
        "Not measured here: isolation (“a bug or memory leak in one process won't affect other processes”, A) "
        "is covered by the worker's crash tests, not by this experiment; race conditions are a property of the "
        "code, not of the pool.",
    ]
    charts = [("throughput.png", "Throughput"), ("latency_cdf.png", "Latency CDFs"), ("memory.png", "Memory"),
              ("cpu_scaling.png", "Throughput vs CPU limit"), ("timeouts.png", "Timeouts")]  # fmt: skip
    present = [(n, t) for n, t in charts if out is None or (out / n).exists()]
    if present:
        lines += ["", "## Charts", ""]
        for name, title in present:
            lines += [f"![{title}]({name})", ""]
    others = [float(r["other_cores"]) for r in d.summary if r.get("other_cores") is not None]
    noisy = max(others) if others else 0.0
    lines += [
        "",
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
        f"{m.get('sample_interval_s', 0.1)} s; it costs a little CPU, and a peak shorter than the interval can be "
        "missed.",
        "- Queue wait here is mostly the burst itself queueing behind the pool (all jobs arrive at once); for waits "
        "under a given arrival rate use `python -m producer plan` and check it with `python -m producer validate`.",
        "",
    ]
    return "\n".join(lines)
