"""``thread``: a pool of threads in the worker process. Cheap in memory, shares one GIL.

A thread cannot be killed: an overdue job is failed by the monitor, its thread is abandoned and
replaced (:meth:`Strategy._runaway`), so the pool keeps its size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.strategies.base import Strategy, StrategyConfig
from worker.strategies.slots import Slot, SlotThreads, Work

if TYPE_CHECKING:
    from rq.job import Job

    from worker.hooks import Hooks


class ThreadStrategy(Strategy):
    """A pool of threads in the worker process. Cheap in memory, shares one GIL."""

    name = "thread"
    advice = "threads: for I/O-bound jobs (network, disk, sleeps); CPU-bound Python code is serialised by the GIL"

    @classmethod
    def size(cls, config: StrategyConfig) -> int:
        if config.concurrency is not None:
            return config.concurrency
        return config.available_cpus * config.threads_per_cpu

    def __init__(self, config: StrategyConfig, hooks: Hooks | None = None) -> None:
        super().__init__(config, hooks)
        self.threads: SlotThreads[None] = SlotThreads(self.capacity, "poolq-thread", lambda: None)

    def start(self) -> None:
        self.threads.start()

    def submit(self, work: Work) -> None:
        self.threads.submit(work)

    def perform(self, job: Job, timeout: float) -> Any:
        return job.perform()

    def current_token(self) -> object:
        return self.threads.current()

    def abandon(self, slot_token: object) -> bool:
        # The job has been failed by the caller; its thread is dropped when the function returns.
        if isinstance(slot_token, Slot) and not slot_token.retired:
            self._runaway(self.threads, slot_token, "")
        return False

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        self.threads.shutdown(wait, timeout)
