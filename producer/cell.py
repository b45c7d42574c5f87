"""One cell, the same way on every backend: ready, warm up, one burst, wait, read RQ back.

1. the backend starts (or finds) the cell's worker(s) and waits until they take jobs;
2. one noop job per slot warms the pool up (a fresh process's first job is slow);
3. idle readings, then the cell's jobs as one burst (``enqueue``, pipelined);
4. wait until every job has ended (or ``--cell-timeout``), final readings, stop the worker;
5. :func:`finish`: every job's timestamps from RQ (``Job.fetch_many``), throughput and
   latency, what the jobs returned (where they ran), the machine's limit, CPU per job.

Only what differs between backends is behind :class:`~producer.backends.base.WorkerRun`.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from producer.backends.base import Backend, Size
from producer.context import Context
from producer.enqueue import enqueue
from producer.measure import JobStats, failure_reasons, job_times, sample_results, summarize, wait_done
from producer.results import Cell, Figures
from producer.sizing import machine_limit
from producer.stats import finite
from producer.workloads import build_spec


def run_cell(ctx: Context, backend: Backend, size: Size, workload: str, repeat: int) -> Cell:
    opts = ctx.opts
    queue = backend.queue(ctx, size, workload, repeat)
    cell = Cell(
        mode=backend.mode,
        strategy=size.strategy,
        concurrency_arg=size.concurrency,
        workload=workload,
        repeat=repeat,
        count=opts.counts[workload],
        spec=ctx.specs[workload].describe(),
        queue=queue,
    )
    if backend.waits_for_quiet:
        cell.other_cores_before = ctx.wait_quiet()
    worker = backend.worker(ctx, size, cell)
    ids: list[str] = []
    done = clean = False
    try:
        worker.ready(cell)
        slots = int(cell.concurrency or 1)
        cpu = f"@{cell.cpu_limit:g}cpu" if cell.cpu_limit is not None else ""
        cell.key = f"{cell.strategy}x{slots}{cpu}/{workload}/r{repeat}"
        if worker.warms_up:
            warm = enqueue(ctx.conn, queue, build_spec("noop"), slots, result_ttl=60)
            if not wait_done(ctx.conn, warm.job_ids, 120):
                raise RuntimeError(f"warm-up jobs did not end: {worker.output()}")
        worker.begin(cell)
        rep = enqueue(
            ctx.conn, queue, ctx.specs[workload], cell.count, batch_size=opts.batch_size, result_ttl=opts.result_ttl,
            seed=repeat,
        )  # fmt: skip
        ids = rep.job_ids
        cell.enqueue_s = rep.elapsed
        done = wait_done(ctx.conn, ids, opts.cell_timeout)
        worker.end(cell)
        clean = True
    finally:
        worker.stop(cell, clean)
    return finish(ctx, cell, ids, done)


def add_job_stats(cell: Cell, s: JobStats) -> None:
    cell.jobs = s.jobs
    cell.finished = s.finished
    cell.failed = s.failed
    cell.statuses = s.statuses
    cell.first_enqueued_at = s.first_enqueued_at
    cell.first_started_at = s.first_started_at
    cell.last_ended_at = s.last_ended_at
    cell.wait_max_s = s.wait_max_s
    cell.run_max_s = s.run_max_s
    cell.e2e_mean_s = s.e2e_mean_s
    cell.e2e_max_s = s.e2e_max_s
    f: Figures = cell.figures
    f.throughput_jobs_s = s.throughput_jobs_s
    f.makespan_s = s.makespan_s
    f.wait_p50_s = s.wait_p50_s
    f.wait_p95_s = s.wait_p95_s
    f.wait_p99_s = s.wait_p99_s
    f.wait_mean_s = s.wait_mean_s
    f.run_p50_s = s.run_p50_s
    f.run_p95_s = s.run_p95_s
    f.run_p99_s = s.run_p99_s
    f.run_mean_s = s.run_mean_s
    f.run_cv2 = s.run_cv2
    f.e2e_p50_s = s.e2e_p50_s
    f.e2e_p95_s = s.e2e_p95_s
    f.e2e_p99_s = s.e2e_p99_s


def _add_result_facts(cell: Cell, values: list[dict[str, Any]]) -> None:
    """What the jobs' own return values say: their CPU time, in how many processes and threads they ran."""
    cpu = [float(v["cpu"]) for v in values if "cpu" in v]
    cell.figures.job_cpu_ms_median = statistics.median(cpu) * 1000 if cpu else None
    cell.distinct_pids = len({v["pid"] for v in values if "pid" in v})
    cell.distinct_threads = len({(v["pid"], v["thread"]) for v in values if "pid" in v and "thread" in v})
    cell.results_sampled = len(values)


def finish(ctx: Context, cell: Cell, ids: list[str], done: bool) -> Cell:
    """Everything that is computed the same way for every backend, from RQ's records."""
    times = job_times(ctx.conn, ids)
    add_job_stats(cell, summarize(times))
    for t in times:
        ctx.jobs_rows.append(
            [cell.key, cell.strategy, cell.concurrency, cell.workload, cell.repeat,
             t.id, t.status, t.enqueued_at, t.started_at, t.ended_at]
        )  # fmt: skip
    if not done:
        cell.problems.append(f"not all jobs ended within {ctx.opts.cell_timeout:g} s")
    if cell.failed:
        cell.problems.append(f"{cell.failed}/{len(ids)} jobs did not finish")
        cell.failure_examples = failure_reasons(ctx.conn, [t.id for t in times if t.status != "finished"])
    _add_result_facts(cell, sample_results(ctx.conn, [t.id for t in times if t.status == "finished"]))
    f = cell.figures
    # A container's CPU limit may be fractional; the worker rounds it up (its detected CPUs).
    cpus_for_limit = cell.cpu_limit or cell.available_cpus or ctx.cpus
    limit, cell.limit_basis = machine_limit(cell.workload, ctx.calibration[cell.workload], int(cell.concurrency or 1),
                                            cpus_for_limit)  # fmt: skip
    f.limit_jobs_s = limit
    thr = f.throughput_jobs_s if f.throughput_jobs_s is not None else math.nan
    f.pct_of_limit = 100.0 * thr / limit if limit and math.isfinite(limit) and thr == thr else math.nan
    makespan = f.makespan_s if f.makespan_s is not None else math.nan
    if cell.cpu_s is not None and cell.finished:
        f.cpu_s_per_1k_jobs = 1000.0 * cell.cpu_s / cell.finished
        f.cores_busy = cell.cpu_s / makespan if makespan > 0 else math.nan
    if cell.container is not None and cell.cpu_limit:
        per_cpu = finite(thr)
        cell.container.figures.jobs_per_s_per_cpu = per_cpu / cell.cpu_limit if per_cpu is not None else None
    return cell


def cell_line(c: Cell) -> str:
    """The cell's one log line."""

    def f(v: Any, fmt: str) -> str:
        n = finite(v)
        return "-" if n is None else format(n, fmt)

    warn = f"  !! {'; '.join(c.problems)}" if c.problems else ""
    where = ""
    if c.container is not None:
        peak = f(c.container.figures.container_mem_peak_mib, ".0f")
        where = (
            f"@{c.container.cpu_limit:g}cpu (worker saw {c.available_cpus or '?'} CPUs, pool "
            f"{c.container.pool_size or '?'}, container peak {peak} MiB)"
        )
    m = c.figures
    return (
        f"[r{c.repeat}] {c.strategy}x{c.concurrency or '?'}{where} {c.workload}: "
        f"{c.finished}/{c.count} jobs, {f(m.throughput_jobs_s, ',.1f')} jobs/s "
        f"({f(m.pct_of_limit, '.0f')}% of limit), p95 wait {f(m.wait_p95_s, '.3f')} s, "
        f"p95 run {f(m.run_p95_s, '.3f')} s, peak PSS {f(m.peak_pss_mib, '.1f')} MiB, "
        f"CPU {f(m.cpu_s_per_1k_jobs, '.1f')} s/1k jobs{warn}"
    )
