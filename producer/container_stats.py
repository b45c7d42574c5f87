"""A worker container's own figures from the Docker API: memory (usage, working set, limit,
peak), CPU seconds, CFS throttling, processes, on a thread (one reading a second from the engine).

The working set (usage minus inactive file cache) is what ``docker stats`` shows and what the
OOM killer weighs; cgroup v1 and v2 report it under different keys, both are read here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from producer.loop_thread import LoopThread


@dataclass(frozen=True)
class StatsReading:
    t: float
    usage: float  # bytes charged to the container's memory cgroup (page cache included)
    working_set: float  # usage - inactive file cache: what `docker stats` shows, what the OOM killer weighs
    limit: float
    max_usage: float | None  # cgroup v1 only: the peak since the container started
    cpu_ns: float  # CPU time of every process in the container (health checks included)
    throttled_ns: float
    throttled_periods: float
    pids: float | None


def parse_stats(s: dict[str, Any]) -> StatsReading | None:
    """One reading from the Docker API's stats (cgroup v1 or v2); None for an empty one."""
    mem = s.get("memory_stats") or {}
    cpu = s.get("cpu_stats") or {}
    if "usage" not in mem or not cpu.get("cpu_usage"):
        return None
    usage = float(mem["usage"])
    st = mem.get("stats") or {}
    inactive = st.get("total_inactive_file", st.get("inactive_file", 0))
    thr = cpu.get("throttling_data") or {}
    pids = (s.get("pids_stats") or {}).get("current")
    return StatsReading(
        t=time.time(),
        usage=usage,
        working_set=max(0.0, usage - float(inactive)),
        limit=float(mem.get("limit") or 0),
        max_usage=float(mem["max_usage"]) if mem.get("max_usage") else None,
        cpu_ns=float(cpu["cpu_usage"].get("total_usage") or 0),
        throttled_ns=float(thr.get("throttled_time") or 0),
        throttled_periods=float(thr.get("throttled_periods") or 0),
        pids=float(pids) if pids else None,
    )


class Stream(Protocol):
    """The engine's stats stream (docker-py's generator): read lazily, closed when done."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class StatsSampler:
    """The container's stats stream (one reading a second from the engine) on a thread."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.readings: list[StatsReading] = []
        self.errors: list[str] = []
        self._runner = LoopThread(self._loop, "poolq-docker-stats")
        self._stop = self._runner.stopping

    def sample_now(self) -> StatsReading | None:
        """A single reading, now (``one_shot``: no wait for a second sample)."""
        try:
            r = parse_stats(self.container.stats(stream=False, one_shot=True))
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")
            return None
        if r is not None:
            self.readings.append(r)
        return r

    def _loop(self) -> None:
        stream: Stream | None = None
        try:
            stream = self.container.stats(stream=True, decode=True)
            for s in stream:
                r = parse_stats(s)
                if r is not None:
                    self.readings.append(r)
                if self._stop.is_set():
                    break
        except Exception as e:
            if not self._stop.is_set():
                self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        self._runner.stop()
