"""Memory and CPU of the worker's whole process tree: the main process and all its descendants.

The process strategy runs jobs in pool children, which are started by a forkserver and are
therefore grandchildren of the worker. Measuring only the worker process (what a stock
``process_resident_memory_bytes`` does) would make the process strategy look free. This module
walks every descendant of the worker and sums:

- memory: RSS, PSS and USS (``psutil.Process.memory_full_info``, from ``/proc/<pid>/smaps_rollup``).
  PSS divides each shared page among the processes that map it, so pages a forked child shares
  with the forkserver are counted once: PSS summed over a tree is that tree's fair footprint.
  RSS summed over a tree counts shared pages once per process and overstates it.
- CPU: user and system seconds, including children that have already exited. The kernel adds a
  child's CPU to its parent's ``cutime``/``cstime`` when the parent reaps it (the forkserver reaps
  pool children), so ``own + reaped children`` summed over the live tree covers the processes
  that are gone. Reading the tree is not atomic: a child reaped between the read of its parent
  and its own read is missing from that one sample. Processes are read parents first (so a child
  is never counted twice) and the reported totals never decrease (a dip is held at the previous
  value until the next sample catches up): the counters are monotonic, as counters must be.

Each process gets a role: ``main`` (the worker), ``pool`` (a pool child from
``Strategy.child_pids()`` and anything it started), ``helper`` (other descendants: the
forkserver and multiprocessing's resource tracker for the process strategy; subprocesses jobs
start in the thread and inline strategies).

Reading smaps is not free (the kernel walks every mapping), which is why this runs on the
metrics sampler thread at an interval, never per scrape or per job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

ROLES = ("main", "pool", "helper")
MEMORY_KINDS = ("rss", "pss", "uss")


@dataclass(frozen=True)
class TreeSample:
    """One reading of the process tree."""

    processes: dict[str, int]  # role -> number of processes
    memory: dict[tuple[str, str], int]  # (kind, role) -> bytes
    cpu_user_seconds: float  # monotonic totals of the tree, reaped children included
    cpu_system_seconds: float
    duration_seconds: float  # how long the reading took
    pids: dict[int, str] = field(default_factory=dict)  # pid -> role (for tests and logs)

    def memory_total(self, kind: str) -> int:
        return sum(v for (k, _), v in self.memory.items() if k == kind)

    @property
    def process_count(self) -> int:
        return sum(self.processes.values())


class ProcessTree:
    """Samples the tree rooted at ``pid`` (default: this process). Not thread-safe: one sampler."""

    def __init__(self, pid: int | None = None, pool_pids: Callable[[], Iterable[int]] | None = None) -> None:
        self.root = psutil.Process(pid if pid is not None else os.getpid())
        self.pool_pids = pool_pids or (lambda: ())
        self._user = 0.0
        self._system = 0.0

    def sample(self) -> TreeSample:
        t0 = time.perf_counter()
        try:
            pool = set(self.pool_pids())
        except Exception:
            pool = set()
        try:
            descendants = self.root.children(recursive=True)  # parents before their children
        except psutil.Error:
            descendants = []
        processes = dict.fromkeys(ROLES, 0)
        memory = {(k, r): 0 for k in MEMORY_KINDS for r in ROLES}
        pids: dict[int, str] = {}
        user = system = 0.0
        for proc in [self.root, *descendants]:
            try:
                with proc.oneshot():
                    if proc.pid == self.root.pid:
                        role = "main"
                    elif proc.pid in pool or pids.get(proc.ppid()) == "pool":
                        role = "pool"
                    else:
                        role = "helper"
                    cpu = proc.cpu_times()
                    mem = proc.memory_full_info()
            except psutil.Error:  # exited (or became a zombie) since the listing
                continue
            pids[proc.pid] = role
            processes[role] += 1
            user += cpu.user + cpu.children_user
            system += cpu.system + cpu.children_system
            memory["rss", role] += mem.rss
            memory["pss", role] += mem.pss
            memory["uss", role] += mem.uss
        # Never let the counters go down (see the module docstring).
        self._user = max(self._user, user)
        self._system = max(self._system, system)
        return TreeSample(
            processes=processes,
            memory=memory,
            cpu_user_seconds=self._user,
            cpu_system_seconds=self._system,
            duration_seconds=time.perf_counter() - t0,
            pids=pids,
        )
