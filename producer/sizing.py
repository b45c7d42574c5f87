"""What a size means on this machine: the CPUs, the worker's own pool-size rule, and the most
jobs/s a cell could do ("% of limit" is measured against it).

The pool size comes from the worker's own code (``worker.strategies``), so the experiment and
the worker cannot disagree about what ``--concurrency auto`` is.
"""

from __future__ import annotations

import importlib
import math
import statistics
import time

from producer.results import Calibration
from producer.workloads import JobSpec


def available_cpus() -> int:
    from worker.cpus import detect_cpus

    return int(detect_cpus().available)


def resolve_capacity(strategy: str, concurrency: str, cpus: int) -> int:
    """What ``--concurrency`` resolves to in a worker started by the producer (no WORKER_* env)."""
    from worker import defaults
    from worker.strategies import STRATEGIES as WORKER_STRATEGIES
    from worker.strategies import StrategyConfig

    config = StrategyConfig(
        available_cpus=cpus,
        concurrency=None if concurrency == "auto" else int(concurrency),
        threads_per_cpu=defaults.THREADS_PER_CPU,
    )
    return WORKER_STRATEGIES[strategy].size(config)  # the worker's own rule, so the two cannot drift


def calibrate(spec: JobSpec, runs: int = 5) -> Calibration:
    """CPU seconds and wall seconds of one job run alone in this process (median of ``runs``)."""
    module, _, name = spec.func.rpartition(".")
    fn = getattr(importlib.import_module(module), name)
    kwargs = spec.representative()
    fn(**kwargs)  # warm-up (and the worker's own iterations-per-ms calibration)
    cpus, walls = [], []
    for _ in range(runs):
        c0, w0 = time.thread_time(), time.perf_counter()
        fn(**kwargs)
        cpus.append(time.thread_time() - c0)
        walls.append(time.perf_counter() - w0)
    return Calibration(cpu_s=statistics.median(cpus), wall_s=statistics.median(walls), runs=runs)


def machine_limit(workload: str, calib: Calibration, concurrency: int, cpus: float) -> tuple[float, str]:
    """Jobs/s the machine (CPU work) or the configuration (waiting work) allows at most."""
    cpu_s, wall_s = calib.cpu_s, calib.wall_s
    cpu_limit = cpus / cpu_s if cpu_s > 1e-6 else math.inf
    if workload == "cpu":
        return cpu_limit, f"{cpus} CPUs / {cpu_s * 1000:.1f} ms CPU per job"
    wall_limit = concurrency / wall_s if wall_s > 0 else math.inf
    if cpu_limit < wall_limit:
        return cpu_limit, f"{cpus} CPUs / {cpu_s * 1000:.1f} ms CPU per job"
    return wall_limit, f"{concurrency} slots / {wall_s * 1000:.0f} ms per job"
