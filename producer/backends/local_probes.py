"""Measurements only a local backend can make: how fast a fresh worker gets going, and whether
a job that overruns its timeout really stops.

- :func:`startup_runs`: a fresh worker with one probe job per slot queued before it starts:
  seconds until its first job started and until every slot was busy; idle memory of the tree.
- :func:`timeout_run`: a one-slot worker, a CPU job longer than its ``job_timeout``, then a
  noop: when RQ failed it, when the slot ran the next job, and until when the tree kept
  burning CPU (a thread cannot be killed; a process can).
- :func:`pool_starts`: N bare threads vs N processes until all run code (producer.startup).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence

from producer.context import Context, log
from producer.enqueue import enqueue
from producer.measure import MIB, failure_reasons, job_times, wait_done
from producer.processes import LocalWorker
from producer.results import PoolStart, StartupRun, TimeoutRun
from producer.sampling import TreeSampler
from producer.sizing import resolve_capacity
from producer.startup import run_fresh
from producer.workloads import build_spec

PROBE_SECONDS = 0.5  # each start-up probe job waits this long, so N of them hold N slots at once


def startup_runs(ctx: Context, repeat: int) -> list[StartupRun]:
    """One start-up run per strategy and distinct pool size of the matrix."""
    opts = ctx.opts
    runs: list[StartupRun] = []
    seen: set[tuple[str, int]] = set()
    for s in opts.strategies:
        for conc in sorted({c for w in opts.workloads for c in opts.concurrency[f"{s}:{w}"]}):
            n = resolve_capacity(s, conc, ctx.cpus)
            if (s, n) in seen:
                continue
            seen.add((s, n))
            st = startup_run(ctx, s, conc, repeat)
            runs.append(st)
            log(
                f"[r{repeat}] start-up {s}x{n}: first job after {st.first_job_started_s:.3f} s, "
                f"all slots busy after {st.all_slots_busy_s:.3f} s, idle PSS {st.idle_pss_mib:.1f} MiB"
            )
    return runs


def startup_run(ctx: Context, strategy: str, conc: str, repeat: int) -> StartupRun:
    """A fresh worker, N probe jobs queued before it starts: when does each slot run its first job?"""
    capacity = resolve_capacity(strategy, conc, ctx.cpus)
    queue = ctx.queue_name(f"{strategy}{capacity}", "startup", f"r{repeat}")
    ctx.wait_quiet()
    rep = enqueue(ctx.conn, queue, build_spec("io", {"seconds": PROBE_SECONDS}), capacity, result_ttl=600)
    worker = LocalWorker(ctx.url, strategy, conc, queue, f"{queue}-w", ctx.log_dir)
    spawned = worker.started_wall
    try:
        done = wait_done(ctx.conn, rep.job_ids, 120)
        reading = TreeSampler(worker.pid).sample_now()
    finally:
        code = worker.stop()
    times = job_times(ctx.conn, rep.job_ids)
    starts = sorted(t.started_at for t in times if t.started_at is not None)
    return StartupRun(
        strategy=strategy,
        concurrency=capacity,
        repeat=repeat,
        probe_job=f"io(seconds={PROBE_SECONDS})",
        first_job_started_s=starts[0] - spawned if starts else math.nan,
        all_slots_busy_s=starts[-1] - spawned if len(starts) == capacity else math.nan,
        idle_pss_mib=reading.pss / MIB,
        idle_uss_mib=reading.uss / MIB,
        idle_rss_mib=reading.rss / MIB,
        processes=reading.processes,
        ok=bool(done and code == 0 and len(starts) == capacity),
    )


def timeout_run(ctx: Context, strategy: str) -> TimeoutRun:
    """One job that overruns its timeout, then a noop, on a one-slot worker."""
    from worker.jobs import iterations_per_ms

    opts = ctx.opts
    queue = ctx.queue_name(strategy, "timeout")
    ctx.wait_quiet()
    worker = LocalWorker(ctx.url, strategy, "1", queue, f"{queue}-w", ctx.log_dir)
    iterations = int(opts.timeout_job_seconds * 1000 * iterations_per_ms())
    sampler: TreeSampler | None = None
    try:
        worker.wait_registered(ctx.conn)
        warm = enqueue(ctx.conn, queue, build_spec("noop"), 1, result_ttl=60)
        wait_done(ctx.conn, warm.job_ids, 60)
        sampler = TreeSampler(worker.pid, 0.05)
        sampler.start()
        long = enqueue(
            ctx.conn, queue, build_spec("cpu", {"iterations": iterations}), 1, job_timeout=opts.job_timeout,
            result_ttl=600,
        )  # fmt: skip
        nxt = enqueue(ctx.conn, queue, build_spec("noop"), 1, result_ttl=600)
        wait_done(ctx.conn, long.job_ids + nxt.job_ids, opts.timeout_job_seconds * 4 + 30)
        a = job_times(ctx.conn, long.job_ids)[0]
        # Watch the CPU until the overdue job would have ended on its own, and a bit more.
        if a.started_at is not None:
            while time.time() < a.started_at + opts.timeout_job_seconds * 1.5 + 1.0:
                time.sleep(0.1)
        sampler.stop()
    finally:
        if sampler is not None:
            sampler.stop()
        worker.stop()
    a = job_times(ctx.conn, long.job_ids)[0]
    b = job_times(ctx.conn, nxt.job_ids)[0]
    reason = failure_reasons(ctx.conn, long.job_ids, 1)
    burn_end = math.nan
    readings = sampler.readings
    if a.started_at is not None:
        for r0, r1 in itertools.pairwise(readings):
            if r1.t <= r0.t:
                continue
            if (r1.cpu - r0.cpu) / (r1.t - r0.t) > 0.5 and r1.t > a.started_at:
                burn_end = r1.t - a.started_at
    t = TimeoutRun(
        strategy=strategy,
        job=f"cpu(~{opts.timeout_job_seconds:g} s of one core)",
        job_timeout_s=opts.job_timeout,
        status=a.status,
        reason=reason[0].split(": ", 1)[-1] if reason else "",
        failed_after_s=(a.ended_at - a.started_at) if a.ended_at and a.started_at else math.nan,
        next_job_started_after_s=(b.started_at - a.started_at) if b.started_at and a.started_at else math.nan,
        cpu_burned_until_s=burn_end,
        cpu_timeline=[(r.t - (a.started_at or r.t), r.cpu) for r in readings],
    )
    log(
        f"timeout {strategy}: job {t.status} after {t.failed_after_s:.2f} s, next job started after "
        f"{t.next_job_started_after_s:.2f} s, CPU burned until {t.cpu_burned_until_s:.2f} s"
    )
    return t


def pool_starts(ctx: Context, startup: Sequence[StartupRun]) -> list[PoolStart]:
    """N threads, forkserver and spawn processes for every pool size the start-up runs had."""
    out: list[PoolStart] = []
    for n in sorted({r.concurrency for r in startup if r.strategy != "inline"} | {ctx.cpus}):
        ctx.wait_quiet()
        for kind in ("thread", "forkserver", "spawn"):
            p = PoolStart(**run_fresh(kind, n))
            out.append(p)
            log(f"start {n} x {kind}: {p.ready_s * 1000:.1f} ms until all run code")
    return out
