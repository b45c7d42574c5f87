"""``process``: a pool of child processes (forkserver), one per slot: parallel CPU, hard timeouts.

The worker's threads keep the job lifecycle (Redis writes) in the parent; each slot thread
sends the job's function call to its own child (``children.PoolChild``) and waits. An overdue
job's child is killed and replaced; a child that dies fails only its job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.strategies.base import Strategy, StrategyConfig
from worker.strategies.children import PoolChild, call_child, recycle_reason, spawn_context, unpack_reply
from worker.strategies.slots import Slot, SlotThreads, Work

if TYPE_CHECKING:
    from rq.job import Job

    from worker.hooks import Hooks

log = logging.getLogger("worker.strategies")


@dataclass
class ProcessSlot:
    """What a process-pool slot owns: its child."""

    child: PoolChild | None = None


class ProcessStrategy(Strategy):
    """A pool of child processes (forkserver), one per slot: parallel CPU, hard timeouts."""

    name = "process"
    advice = "processes: for CPU-bound jobs (one child per CPU; hard timeouts; a crash fails only its job)"

    @classmethod
    def size(cls, config: StrategyConfig) -> int:
        return config.concurrency if config.concurrency is not None else config.available_cpus

    def __init__(self, config: StrategyConfig, hooks: Hooks | None = None) -> None:
        super().__init__(config, hooks)
        self.ctx = spawn_context(config)
        self.threads = SlotThreads(self.capacity, "poolq-process", ProcessSlot, on_start=self._start_child)

    def _new_child(self) -> PoolChild:
        return PoolChild(self.ctx, self.config.allowed_functions)

    def _start_child(self, slot: Slot[ProcessSlot]) -> None:
        slot.state.child = self._new_child()

    def start(self) -> None:
        self.threads.start()

    def submit(self, work: Work) -> None:
        self.threads.submit(work)

    def current_token(self) -> object:
        return self.threads.current()

    def _child(self) -> tuple[Slot[ProcessSlot], PoolChild]:
        slot = self.threads.current_slot("ProcessStrategy.perform")
        child = slot.state.child
        if child is None or not child.alive():
            if child is not None:
                child.kill()
            child = slot.state.child = self._new_child()
        return slot, child

    def _replace(self, slot: Slot[ProcessSlot], reason: str, stop: bool = False) -> None:
        old = slot.state.child
        if old is not None:
            old.stop() if stop else old.kill()
        slot.state.child = self._new_child()
        self._replaced(reason)

    def perform(self, job: Job, timeout: float) -> Any:
        slot, child = self._child()
        reply = call_child(child, job, timeout, timeout, lambda reason: self._replace(slot, reason), died_as="crashed")
        reason = recycle_reason(child.pid, child.jobs_done, self.config, "pool child")
        if reason is not None:
            self._replace(slot, reason, stop=True)
        return unpack_reply(job, reply)[1]

    def abandon(self, slot_token: object) -> bool:
        # Normally perform() kills an overdue child itself; this is the fallback.
        if isinstance(slot_token, Slot) and isinstance(slot_token.state, ProcessSlot):
            child = slot_token.state.child
            if child is not None:
                child.terminate("timed_out")
                return True
        return False

    def kill_running(self) -> None:
        for slot in self.threads.live_slots():
            child = slot.state.child
            if child is not None and child.alive():
                child.terminate("cold_stop")

    def child_pids(self) -> list[int]:
        children = [s.state.child for s in self.threads.live_slots()]
        return [c.pid for c in children if c is not None and c.pid]

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        self.threads.shutdown(wait, timeout)
        for slot in self.threads.live_slots():
            child = slot.state.child
            if child is None:
                continue
            try:
                child.stop() if wait else child.kill()
            except Exception:  # stopping must not turn a clean exit into a crash
                log.exception("could not stop pool child %d", child.pid)
