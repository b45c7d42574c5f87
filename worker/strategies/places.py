"""auto's two sub-pools as places a job takes: a thread token or a free one-job child slot.

:class:`Places` counts what is free, makes a job whose sub-pool is full wait for it in its
lifecycle slot, and holds the dequeue loop back (:meth:`Places.admit`) while a job waits or
:data:`ADMIT_AHEAD` are in transit, so that auto never hoards jobs (``auto.py`` says why that
cannot deadlock). Which place a job *wants* is the router's (``routing.py``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.errors import RequeueJob
from worker.strategies.children import PoolChild, timeout_error
from worker.strategies.routing import EARLY_SECONDS, Route, Router

if TYPE_CHECKING:
    from rq.job import Job

# Jobs the dequeue loop may have in transit (dequeued, class not known yet); see auto.py.
ADMIT_AHEAD = 2


@dataclass
class AutoSlot:
    """What an auto lifecycle slot holds while its job is placed and runs."""

    unplaced: bool = False  # dequeued, not yet placed in a sub-pool (counted in ``unplaced``)
    thread_token: bool = False  # holds a place in the thread pool
    in_thread: bool = False  # its job runs in this thread (an overdue one cannot be killed)
    thread_probe: str | None = None  # the new function this thread job measures
    child: ChildSlot | None = None  # the process-pool slot its job runs in

    def take_unplaced(self) -> bool:
        was, self.unplaced = self.unplaced, False
        return was


@dataclass(eq=False)
class ChildSlot:
    """One slot of auto's process pool: a one-job child, busy or free."""

    index: int
    child: PoolChild
    busy: bool = False
    # Serialises kill/stop/replace of the child: a slot thread replacing a killed child and
    # shutdown() must not close the same pipe twice (the fd number may be reused meanwhile).
    lock: threading.Lock = field(default_factory=threading.Lock)


class Places:
    """Free thread tokens and child slots of auto, and the jobs not yet placed (under ``cond``)."""

    def __init__(self, n_threads: int, router: Router) -> None:
        self.router = router
        self.cond = threading.Condition()
        self.free_threads = n_threads
        self.children: list[ChildSlot] = []
        self.unplaced = 0  # dequeued jobs not yet placed in a sub-pool (in transit or waiting)
        self.waiting = 0  # of those, jobs that found their sub-pool full and wait for it
        self.blocked_for_process = 0  # of those, jobs waiting for a process slot
        self.stopping = False

    def submitted(self) -> None:
        with self.cond:
            self.unplaced += 1

    def placed(self) -> None:
        with self.cond:
            self.unplaced -= 1
            self.cond.notify_all()

    def admit(self, timeout: float) -> bool:
        """Not while a job waits for a full sub-pool or ADMIT_AHEAD are in transit (see auto.py)."""
        with self.cond:
            if self.waiting == 0 and self.unplaced < ADMIT_AHEAD:
                return True
            self.cond.wait(timeout)
            return self.waiting == 0 and self.unplaced < ADMIT_AHEAD

    def free_child(self) -> ChildSlot | None:
        for cs in self.children:
            if not cs.busy:
                return cs
        return None

    def acquire(self, state: AutoSlot, job: Job, route: Route, deadline: float, timeout: float) -> ChildSlot | None:
        """Take a place for the job: a child (returned) or a thread token (None). Waits if full."""
        func_name = str(job.func_name)
        waiting = False
        since = time.monotonic()
        try:
            with self.cond:
                while True:
                    if route.new and not self.router.is_new(func_name):
                        old_pool = route.pool
                        route = self.router.route(job)  # classed meanwhile (a run ended, or early)
                        if waiting and old_pool == "process" and route.pool != "process":
                            self.blocked_for_process -= 1
                    if self.stopping:
                        raise RequeueJob("the worker is stopping; the job was not started and is re-queued")
                    if route.pool == "process" or ((route.probe or route.idle_child) and self.blocked_for_process == 0):
                        cs = self.free_child()
                        if cs is not None:
                            cs.busy = True
                            return cs
                    if route.pool == "thread" and self.free_threads > 0:
                        self.free_threads -= 1
                        return None
                    if (
                        route.new
                        and self.free_threads > 0
                        and time.monotonic() - since >= EARLY_SECONDS
                        and self.router.start_thread_probe(func_name)
                    ):
                        state.thread_probe = func_name
                        self.free_threads -= 1
                        return None
                    if route.pool == "thread" and route.overflow and self.blocked_for_process == 0:
                        cs = self.free_child()
                        if cs is not None:
                            cs.busy = True
                            return cs
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise timeout_error(timeout, f"no {route.pool} slot became free within it")
                    if not waiting:
                        waiting = True
                        self.waiting += 1
                        if route.pool == "process":
                            self.blocked_for_process += 1
                    self.cond.wait(min(left, 0.25))
                    if route.new:
                        self.router.early(func_name)
        finally:
            with self.cond:
                if waiting:
                    self.waiting -= 1
                    if route.pool == "process":
                        self.blocked_for_process -= 1
                if state.take_unplaced():
                    self.unplaced -= 1
                self.cond.notify_all()

    def release_thread(self, state: AutoSlot) -> None:
        with self.cond:
            if state.thread_token:
                state.thread_token = False
                self.free_threads += 1
                self.cond.notify_all()

    def release_child(self, cs: ChildSlot) -> None:
        with self.cond:
            cs.busy = False
            self.cond.notify_all()

    def stop(self) -> list[PoolChild]:
        """No job is placed any more (waiting ones are re-queued); the children, to stop."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
            return [cs.child for cs in self.children]
