"""The worker's resources, measured from outside: its process tree and the whole machine.

- Memory and CPU of a local worker come from its whole process tree (the worker, the
  forkserver, pool children), sampled with psutil every ~100 ms (:class:`TreeSampler`): peak
  PSS (shared pages counted once) and RSS summed over the tree; CPU = user + system of every
  process, reaped children included.
- :class:`HostCpu` and :func:`other_load`: what the producer, a local redis-server and every
  other program used meanwhile, so a noisy machine shows in the results instead of hiding.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil
import redis

from producer.loop_thread import LoopThread


@dataclass(frozen=True)
class TreeReading:
    t: float  # time.time()
    rss: int
    pss: int
    uss: int
    cpu: float  # seconds, user + system of the tree, reaped children included (monotonic)
    processes: int


class TreeSampler:
    """Samples a process tree (root and every descendant) on a thread, ~every ``interval`` s.

    CPU of the tree = sum over live processes of own + reaped children's user and system time:
    a pool child that exits and is reaped by the forkserver is still counted. The total is held
    monotonic (a child reaped between two reads would otherwise vanish for one sample).
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.readings: list[TreeReading] = []
        self._cpu = 0.0
        self._lock = threading.Lock()
        self._runner = LoopThread(self._loop, "poolq-tree-sampler")
        self._stop = self._runner.stopping

    def sample_now(self) -> TreeReading:
        with self._lock:
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            rss = pss = uss = n = 0
            cpu = 0.0
            for p in procs:
                try:
                    with p.oneshot():
                        times = p.cpu_times()
                        mem = p.memory_full_info()
                except psutil.Error:
                    continue
                n += 1
                cpu += times.user + times.system + times.children_user + times.children_system
                rss += mem.rss
                pss += getattr(mem, "pss", mem.rss)
                uss += getattr(mem, "uss", mem.rss)
            self._cpu = max(self._cpu, cpu)
            reading = TreeReading(time.time(), rss, pss, uss, self._cpu, n)
            self.readings.append(reading)
            return reading

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.sample_now()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        self._runner.stop()

    def between(self, t0: float, t1: float) -> list[TreeReading]:
        with self._lock:
            return [r for r in self.readings if t0 <= r.t <= t1]


@dataclass(frozen=True)
class HostCpu:
    """System-wide busy CPU seconds, and those of the producer and of a local redis-server."""

    t: float
    busy: float
    producer: float
    redis: float

    @staticmethod
    def read(redis_proc: psutil.Process | None = None) -> HostCpu:
        total = psutil.cpu_times()
        busy = sum(total) - total.idle - getattr(total, "iowait", 0.0)
        busy -= getattr(total, "guest", 0.0) + getattr(total, "guest_nice", 0.0)  # already in user
        me = psutil.Process().cpu_times()
        rd = 0.0
        if redis_proc is not None:
            with contextlib.suppress(psutil.Error):
                t = redis_proc.cpu_times()
                rd = t.user + t.system
        return HostCpu(time.time(), busy, me.user + me.system, rd)


@dataclass(frozen=True)
class HostLoad:
    """Cores used during a cell by the producer, Redis, and everything else on the machine."""

    producer_cores: float
    redis_cores: float
    other_cores: float


def other_load(before: HostCpu, after: HostCpu, tree_cpu: float) -> HostLoad | None:
    """What the machine did besides ``tree_cpu`` (the worker's seconds) between two readings."""
    wall = after.t - before.t
    if wall <= 0:
        return None
    producer = after.producer - before.producer
    rds = after.redis - before.redis
    other = (after.busy - before.busy) - tree_cpu - producer - rds
    return HostLoad(producer / wall, rds / wall, max(0.0, other / wall))


def local_redis_process(conn: redis.Redis[bytes]) -> psutil.Process | None:
    """The redis-server process behind ``conn`` when it runs on this machine, else None."""
    try:
        pid = int(conn.info("server").get("process_id", 0))
        host = conn.connection_pool.connection_kwargs.get("host", "")
        if pid and host in ("127.0.0.1", "localhost", "::1"):
            proc = psutil.Process(pid)
            if "redis" in proc.name():
                return proc
    except (redis.exceptions.RedisError, psutil.Error, ValueError):
        pass
    return None


def peak(readings: Sequence[TreeReading], attr: str) -> float:
    vals = [float(getattr(r, attr)) for r in readings if r.processes]
    return max(vals) if vals else math.nan
