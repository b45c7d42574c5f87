"""``--local``: the producer starts every worker itself, one ``python -m worker`` per cell.

Redis: ``REDIS_URL`` when it answers, else a private ``redis-server`` on a free loopback port
for this run. Each cell's worker is long-running on a queue of its own; it is stopped with
SIGTERM (it drains) before the next cell starts. Memory and CPU come from the worker's
process tree (psutil, every ``--sample-interval``). Only here can the producer also time a
fresh worker's start-up and watch an overdue job being stopped (:mod:`.local_probes`).
"""

from __future__ import annotations

from pathlib import Path

from producer.backends import local_probes
from producer.backends.base import Backend, Size, WorkerRun, record_host_load
from producer.context import Context, log
from producer.measure import MIB
from producer.options import Options
from producer.processes import LocalRedis, LocalWorker, reachable
from producer.results import Cell, Results
from producer.sampling import HostCpu, TreeReading, TreeSampler, other_load, peak
from producer.sizing import resolve_capacity
from worker.redact import redact_url


class LocalWorkerRun(WorkerRun):
    def __init__(self, ctx: Context, size: Size, cell: Cell) -> None:
        self.ctx = ctx
        self.size = size
        cell.available_cpus = ctx.cpus
        self.worker = LocalWorker(ctx.url, size.strategy, size.concurrency, cell.queue, f"{cell.queue}-w", ctx.log_dir)
        self.sampler: TreeSampler | None = None
        self.idle: TreeReading | None = None
        self.host0: HostCpu | None = None

    def ready(self, cell: Cell) -> None:
        info = self.worker.wait_registered(self.ctx.conn)
        reported = info.get("poolq_concurrency")
        cell.concurrency = int(reported or resolve_capacity(self.size.strategy, self.size.concurrency, self.ctx.cpus))

    def output(self) -> str:
        return self.worker.output()

    def begin(self, cell: Cell) -> None:
        self.sampler = TreeSampler(self.worker.pid, self.ctx.opts.sample_interval)
        self.idle = self.sampler.sample_now()
        self.host0 = HostCpu.read(self.ctx.redis_proc)
        self.sampler.start()

    def end(self, cell: Cell) -> None:
        assert self.sampler is not None and self.idle is not None and self.host0 is not None
        idle = self.idle
        end = self.sampler.sample_now()
        host1 = HostCpu.read(self.ctx.redis_proc)
        self.sampler.stop()
        load = self.sampler.between(idle.t, end.t)
        record_host_load(cell, other_load(self.host0, host1, end.cpu - idle.cpu))
        f = cell.figures
        f.idle_pss_mib = idle.pss / MIB
        f.idle_uss_mib = idle.uss / MIB
        f.peak_uss_mib = peak(load, "uss") / MIB
        f.idle_rss_mib = idle.rss / MIB
        f.peak_pss_mib = peak(load, "pss") / MIB
        f.peak_rss_mib = peak(load, "rss") / MIB
        cell.peak_processes = int(peak(load, "processes"))
        cell.memory_samples = len(load)
        cell.cpu_s = end.cpu - idle.cpu

    def stop(self, cell: Cell, clean: bool) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        code = self.worker.stop()  # SIGTERM, the worker drains; SIGKILL to its group after a timeout
        cell.worker_exit = code
        if code != 0:
            cell.problems.append(f"worker exited {code}")
        cell.log = str(self.worker.log_path)


class LocalBackend(Backend):
    mode = "local"
    description = "local workers"

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.local_redis: LocalRedis | None = None

    def start(self, run_id: str, log_dir: Path) -> str:
        if reachable(self.opts.redis_url):
            return self.opts.redis_url
        self.local_redis = LocalRedis()
        log(
            f"REDIS_URL {redact_url(self.opts.redis_url)} is unreachable: started redis-server "
            f"{self.local_redis.version} on 127.0.0.1:{self.local_redis.port} for this run"
        )
        return self.local_redis.url

    def close(self) -> None:
        if self.local_redis is not None:
            self.local_redis.stop()

    def redis_described(self, url: str) -> str:
        return "private redis-server (started by the producer)" if self.local_redis else redact_url(url)

    def sizes(self, ctx: Context, strategy: str, workload: str) -> list[Size]:
        return [Size(strategy, c) for c in self.opts.concurrency[f"{strategy}:{workload}"]]

    def queue(self, ctx: Context, size: Size, workload: str, repeat: int) -> str:
        return ctx.queue_name(f"{size.strategy}{size.concurrency}", workload, f"r{repeat}")

    def worker(self, ctx: Context, size: Size, cell: Cell) -> WorkerRun:
        return LocalWorkerRun(ctx, size, cell)

    def before_repeat(self, ctx: Context, repeat: int, results: Results) -> None:
        if self.opts.startup:
            results.startup += local_probes.startup_runs(ctx, repeat)

    def after_matrix(self, ctx: Context, results: Results) -> None:
        if self.opts.timeouts:
            results.timeouts += [local_probes.timeout_run(ctx, s) for s in self.opts.strategies]
        if self.opts.startup:
            results.pool_start += local_probes.pool_starts(ctx, results.startup)
