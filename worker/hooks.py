"""Extension points of the worker, as no-op hooks (the shape of Dramatiq's middleware).

A plug-in (metrics, tracing, ...) subclasses :class:`Hooks` and overrides the methods of the
events it cares about (worker/events.py). The worker calls hooks through :class:`HookChain`,
which logs and swallows any exception (an observer must never fail a job or stop the worker)
and calls the end hooks (``on_job_end``, ``on_worker_stop``) in reverse order, so a plug-in
that wraps others sees their ends inside its own, as Dramatiq's ``after_*`` hooks do.

Hooks see the worker through :class:`WorkerView`, a few read-only figures, never the
``PoolWorker`` itself: a plug-in cannot come to depend on the dequeue loop's insides.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from worker import events

if TYPE_CHECKING:
    import redis
    from rq.queue import Queue

log = logging.getLogger(__name__)


class WorkerView(Protocol):
    """What a hook may read about the worker (``PoolWorker`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def strategy_name(self) -> str: ...

    @property
    def capacity(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def queues(self) -> list[Queue]: ...

    @property
    def connection(self) -> redis.Redis[bytes]: ...

    def child_pids(self) -> list[int]: ...


class Hooks:
    """No-op base. Every method is called from worker threads: keep them cheap and thread-safe.

    ``worker`` is None for events a strategy reports (it does not know the worker).
    """

    def emit(self, worker: WorkerView | None, event: events.Event) -> None:
        """Call the method named by the event (``event.hook``)."""
        getattr(self, event.hook)(worker, event)

    def on_worker_start(self, worker: WorkerView) -> None:
        """After the worker registered and its pool started."""

    def on_worker_stop(self, worker: WorkerView) -> None:
        """Before the worker registers its death."""

    def on_job_start(self, worker: WorkerView, event: events.JobStarted) -> None:
        """A job was dequeued and is about to run."""

    def on_job_end(self, worker: WorkerView, event: events.JobEnded) -> None:
        """A job execution ended (``event.status`` is one of ``events.END_STATUSES``)."""

    def on_child_replaced(self, worker: WorkerView | None, event: events.ChildReplaced) -> None:
        """A pool child was replaced."""

    def on_runaway_thread(self, worker: WorkerView | None, event: events.RunawayThread) -> None:
        """A thread-pool job overran its timeout and its thread was abandoned."""

    def on_redis_error(self, worker: WorkerView | None, event: events.RedisError) -> None:
        """A Redis error was ridden out."""

    def on_malformed_job(self, worker: WorkerView | None, event: events.MalformedJob) -> None:
        """A job whose hash could not be loaded was failed."""

    def on_recovered(self, worker: WorkerView | None, event: events.Recovered) -> None:
        """A dead worker's job was re-queued or failed as abandoned."""

    def on_route_changed(self, worker: WorkerView | None, event: events.RouteChanged) -> None:
        """auto: a function moved to another sub-pool."""

    def on_left_to_recovery(self, worker: WorkerView | None, event: events.LeftToRecovery) -> None:
        """A job's outcome could not be written while stopping; recovery will see to it."""


class HookChain(Hooks):
    """Calls each hook in order (end hooks in reverse); a failing hook is logged, never raised."""

    def __init__(self, hooks: Sequence[Hooks] = ()) -> None:
        self.hooks = list(hooks)

    def _call(self, name: str, reverse: bool, *args: Any) -> None:
        for hook in reversed(self.hooks) if reverse else list(self.hooks):
            try:
                getattr(hook, name)(*args)
            except Exception:
                log.exception("hook %s.%s failed (ignored)", type(hook).__name__, name)

    def emit(self, worker: WorkerView | None, event: events.Event) -> None:
        self._call(event.hook, False, worker, event)

    def on_worker_start(self, worker: WorkerView) -> None:
        self._call("on_worker_start", False, worker)

    def on_worker_stop(self, worker: WorkerView) -> None:
        self._call("on_worker_stop", True, worker)

    def on_job_start(self, worker: WorkerView, event: events.JobStarted) -> None:
        self._call("on_job_start", False, worker, event)

    def on_job_end(self, worker: WorkerView, event: events.JobEnded) -> None:
        self._call("on_job_end", True, worker, event)

    def on_child_replaced(self, worker: WorkerView | None, event: events.ChildReplaced) -> None:
        self._call("on_child_replaced", False, worker, event)

    def on_runaway_thread(self, worker: WorkerView | None, event: events.RunawayThread) -> None:
        self._call("on_runaway_thread", False, worker, event)

    def on_redis_error(self, worker: WorkerView | None, event: events.RedisError) -> None:
        self._call("on_redis_error", False, worker, event)

    def on_malformed_job(self, worker: WorkerView | None, event: events.MalformedJob) -> None:
        self._call("on_malformed_job", False, worker, event)

    def on_recovered(self, worker: WorkerView | None, event: events.Recovered) -> None:
        self._call("on_recovered", False, worker, event)

    def on_route_changed(self, worker: WorkerView | None, event: events.RouteChanged) -> None:
        self._call("on_route_changed", False, worker, event)

    def on_left_to_recovery(self, worker: WorkerView | None, event: events.LeftToRecovery) -> None:
        self._call("on_left_to_recovery", False, worker, event)
