"""``--docker``: every cell in a fresh worker container under a CPU and memory limit.

The container's CPU limit is one more dimension of the matrix (``--cpus 1,2``). Per cell the
backend starts a worker container (:class:`producer.containers.DockerLab`), waits for its
HEALTHCHECK, reads its slots and detected CPUs from its own ``/metrics``, samples the engine's
stats of the container and the worker's metrics during the burst, and stops it with SIGTERM
(it drains) — or, after an error or Ctrl-C, removes it at once. The lab removes everything it
created when the run ends, whatever happens.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

from producer.backends.base import Backend, Size, WorkerRun, record_host_load
from producer.container_stats import StatsReading, StatsSampler
from producer.containers import LABEL, DockerLab, preflight
from producer.context import Context, log
from producer.measure import MIB
from producer.options import DockerOptions, Options, mib
from producer.results import Cell, ContainerCell, DockerMeta, Meta
from producer.sampling import HostCpu, other_load
from producer.scrape import MetricsProbe, MetricsReading
from worker.redact import redact_url


class ContainerWorkerRun(WorkerRun):
    def __init__(self, ctx: Context, lab: DockerLab, size: Size, cell: Cell) -> None:
        assert size.cpu_limit is not None
        self.ctx, self.lab = ctx, lab
        name = cell.queue.replace(".", "_")  # container and RQ worker name
        cell.container = ContainerCell(
            cpu_limit=size.cpu_limit, memory_limit_mib=lab.opts.memory / MIB, image=lab.opts.image, container=name
        )
        self.worker = lab.start_worker(size.strategy, size.concurrency, cell.queue, name, size.cpu_limit)
        self.stats = StatsSampler(self.worker.container)
        self.probe = MetricsProbe([self.worker.metrics_url])
        self.idle: StatsReading | None = None
        self.idle_metrics: MetricsReading | None = None
        self.host0: HostCpu | None = None

    def ready(self, cell: Cell) -> None:
        c = cell.container
        assert c is not None
        c.figures.healthy_after_s = self.lab.wait_healthy(self.worker)
        raw = self.ctx.conn.hgetall(f"rq:worker:{self.worker.name}")
        info = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
        before = self.probe.sample_now()
        if before is None or before.pool_size is None:
            raise RuntimeError(f"no poolq metrics at {self.worker.metrics_url}: {self.probe.errors[-1:]}")
        capacity = int(before.pool_size or info.get("poolq_concurrency") or 1)
        cell.concurrency = capacity
        c.pool_size = capacity
        c.registered_concurrency = int(info["poolq_concurrency"]) if info.get("poolq_concurrency") else None
        cell.available_cpus = int(before.available_cpus) if before.available_cpus else None

    def output(self) -> str:
        return self.lab.logs(self.worker)[-1500:]

    def begin(self, cell: Cell) -> None:
        time.sleep(0.2)
        self.idle = self.stats.sample_now()
        self.idle_metrics = self.probe.sample_now()
        self.host0 = HostCpu.read(None)  # the container's Redis is not a host process
        self.stats.start()
        self.probe.start()

    def end(self, cell: Cell) -> None:
        c = cell.container
        assert c is not None and self.host0 is not None
        stats, probe, idle, idle_metrics = self.stats, self.probe, self.idle, self.idle_metrics
        end = stats.sample_now()
        host1 = HostCpu.read(None)
        stats.stop()
        time.sleep(self.ctx.opts.metrics_settle)  # the worker samples its tree every few seconds
        after = probe.sample_now()
        probe.stop()
        if idle is None or end is None:
            cell.problems.append(f"container stats: {stats.errors[:1] or 'no reading'}")
        else:
            load = [r for r in stats.readings if idle.t <= r.t <= end.t]
            cell.cpu_s = (end.cpu_ns - idle.cpu_ns) / 1e9  # the container's, health checks included
            record_host_load(cell, other_load(self.host0, host1, cell.cpu_s))
            c.figures = dataclasses.replace(
                c.figures,
                container_mem_idle_mib=idle.working_set / MIB,
                container_mem_peak_mib=max(r.working_set for r in load) / MIB,
                container_mem_usage_peak_mib=max(r.usage for r in load) / MIB,
                container_mem_max_usage_mib=end.max_usage / MIB if end.max_usage else None,
                container_mem_limit_mib=end.limit / MIB,
                container_throttled_s=(end.throttled_ns - idle.throttled_ns) / 1e9,
            )
            c.container_throttled_periods = end.throttled_periods - idle.throttled_periods
            c.container_pids_peak = max((r.pids or 0) for r in load) or None
            c.container_stats_samples = len(load)
        readings = [r for r in probe.readings if r.pss is not None]
        f = cell.figures
        if idle_metrics is not None and idle_metrics.pss is not None:
            f.idle_pss_mib = idle_metrics.pss / MIB
            f.idle_rss_mib = (idle_metrics.rss or math.nan) / MIB
        if readings:
            f.peak_pss_mib = max(r.pss or 0.0 for r in readings) / MIB
            f.peak_rss_mib = max(r.rss or 0.0 for r in readings) / MIB
            cell.memory_samples = len(readings)
        if idle_metrics is not None and after is not None and idle_metrics.cpu is not None and after.cpu is not None:
            c.figures.worker_tree_cpu_s = after.cpu - idle_metrics.cpu
        if after is not None and after.available_cpus is not None:
            c.available_cpus_after = int(after.available_cpus)
        if probe.errors:
            cell.problems.append(f"metrics: {probe.errors[0]}")

    def stop(self, cell: Cell, clean: bool) -> None:
        """Drained (SIGTERM) after a clean cell; removed at once (SIGKILL) after an error or Ctrl-C."""
        self.stats.stop()
        self.probe.stop()
        c = cell.container
        assert c is not None
        if clean:
            cell.worker_exit, c.oom_killed = self.lab.stop_worker(self.worker)
        else:
            self.lab.kill_worker(self.worker)
        cell.log = str(self.worker.log_path)
        if c.oom_killed:
            cell.problems.append(f"the container was OOM-killed at --memory {mib(self.lab.opts.memory)}")
        elif cell.worker_exit not in (0, None):
            cell.problems.append(f"worker exited {cell.worker_exit}")


class DockerBackend(Backend):
    mode = "docker"
    description = "worker containers"
    interrupt_on_sigterm = True  # `kill` removes the containers too

    def __init__(self, opts: Options, docker: DockerOptions) -> None:
        self.opts = opts
        self.docker = docker
        self.lab: DockerLab | None = None

    def preflight(self) -> None:
        preflight(self.docker)  # engine, images, limits: refused before anything starts

    def start(self, run_id: str, log_dir: Path) -> str:
        self.lab = DockerLab(self.docker, run_id, log_dir)
        log(f"experiment {run_id}: starting the Docker network and Redis (label {LABEL}={run_id})")
        return self.lab.start()

    def close(self) -> None:
        if self.lab is None:
            return
        failures = self.lab.close()
        for f in failures:
            log(f"warning: could not remove {f}")
        if not failures:
            log(f"removed every container and network of experiment {self.lab.run_id}")

    def redis_process(self, conn: object) -> None:
        return None  # a container's pid is not the host's

    def redis_described(self, url: str) -> str:
        if self.docker.network:
            return redact_url(url)
        return f"Redis container {self.docker.redis_image} (started by the producer)"

    def sizes(self, ctx: Context, strategy: str, workload: str) -> list[Size]:
        sizes = self.opts.concurrency[f"{strategy}:{workload}"]
        return [Size(strategy, c, cpus) for c in sizes for cpus in self.docker.cpus]

    def queue(self, ctx: Context, size: Size, workload: str, repeat: int) -> str:
        return ctx.queue_name(f"{size.strategy}{size.concurrency}", f"c{size.cpu_limit:g}", workload, f"r{repeat}")

    def worker(self, ctx: Context, size: Size, cell: Cell) -> WorkerRun:
        assert self.lab is not None, "start() first"
        return ContainerWorkerRun(ctx, self.lab, size, cell)

    def describe(self, meta: Meta) -> None:
        if self.lab is None:
            return
        meta.docker = DockerMeta(
            **self.lab.facts,
            image=self.docker.image,
            cpu_limits=self.docker.cpus,
            memory_limit_mib=self.docker.memory / MIB,
            network=self.lab.network_name,
            redis_image=None if self.docker.network else self.docker.redis_image,
        )
