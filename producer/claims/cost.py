"""Claims about what a slot costs: memory, start-up time, handing a job to it (IPC)."""

from __future__ import annotations

import math

from producer.claims.base import Claim, Finding
from producer.fmt import f, ms
from producer.results import SummaryRow
from producer.stats import median_of
from producer.view import View


class ProcessesCostMemory(Claim):
    title = "Processes cost more memory than threads"
    quotes = (
        ("A", "Higher memory usage: Each process requires its own memory space, leading to higher memory "
              "consumption compared to threads."),
        ("B", "Larger memory footprint"),
        ("B", "Leightweight - low memory footprint"),
    )  # fmt: skip
    needs = "No start-up runs."

    def judge(self, v: View) -> Finding:
        out = Finding()
        base = v.slot_costs()
        if base:
            out.measured.append(
                "Idle memory of the whole worker tree with its pool up (start-up runs), USS (private) / PSS: "
                + ", ".join(f"{k[0]}x{k[1]}: {f(c[0])} / {f(c[1])} MiB" for k, c in sorted(base.items()))
                + "."
            )
            inl = next((c for k, c in base.items() if k[0] == "inline"), None)
            per: dict[str, tuple[int, float, float]] = {}
            for (strat, slots), (uss, pss) in base.items():
                if strat != "inline" and inl is not None and (strat not in per or slots > per[strat][0]):
                    per[strat] = (slots, (uss - inl[0]) / slots, (pss - inl[1]) / slots)
            if "thread" in per and "process" in per:
                t_n, t_u, t_p = per["thread"]
                p_n, p_u, p_p = per["process"]
                out.measured.append(
                    f"Cost of one more slot over the inline baseline: **{f(p_u)} MiB private (USS) per process** "
                    f"({f(p_p)} MiB PSS, from {p_n} processes) vs **{f(t_u, 2)} MiB per thread** ({f(t_p, 2)} MiB "
                    f"PSS, from {t_n} threads). A forkserver child shares the preloaded modules' pages at first, but "
                    "reference counting writes to the objects and copies their pages."
                )
                out.verdict = (
                    f"agrees — a process slot costs {f(p_u)} MiB of private memory, a thread slot {f(t_u, 2)} MiB."
                    if p_u > t_u
                    else "disagrees — process slots did not cost more than thread slots."
                )
        a_t, a_p = v.primary("thread", "alloc"), v.primary("process", "alloc")
        if a_t and a_p and a_t.figures.peak_pss_mib is not None and a_p.figures.peak_pss_mib is not None:

            def per_slot(r: SummaryRow) -> float:
                return (float(r.figures.peak_pss_mib or 0.0) - float(r.figures.idle_pss_mib or 0.0)) / r.concurrency

            out.measured.append(
                f"Under load with data (`{a_t.spec}`): peak PSS {f(a_t.figures.peak_pss_mib)} MiB with "
                f"{a_t.concurrency} threads vs {f(a_p.figures.peak_pss_mib)} MiB with {a_p.concurrency} processes, "
                f"i.e. {f(per_slot(a_t))} vs {f(per_slot(a_p))} MiB above idle per slot: the jobs' own data dominates "
                "and grows with the jobs in flight, whatever runs them."
            )
        return out


class ProcessesStartSlower(Claim):
    title = "Processes start slower than threads"
    quotes = (
        ("B", "Starting a process is slower that starting a thread"),
        ("D", "Processes are more resource-intensive to create and manage than threads."),
        ("C", "Since they share memory, threads are lightweight and quick to create."),
    )  # fmt: skip
    needs = "No start-up runs."

    def judge(self, v: View) -> Finding:
        out = Finding()
        pool = v.r.pool_start
        if pool:
            for n in sorted({int(x.n) for x in pool}):
                by = {x.kind: x.ready_s for x in pool if int(x.n) == n}
                if "thread" in by:
                    others = ", ".join(f"{k} {f(s * 1000, 1)} ms" for k, s in by.items() if k != "thread")
                    thread_ms = f(by["thread"] * 1000, 2)
                    out.measured.append(f"{n} threads ready in {thread_ms} ms; {n} processes: {others}.")
            th_runs = [x for x in pool if x.kind == "thread"]
            pr_runs = [x for x in pool if x.kind != "thread"]
            if th_runs and pr_runs:
                slower = all(x.ready_s > next((t.ready_s for t in th_runs if t.n == x.n), math.inf) for x in pr_runs)
                ratio = min(x.ready_s for x in pr_runs) / max(max(t.ready_s for t in th_runs), 1e-9)
                out.verdict = (
                    f"agrees — every process start was slower than the threads', by {ratio:,.0f}x or more."
                    if slower
                    else "disagrees — some process start was not slower than the threads."
                )
        groups = v.startup_groups()
        if groups:
            order = {"thread": 0, "process": 1, "inline": 2}
            parts = [
                f"{strat}x{n} all slots busy after {f(median_of(r.all_slots_busy_s for r in rs), 2)} s"
                for (strat, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 9)))
            ]
            out.measured.append(
                "Whole worker, from spawn (interpreter, imports, Redis registration, pool): " + "; ".join(parts) + ". "
                "A pool is started once per worker, so this is paid at deploy/scale-out time, not per job."
            )
        return out


class ProcessesPayIpc(Claim):
    title = "Processes pay for inter-process communication"
    quotes = (
        ("A", "Communication overhead: Inter-process communication (IPC) can be slower than inter-thread "
              "communication"),
        ("D", "If your tasks are very short-lived or involve frequent creation/destruction, threading might have "
              "lower overhead."),
    )  # fmt: skip
    needs = "Needs io cells."

    def judge(self, v: View) -> Finding:
        t, p = v.primary("thread", "io"), v.primary("process", "io")
        calib = v.r.calibration.get("io")
        t_cpu = t.figures.cpu_s_per_1k_jobs if t else None
        p_cpu = p.figures.cpu_s_per_1k_jobs if p else None
        if t is None or p is None or t_cpu is None or p_cpu is None:
            return Finding()
        out = Finding()
        out.measured.append(
            f"io jobs (almost no CPU of their own): the worker tree spent {f(p_cpu, 2)} CPU s per "
            f"1,000 jobs with processes vs {f(t_cpu, 2)} with threads (queue handling, plus pickling "
            "each call to a child and back for processes)."
        )
        if calib:
            over_t = (t.figures.run_p50_s or 0) - calib.wall_s
            over_p = (p.figures.run_p50_s or 0) - calib.wall_s
            out.measured.append(
                f"Run time over the job's own {ms(calib.wall_s)} ms (p50): threads +{ms(over_t)} ms, "
                f"processes +{ms(over_p)} ms."
            )
        out.verdict = (
            "agrees — handing jobs to child processes costs more CPU per job than handing them to threads, though "
            "per job it is small next to most real work."
            if p_cpu > t_cpu
            else "disagrees — processes did not cost more CPU per job."
        )
        return out
