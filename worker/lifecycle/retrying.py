"""Riding out a Redis outage without losing a job's outcome, and knowing when to stop trying.

While the worker runs, a lifecycle step whose Redis call fails is retried with backoff for
up to :data:`REDIS_OUTAGE_BUDGET_SECONDS`: a job's outcome is worth the wait. Once the worker
is stopping, nothing may hold the stop past its deadline: :meth:`RedisRetry.stop_retrying`
is the one answer every retry loop asks (this module's and redis-py's, through
worker/outage.py's gate), and a step it gives up on raises :class:`LeftToRecovery`: the job
stays where recovery finds it, counted and said in one line at the end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.exceptions

from worker import defaults, events
from worker.outage import LeftToRecovery, StopAwareRetry, StopGate

if TYPE_CHECKING:
    from worker.hooks import Hooks, WorkerView

log = logging.getLogger("worker")

# How long a finished job's outcome waits for Redis to come back before it is given up
# (the job then stays in the started registry and RQ's clean-up fails it as abandoned).
REDIS_OUTAGE_BUDGET_SECONDS = 600.0


@dataclass
class StopState:
    """Where the worker is on its way out: asked to stop (warm), cold, draining."""

    requested: bool = False  # a first signal: no new jobs
    cold: bool = False  # a second signal: stop what runs
    deadline: float = float("inf")  # monotonic: the warm drain ends here
    stopping: bool = False  # the drain has begun (also after a burst or an error: no signal)

    @property
    def any(self) -> bool:
        return self.requested or self.stopping


class RedisRetry:
    """The retry policy of the lifecycle steps, and the count of outcomes left to recovery."""

    def __init__(
        self,
        connection: redis.Redis[bytes],
        stop: StopState,
        running: Callable[[], int],
        hooks: Hooks,
        worker: WorkerView,
    ) -> None:
        self.stop = stop
        self._running = running
        self._hooks = hooks
        self._worker = worker
        self._local = threading.local()  # in_job: this thread is running a job's lifecycle
        self._lock = threading.Lock()
        self.left_to_recovery = 0
        self.redis_down_at_stop = False
        # The client's retries (worker/cli.py connect) and this worker's own ask the same gate.
        retry = connection.connection_pool.connection_kwargs.get("retry")
        self.gate = retry.gate if isinstance(retry, StopAwareRetry) else StopGate()
        self.gate.bind(self.stop_retrying, lambda: self.stop.deadline)

    def mark_in_job(self, value: bool) -> None:
        """Called around a job's lifecycle by the thread running it (also the main one, inline)."""
        self._local.in_job = value

    def run(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, retried through connection errors as long as :meth:`stop_retrying` allows."""
        deadline = time.monotonic() + REDIS_OUTAGE_BUDGET_SECONDS
        delay = 0.2
        while True:
            try:
                return fn()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                if isinstance(e, LeftToRecovery) or self.stop_retrying():
                    raise LeftToRecovery(f"Redis unavailable while stopping: {e}") from e
                if time.monotonic() >= deadline:
                    raise
                log.warning("Redis unavailable (%s); retrying in %.1f s", e, delay)
                self.redis_error()
                self.gate.nap(delay)
                delay = min(delay * 2, defaults.REDIS_BACKOFF_MAX_SECONDS)

    def stop_retrying(self) -> bool:
        """Whether a failing Redis command should give up now instead of retrying (worker/outage.py).

        Never while the worker runs. Once it is stopping: at once when no job runs any more (no
        outcome left to record), after a second signal, and in the main thread outside a job
        (the dequeue loop and the drain: nothing there is worth the wait); other threads
        (running jobs' outcomes, heartbeats, the metrics sampler) until the stop deadline.
        """
        stop = self.stop
        if not stop.any:
            return False
        if stop.cold or not self._running() or time.monotonic() >= stop.deadline:
            return True
        in_job = getattr(self._local, "in_job", False)
        return threading.current_thread() is threading.main_thread() and not in_job

    def redis_error(self) -> None:
        self._hooks.on_redis_error(self._worker, events.RedisError())

    def note_left_to_recovery(self) -> None:
        with self._lock:
            self.left_to_recovery += 1
            self.redis_down_at_stop = True
        self._hooks.on_left_to_recovery(self._worker, events.LeftToRecovery())
