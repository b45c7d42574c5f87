"""Lifecycle slot threads: the threads in which the strategies run one job's lifecycle each.

Unlike ``ThreadPoolExecutor`` a slot can be *retired* (its thread is stuck in a job that cannot
be killed) and replaced by a fresh thread, so the pool keeps its configured size. Each slot
carries the state its strategy keeps about the job it runs (a typed dataclass per strategy,
``Slot.state``), which the monitor's :meth:`~worker.strategies.base.Strategy.abandon` reads.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger("worker.strategies")

S = TypeVar("S")
# One unit of lifecycle work: everything that happens to one job in the worker.
Work = Callable[[], None]


@dataclass(eq=False)
class Slot(Generic[S]):
    """One unit of concurrency: a thread that runs lifecycle work, and its strategy's state."""

    index: int
    state: S
    thread: threading.Thread | None = None
    retired: bool = False


class SlotThreads(Generic[S]):
    """A fixed number of long-lived threads that run submitted work, one item each at a time."""

    def __init__(
        self,
        size: int,
        name: str,
        new_state: Callable[[], S],
        on_start: Callable[[Slot[S]], None] | None = None,
    ) -> None:
        self.name = name
        self.new_state = new_state
        self.on_start = on_start
        self.items: queue_mod.SimpleQueue[Work | None] = queue_mod.SimpleQueue()
        self.slots: list[Slot[S]] = []
        self.local = threading.local()
        self.lock = threading.Lock()
        self.size = size

    def start(self) -> None:
        for i in range(self.size):
            self._spawn(Slot(i, self.new_state()))

    def _spawn(self, slot: Slot[S]) -> None:
        t = threading.Thread(target=self._loop, args=(slot,), name=f"{self.name}-{slot.index}", daemon=True)
        slot.thread = t
        with self.lock:
            self.slots.append(slot)
        t.start()

    def _loop(self, slot: Slot[S]) -> None:
        self.local.slot = slot
        if self.on_start is not None:
            self.on_start(slot)
        while True:
            item = self.items.get()
            if item is None:
                return
            try:
                item()
            except BaseException:  # the lifecycle code handles job errors; this is a bug guard
                log.exception("slot %s: unhandled error in lifecycle work", slot.index)
            if slot.retired:
                return

    def current(self) -> Slot[S] | None:
        slot: Slot[S] | None = getattr(self.local, "slot", None)
        return slot

    def current_slot(self, who: str) -> Slot[S]:
        """The slot of the calling thread; ``who`` names the caller in the error if there is none."""
        slot = self.current()
        if slot is None:
            raise RuntimeError(f"{who} called outside a pool slot")
        return slot

    def submit(self, work: Work) -> None:
        self.items.put(work)

    def retire(self, slot: Slot[S]) -> Slot[S]:
        """Give up on ``slot``'s thread (it exits when its job returns) and start a replacement."""
        slot.retired = True
        with self.lock:
            if slot in self.slots:
                self.slots.remove(slot)
        fresh = Slot(slot.index, self.new_state())
        self._spawn(fresh)
        return fresh

    def live_slots(self) -> list[Slot[S]]:
        with self.lock:
            return list(self.slots)

    def shutdown(self, wait: bool, timeout: float | None) -> None:
        slots = self.live_slots()
        for _ in slots:
            self.items.put(None)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for s in slots:
                if s.thread is None:
                    continue
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                s.thread.join(left)
