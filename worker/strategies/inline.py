"""``inline``: one job at a time in the worker's main thread, as RQ's SimpleWorker: the baseline."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from worker.errors import ColdShutdown
from worker.strategies.base import Strategy, StrategyConfig
from worker.strategies.slots import Work

if TYPE_CHECKING:
    from rq.job import Job

    from worker.hooks import Hooks


class InlineStrategy(Strategy):
    """One job at a time in the worker's main thread: RQ's SimpleWorker, the baseline."""

    name = "inline"
    advice = "one job at a time in the worker process (the baseline to compare against)"

    @classmethod
    def size(cls, config: StrategyConfig) -> int:
        return 1

    def __init__(self, config: StrategyConfig, hooks: Hooks | None = None) -> None:
        super().__init__(config, hooks)
        self._busy = False

    def submit(self, work: Work) -> None:
        self._busy = True
        try:
            work()
        finally:
            self._busy = False

    def cold_stop(self) -> None:
        # The signal handler runs in the main thread, where the job runs: interrupt it there.
        if self._busy and threading.current_thread() is threading.main_thread():
            raise ColdShutdown()

    def perform(self, job: Job, timeout: float) -> Any:
        # SIGALRM interrupts Python code in the main thread, as RQ's SimpleWorker does.
        if threading.current_thread() is threading.main_thread():
            with UnixSignalDeathPenalty(max(1, round(timeout)), JobTimeoutException, job_id=job.id):
                return job.perform()
        return job.perform()

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        pass
