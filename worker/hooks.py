"""Extension points of the worker, as no-op hooks (the shape of Dramatiq's middleware).

A plug-in (metrics, tracing, ...) subclasses :class:`Hooks` and overrides what it needs.
The worker calls hooks through :class:`HookChain`, which logs and swallows any exception:
an observer must never fail a job or stop the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rq.job import Job

    from worker.pool_worker import PoolWorker

log = logging.getLogger(__name__)


class Hooks:
    """No-op base. Every method is called from worker threads: keep them cheap and thread-safe."""

    def on_worker_start(self, worker: PoolWorker) -> None:
        """After the worker registered and its pool started."""

    def on_worker_stop(self, worker: PoolWorker) -> None:
        """Before the worker registers its death."""

    def on_job_start(self, worker: PoolWorker, job: Job, queue_name: str) -> None:
        """A job was dequeued and is about to run."""

    def on_job_end(
        self,
        worker: PoolWorker,
        job: Job,
        queue_name: str,
        status: str,
        run_seconds: float,
        wait_seconds: float | None,
        total_seconds: float | None,
        pool: str,
    ) -> None:
        """A job execution ended.

        ``status`` is one of finished, failed, timed_out, crashed, retried, abandoned,
        requeued, rejected. ``pool`` names the pool that ran it (the strategy, or for
        composite strategies the sub-pool).
        """

    def on_event(self, worker: PoolWorker | None, event: str, **fields: Any) -> None:
        """A counted event without a job (child_replaced, runaway_thread, redis_error...)."""


class HookChain(Hooks):
    """Calls each hook in order; a failing hook is logged, never raised."""

    def __init__(self, hooks: Sequence[Hooks] = ()) -> None:
        self.hooks = list(hooks)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, name)(*args, **kwargs)
            except Exception:
                log.exception("hook %s.%s failed (ignored)", type(hook).__name__, name)

    def on_worker_start(self, worker: PoolWorker) -> None:
        self._call("on_worker_start", worker)

    def on_worker_stop(self, worker: PoolWorker) -> None:
        self._call("on_worker_stop", worker)

    def on_job_start(self, worker: PoolWorker, job: Job, queue_name: str) -> None:
        self._call("on_job_start", worker, job, queue_name)

    def on_job_end(
        self,
        worker: PoolWorker,
        job: Job,
        queue_name: str,
        status: str,
        run_seconds: float,
        wait_seconds: float | None,
        total_seconds: float | None,
        pool: str,
    ) -> None:
        self._call("on_job_end", worker, job, queue_name, status, run_seconds, wait_seconds, total_seconds, pool)

    def on_event(self, worker: PoolWorker | None, event: str, **fields: Any) -> None:
        self._call("on_event", worker, event, **fields)
