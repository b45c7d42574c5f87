"""Workers that are already running (compose): every strategy's workers consume a queue named
after the strategy (``thread``, ``process``, ``inline``, ``hybrid``, ``auto``).

A cell sends its burst to that queue and waits until it has drained; there is no warm-up (the
workers have been up) and nothing to stop. Slots are the workers' own report (``poolq_pool_size``
from their metrics, else ``poolq_concurrency`` from their RQ worker hashes, summed over the
replicas); memory and CPU come from their Prometheus metrics (``--worker-metrics``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from rq import Queue
from rq.worker import Worker

from producer.backends.base import Backend, Size, WorkerRun
from producer.context import Context
from producer.enqueue import connect
from producer.errors import BadInput
from producer.measure import MIB
from producer.options import Options
from producer.results import Cell
from producer.scrape import MetricsProbe, MetricsReading
from worker.redact import redact_url


class RunningWorkerRun(WorkerRun):
    warms_up = False

    def __init__(self, ctx: Context, size: Size, cell: Cell) -> None:
        self.ctx = ctx
        urls = ctx.opts.worker_metrics.get(size.strategy, [])
        cell.metrics_urls = urls
        self.workers = Worker.all(queue=Queue(cell.queue, connection=ctx.conn), connection=ctx.conn)
        if not self.workers:
            raise BadInput(
                f"no worker consumes queue {cell.queue!r} (start the {size.strategy} worker service, or use --local)"
            )
        self.probe = MetricsProbe(urls) if urls else None
        self.before: MetricsReading | None = None

    def ready(self, cell: Cell) -> None:
        conn = self.ctx.conn
        hashes = [conn.hgetall(f"rq:worker:{w.name}") for w in self.workers]
        capacity = sum(int(h.get(b"poolq_concurrency", b"1")) for h in hashes)
        self.before = self.probe.sample_now() if self.probe else None
        cpus = self.ctx.cpus
        if self.before is not None:
            if self.before.pool_size:
                capacity = int(self.before.pool_size)
            if self.before.available_cpus:
                cpus = int(self.before.available_cpus)
        cell.concurrency = capacity
        cell.replicas = len(self.workers)
        cell.available_cpus = cpus

    def begin(self, cell: Cell) -> None:
        if self.probe:
            self.probe.start()

    def end(self, cell: Cell) -> None:
        probe, before = self.probe, self.before
        if probe is None:
            cell.problems.append("no --worker-metrics URL for this strategy: memory and CPU not measured")
            return
        time.sleep(self.ctx.opts.metrics_settle)  # the workers sample their tree every few seconds
        after = probe.sample_now()
        probe.stop()
        readings = [r for r in probe.readings if r.pss is not None]
        if before is not None and after is not None and before.cpu is not None and after.cpu is not None:
            cell.cpu_s = after.cpu - before.cpu
        f = cell.figures
        f.idle_pss_mib = before.pss / MIB if before and before.pss is not None else math.nan
        f.idle_rss_mib = before.rss / MIB if before and before.rss is not None else math.nan
        f.peak_pss_mib = max((r.pss or 0.0) for r in readings) / MIB if readings else math.nan
        f.peak_rss_mib = max((r.rss or 0.0) for r in readings) / MIB if readings else math.nan
        cell.memory_samples = len(readings)
        if probe.errors:
            cell.problems.append(f"metrics: {probe.errors[0]}")

    def stop(self, cell: Cell, clean: bool) -> None:
        if self.probe:
            self.probe.stop()  # the workers are not ours: they keep running


class RunningBackend(Backend):
    mode = "running-workers"
    description = "running workers"
    waits_for_quiet = False  # the running workers are "other programs" too

    def __init__(self, opts: Options) -> None:
        self.opts = opts

    def preflight(self) -> None:
        """Redis must answer and every strategy's queue must have a worker."""
        conn = connect(self.opts.redis_url)
        missing = [s for s in self.opts.strategies if not Worker.all(queue=Queue(s, connection=conn), connection=conn)]
        conn.close()
        if missing:
            raise BadInput(
                f"no running worker consumes queue(s) {', '.join(missing)} at {redact_url(self.opts.redis_url)}: "
                "start the worker services (each consumes the queue named after its strategy), or use --local"
            )

    def start(self, run_id: str, log_dir: Path) -> str:
        return self.opts.redis_url

    def sizes(self, ctx: Context, strategy: str, workload: str) -> list[Size]:
        return [Size(strategy, "deployed")]

    def queue(self, ctx: Context, size: Size, workload: str, repeat: int) -> str:
        return size.strategy

    def worker(self, ctx: Context, size: Size, cell: Cell) -> WorkerRun:
        return RunningWorkerRun(ctx, size, cell)
