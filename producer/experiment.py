"""``python -m producer experiment``: strategies x workloads x sizes, one cell at a time.

Where the workers run is the backend's business (:mod:`producer.backends`): ``--local``
starts a ``python -m worker`` per cell (and measures start-up and killability too), ``--docker``
a worker container per cell under a CPU and memory limit (the limit is one more dimension of
the matrix), and without either the cells go to workers that are already running (compose),
one queue per strategy, measured from their ``--worker-metrics``.

This module is the runner: start the backend, calibrate each workload's job once in this
process, run every cell of every repeat (:func:`producer.cell.run_cell`, the same procedure
on every backend), stop the backend whatever happens, then write ``results.json`` (everything),
``results.csv`` (one row per cell run), ``jobs.csv`` (every job's timestamps), ``report.md``
and PNG charts (:mod:`producer.files`, :mod:`producer.report`, :mod:`producer.charts`).
Ctrl-C stops the workers and still writes what was measured.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import time
import uuid
from collections.abc import Callable

import rq

from producer import charts, report
from producer.backends import select
from producer.backends.base import Backend
from producer.cell import cell_line, run_cell
from producer.context import Context, log
from producer.enqueue import connect
from producer.files import write_results
from producer.options import Options
from producer.results import Results, load_results
from producer.sizing import available_cpus, calibrate
from producer.summary import aggregate
from producer.workloads import JobSpec, build_spec, experiment_spec
from worker.redact import redact_url


def job_specs(opts: Options) -> dict[str, JobSpec]:
    """The jobs each workload's cells send (its experiment defaults, then ``--param``)."""
    from worker.jobs import iterations_per_ms

    specs: dict[str, JobSpec] = {}
    for w in opts.workloads:
        spec = experiment_spec(w, dict(opts.params.get(w, {})))
        if w == "cpu" and "ms" in spec.kwargs:
            # Same work in every process: iterations calibrated once, here.
            spec = build_spec("cpu", {"iterations": int(spec.kwargs["ms"] * iterations_per_ms())})
        specs[w] = spec
    return specs


def run_matrix(ctx: Context, backend: Backend, results: Results, on_cell: Callable[..., None] | None) -> None:
    """Every repeat: the backend's own measurements, then every cell (workload-major)."""
    opts = ctx.opts
    for repeat in range(1, opts.repeats + 1):
        backend.before_repeat(ctx, repeat, results)
        for w in opts.workloads:
            for s in opts.strategies:
                for size in backend.sizes(ctx, s, w):
                    cell = run_cell(ctx, backend, size, w, repeat)
                    results.cells.append(cell)
                    log(cell_line(cell))
                    if on_cell:
                        on_cell(cell)
    backend.after_matrix(ctx, results)


def run(opts: Options, backend: Backend | None = None, on_cell: Callable[..., None] | None = None) -> Results:
    """Runs the whole matrix and writes every output file; returns the results."""
    backend = backend or select(opts)
    started = time.monotonic()
    run_id = dt.datetime.now().strftime("%H%M%S") + uuid.uuid4().hex[:4]
    results = Results()
    opts.out.mkdir(parents=True, exist_ok=True)
    log_dir = opts.out / "logs"
    log_dir.mkdir(exist_ok=True)
    meta = results.meta
    try:
        url = backend.start(run_id, log_dir)
        conn = connect(url)
        meta.redis_server = str(conn.info("server").get("redis_version", "?"))
        cpus = available_cpus()
        specs = job_specs(opts)
        log(f"calibrating {', '.join(opts.workloads)} (one job at a time in this process)")
        results.calibration = {w: calibrate(specs[w], 3 if w in ("alloc", "io") else 5) for w in opts.workloads}
        ctx = Context(opts, conn, url, run_id, cpus, specs, results.calibration, log_dir, backend.redis_process(conn))
        log(
            f"experiment {run_id}: {backend.description}, Redis {redact_url(url)} ({meta.redis_server}), {cpus} CPUs, "
            f"strategies {','.join(opts.strategies)}, workloads {','.join(opts.workloads)}, {opts.repeats} repeat(s)"
        )
        try:
            run_matrix(ctx, backend, results, on_cell)
        except KeyboardInterrupt:
            meta.interrupted = True
            log("interrupted: stopping the workers and writing what was measured")
    finally:
        backend.close()
    meta.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    meta.elapsed_s = time.monotonic() - started
    meta.mode = backend.mode
    meta.host, meta.python, meta.rq = platform.node(), platform.python_version(), rq.__version__
    meta.redis_url = backend.redis_described(url)
    meta.poolq = importlib.metadata.version("poolq")
    meta.available_cpus, meta.cpu_count = cpus, os.cpu_count()
    meta.strategies, meta.workloads = opts.strategies, opts.workloads
    meta.specs = {w: specs[w].describe() for w in opts.workloads}
    meta.spec_kwargs = {w: specs[w].to_json() for w in opts.workloads}
    meta.counts, meta.concurrency, meta.repeats = opts.counts, opts.concurrency, opts.repeats
    meta.sample_interval_s, meta.argv, meta.run_id = opts.sample_interval, opts.argv, run_id
    backend.describe(meta)
    results.summary = aggregate(results.cells)
    write_results(opts.out, results, ctx.jobs_rows)
    results = load_results(opts.out)  # what the report reads is what the file holds (NaN as None)
    try:
        charts.write_all(opts.out, results)
    except Exception as e:  # a chart must never cost the measurements
        log(f"warning: charts could not be drawn: {type(e).__name__}: {e}")
    (opts.out / "report.md").write_text(report.render(results, opts.out))
    log(f"wrote {opts.out}/results.json, results.csv, jobs.csv, report.md and charts in {meta.elapsed_s:.0f} s")
    return results
