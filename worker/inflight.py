"""The jobs a worker is running now, and the slots they hold.

Three threads can end the same job: its slot (it finished or failed), the monitor (it is
overdue and its strategy could not stop it) and the drain (the worker is stopping). Each
:class:`Ticket` is ended by whoever claims it first (:meth:`Ticket.claim`); its slot is given
back exactly once (:meth:`InFlight.end`), whoever ends it. No job is dequeued unless a slot
is free (:meth:`InFlight.take`): no prefetch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from rq.executions import Execution
    from rq.job import Job
    from rq.queue import Queue


@dataclass(eq=False)
class Ticket:
    """One in-flight job. Whoever claims it first (the slot, the monitor, the drain) ends it."""

    job: Job
    queue: Queue
    enqueued_at: float | None
    execution: Execution | None = None  # registered by the slot (worker.lifecycle.JobLifecycle.prepare)
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    token: object = None
    abandoned: bool = False
    _claimed: bool = False
    _released: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """True for the first caller only: it records the job's outcome."""
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    @property
    def claimed(self) -> bool:
        return self._claimed

    def release_once(self) -> bool:
        with self._lock:
            if self._released:
                return False
            self._released = True
            return True


class InFlight:
    """The tickets of the running jobs and the semaphore of free slots, kept together."""

    def __init__(self, capacity: int) -> None:
        self._slots = threading.BoundedSemaphore(capacity)
        self._tickets: dict[Ticket, None] = {}
        self.changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._tickets)

    def __bool__(self) -> bool:
        return bool(self._tickets)

    def tickets(self) -> list[Ticket]:
        return list(self._tickets)

    # ------------------------------------------------------------------ slots

    def take(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for a free slot (None: do not wait)."""
        if timeout is None:
            return self._slots.acquire(blocking=False)
        return self._slots.acquire(timeout=timeout)

    def give_back(self, n: int = 1) -> None:
        """Slots taken for jobs that were not dequeued after all."""
        for _ in range(n):
            self._slots.release()

    # ------------------------------------------------------------------ tickets

    def add(self, ticket: Ticket) -> None:
        with self.changed:
            self._tickets[ticket] = None

    def forget(self, ticket: Ticket) -> None:
        """Out of the table; its slot is still held (a re-queued job's slot ends it)."""
        with self.changed:
            self._tickets.pop(ticket, None)

    def end(self, ticket: Ticket) -> None:
        """Out of the table, and its slot free again (once, whoever calls)."""
        with self.changed:
            self._tickets.pop(ticket, None)
            self.changed.notify_all()
        if ticket.release_once():
            self._slots.release()

    def wait_empty(self, until: float, stop: Callable[[], bool]) -> None:
        """Until nothing runs, ``until`` (monotonic) passes, or ``stop()`` says so."""
        with self.changed:
            while self._tickets and not stop() and time.monotonic() < until:
                self.changed.wait(0.2)

    def wait_changed(self, timeout: float) -> bool:
        """In a burst: False when nothing runs (quit), else wait up to ``timeout`` for a change."""
        with self.changed:
            if not self._tickets:
                return False
            self.changed.wait(timeout)
            return True
