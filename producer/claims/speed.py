"""Claims about speed: threads and CPU work (the GIL), processes and cores, threads and I/O."""

from __future__ import annotations

from producer.claims.base import Claim, Finding
from producer.fmt import f, ms, rate
from producer.view import View


class ThreadsDoNotSpeedUpCpu(Claim):
    title = "Threads do not speed up CPU-bound work (the GIL)"
    quotes = (
        ("B", "Multithreading has no effect for CPU-bound tasks due to the GIL"),
        ("C", "for CPU-bound tasks (tasks that require heavy computation), multithreading does not provide true "
              "parallelism"),
        ("A", "The GIL can limit the performance of CPU-bound tasks in multi-threaded programs."),
    )  # fmt: skip
    needs = "Needs the thread and inline strategies on the cpu workload."

    def judge(self, v: View) -> Finding:
        t, i = v.primary("thread", "cpu"), v.primary("inline", "cpu")
        t_thr, i_thr = v.thr("thread", "cpu"), v.thr("inline", "cpu")
        if not (t and i and t_thr and i_thr):
            return Finding()
        tf, i_f = t.figures, i.figures
        ratio = t_thr / i_thr
        measured = [
            f"cpu jobs: {t.concurrency} threads {rate(tf.throughput_jobs_s)} jobs/s vs one job at a time "
            f"(inline) {rate(i_f.throughput_jobs_s)} jobs/s: **{ratio:.2f}x** with {t.concurrency}x the slots, on "
            f"{v.cpus} CPUs. The thread worker kept {f(tf.cores_busy, 2)} cores busy "
            f"({f(tf.pct_of_limit, 0)}% of the {v.cpus}-CPU limit); run time per job grew from "
            f"{ms(i_f.run_p50_s)} ms to {ms(tf.run_p50_s)} ms (p50) as {t.concurrency} jobs shared one GIL.",
        ]
        if ratio > 1.05:
            measured.append(
                f"What threads did gain ({ratio:.2f}x) is overlap of the queue's own waiting (Redis round trips "
                "before and after each job, during which a one-job-at-a-time worker leaves the core idle) with "
                "other jobs' computation — not parallel Python."
            )
        if ratio <= 1.3:
            verdict = f"agrees — threads gave no parallel speed-up on CPU-bound Python code ({ratio:.2f}x)."
        elif ratio < 0.8 * min(v.cpus, t.concurrency):
            verdict = f"partly — threads gained {ratio:.2f}x, less than the {v.cpus} CPUs would allow."
        else:
            verdict = f"disagrees — threads scaled ({ratio:.2f}x); is this a free-threaded Python?"
        return Finding(measured, verdict)


class ProcessesScaleCpu(Claim):
    title = "Processes scale CPU-bound work across cores"
    quotes = (
        ("A", "This makes multiprocessing ideal for CPU-bound tasks, as it takes full advantage of multiple CPU "
              "cores."),
        ("B", "Takes advantage of multiple CPUs and cores"),
        ("D", "Can utilize multiple CPU cores effectively for CPU-bound tasks."),
    )  # fmt: skip
    needs = "Needs the process and inline strategies on the cpu workload."

    def judge(self, v: View) -> Finding:
        p, i = v.primary("process", "cpu"), v.primary("inline", "cpu")
        p_thr, i_thr = v.thr("process", "cpu"), v.thr("inline", "cpu")
        if not (p and i and p_thr and i_thr):
            return Finding()
        pf = p.figures
        ratio = p_thr / i_thr
        ideal = min(v.cpus, int(p.concurrency))
        measured = [
            f"cpu jobs: {p.concurrency} processes {rate(pf.throughput_jobs_s)} jobs/s vs inline "
            f"{rate(i.figures.throughput_jobs_s)} jobs/s: **{ratio:.2f}x** (ideal {ideal}x on {v.cpus} CPUs); "
            f"{f(pf.pct_of_limit, 0)}% of the machine's limit, {f(pf.cores_busy, 2)} cores busy.",
        ]
        if v.cpus < 2:
            verdict = "not measurable — this machine has one CPU, so nothing can scale."
        elif ratio >= 0.8 * ideal:
            verdict = f"agrees — {ratio:.2f}x of an ideal {ideal}x."
        elif ratio > 1.2:
            verdict = f"partly — {ratio:.2f}x, short of the ideal {ideal}x."
        else:
            verdict = f"disagrees — {ratio:.2f}x."
        return Finding(measured, verdict)


class ThreadsSuitIo(Claim):
    title = "Threads suit I/O-bound work"
    quotes = (
        ("A", "Threading is more suited for I/O-bound tasks, where waiting for I/O operations to complete is the "
              "main bottleneck."),
        ("B", "Great for I/O-bound tasks"),
        ("C", "for I/O-bound tasks, threads are still highly effective because they release the GIL while waiting "
              "for external operations."),
    )  # fmt: skip
    needs = "Needs the thread and inline strategies on the io workload."

    def judge(self, v: View) -> Finding:
        t, i, p = v.primary("thread", "io"), v.primary("inline", "io"), v.primary("process", "io")
        t_thr, i_thr = v.thr("thread", "io"), v.thr("inline", "io")
        if not (t and i and t_thr and i_thr):
            return Finding()
        tf = t.figures
        ratio = t_thr / i_thr
        measured = [
            f"io jobs: {t.concurrency} threads {rate(tf.throughput_jobs_s)} jobs/s vs inline "
            f"{rate(i.figures.throughput_jobs_s)} jobs/s: **{ratio:.1f}x** with {t.concurrency} slots, "
            f"{f(tf.pct_of_limit, 0)}% of slots/latency, using {f(tf.cores_busy, 2)} cores.",
        ]
        same = [r for r in v.rows("process", "io") if int(r.concurrency) == int(t.concurrency)]
        if p:
            measured.append(
                f"The default process pool ({p.concurrency} processes, one per CPU) made "
                f"{rate(p.figures.throughput_jobs_s)} jobs/s: it has fewer slots, not slower ones."
            )
        if same and same[0].figures.throughput_jobs_s:
            s = same[0]
            measured.append(
                f"With as many processes as threads ({s.concurrency}), processes made "
                f"{rate(s.figures.throughput_jobs_s)} jobs/s at {f(s.figures.peak_pss_mib)} MiB PSS vs "
                f"{f(tf.peak_pss_mib)} MiB for the threads: for I/O the difference is the cost of a slot, "
                "not its speed."
            )
        ok = ratio >= 0.7 * int(t.concurrency) or (tf.pct_of_limit or 0) >= 70
        verdict = (
            f"agrees — {t.concurrency} threads overlapped their waits ({ratio:.1f}x inline)."
            if ok
            else f"partly — {ratio:.1f}x inline with {t.concurrency} threads."
        )
        return Finding(measured, verdict)
