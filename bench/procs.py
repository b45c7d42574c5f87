"""Everything the benchmark starts is tracked and killed (by process group) on exit; and the
CPU and memory accounting of what it started.

The private redis-server is the producer's (:class:`producer.processes.LocalRedis`), with a
client for the benchmark's own commands (FLUSHALL, INFO, commandstats).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import psutil
import redis

from bench.catalog import REPO
from producer.processes import LocalRedis, kill_group


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the Markdown report."""
    print(msg, file=sys.stderr, flush=True)


def git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return f"{head}{'+dirty' if dirty else ''}" if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants (Linux PR_SET_CHILD_SUBREAPER).

    A worker's grandchildren (forkserver, pool children) that outlive their parent are then
    re-parented here instead of to init, so we can reap them and their CPU time lands in our
    RUSAGE_CHILDREN: the tree's CPU is complete even when the worker does not wait for them.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER = 36
    except (OSError, AttributeError):
        return False


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (everything but idle and iowait)."""
    t = psutil.cpu_times()
    return float(sum(t)) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def others_cpu_pct(redis_pid: int, window: float = 1.0) -> float:
    """Share of all CPUs used by processes other than the bench and its redis-server over `window` s."""
    try:
        rp = psutil.Process(redis_pid)
        r0 = sum(rp.cpu_times()[:2])
        b0, s0 = machine_busy_seconds(), self_cpu_seconds()
        time.sleep(window)
        r1 = sum(rp.cpu_times()[:2])
        b1, s1 = machine_busy_seconds(), self_cpu_seconds()
    except psutil.Error:
        return math.nan
    return max(0.0, (b1 - b0) - (r1 - r0) - (s1 - s0)) / (window * (psutil.cpu_count() or 1)) * 100


def children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------------------------
# Processes: everything we start is tracked and killed (by process group) on exit
# --------------------------------------------------------------------------------------------

LIVE: dict[int, subprocess.Popen[bytes]] = {}  # pid -> every process group started and not yet reaped


def spawn(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(list(cmd), start_new_session=True, **kwargs)
    LIVE[proc.pid] = proc
    return proc


def cleanup_all() -> None:
    for pid, proc in list(LIVE.items()):
        if proc.returncode is None:
            kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3.0
    for pid, proc in list(LIVE.items()):
        if proc.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        kill_group(pid, signal.SIGKILL)  # stragglers of the group, even if the leader exited
        if proc.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                proc.wait(timeout=2.0)
        LIVE.pop(pid, None)


def on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class RedisServer(LocalRedis):
    """A private redis-server on a free loopback port, no persistence, and a client to it."""

    def __init__(self, binary: str | None = None) -> None:
        super().__init__(binary)
        self.client: redis.Redis[bytes] = redis.Redis.from_url(self.url)

    def stop(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client.close()
        super().stop()


def tree_memory(root: psutil.Process) -> tuple[int, int, int]:
    """(RSS sum, PSS sum, number of processes) over root and all its descendants."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0, 0
    rss = pss = n = 0
    for p in procs:
        try:
            mem = p.memory_full_info()
        except psutil.Error:
            continue
        rss += mem.rss
        pss += getattr(mem, "pss", 0)
        n += 1
    return rss, pss, n


def reap_orphans(ours: set[int], worker_pid: int, grace: float = 2.0) -> list[str]:
    """After the worker exited: wait for descendants re-parented to us (not ``ours``: the
    bench's own long-lived children), kill stragglers, reap all."""
    me = psutil.Process()
    leftovers: list[str] = []
    deadline = time.monotonic() + grace
    killed = False
    for _ in range(200):  # bounded: at most ~grace + 10 s
        try:
            kids = [k for k in me.children() if k.pid not in ours]
        except psutil.Error:
            kids = []
        alive = []
        for k in kids:
            try:
                pid, _status = os.waitpid(k.pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if pid == 0:
                alive.append(k)
        if not alive:
            break
        if time.monotonic() > deadline and not killed:
            for k in alive:
                with contextlib.suppress(psutil.Error):
                    leftovers.append(f"{k.pid}:{' '.join(k.cmdline())[:80]}")
                with contextlib.suppress(psutil.Error):
                    k.kill()
            kill_group(worker_pid)
            killed = True
        time.sleep(0.05)
    kill_group(worker_pid)  # anything still in the worker's process group
    return leftovers
