"""The monitor thread: what must happen on a clock, whatever the jobs are doing.

Every 0.25 s it fails jobs past their timeout that their strategy could not stop (threads
cannot be killed); every ``heartbeat_interval`` it beats for the worker, its executions and
their jobs in one round trip; every second it runs RQ's scheduler (Retry intervals,
``enqueue_in``); every ``recovery_interval`` it recovers dead workers' jobs; every
``maintenance_interval`` it runs RQ's registry clean-up. When the warm drain runs out of time
it sends this process SIGTERM: the second signal, a cold stop. A Redis error skips one round.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis.exceptions
from rq.scheduler import RQScheduler
from rq.timeouts import JobTimeoutException
from rq.utils import now

from worker import rqcompat

if TYPE_CHECKING:
    from rq.worker import BaseWorker

    from worker.inflight import InFlight, Ticket
    from worker.lifecycle.retrying import StopState
    from worker.lifecycle.steps import JobLifecycle
    from worker.strategies import Strategy

log = logging.getLogger("worker")

# An overdue job gets this much longer for its strategy to stop it before the monitor fails it.
TIMEOUT_GRACE_SECONDS = 0.5
# After a strategy said it stopped an overdue job, how long before the monitor fails it anyway.
STOPPED_JOB_GRACE_SECONDS = 4.0


class Monitor:
    """Runs :meth:`loop` in a daemon thread between :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        w: BaseWorker,
        strategy: Strategy,
        inflight: InFlight,
        lifecycle: JobLifecycle,
        stop: StopState,
        recover: Callable[[], None],
        *,
        heartbeat_interval: float,
        worker_ttl: int,
        recovery_interval: float,
        maintenance_interval: float,
        serializer: object,
    ) -> None:
        self.w = w
        self.strategy = strategy
        self.inflight = inflight
        self.lifecycle = lifecycle
        self.stop_state = stop
        self.recover = recover
        self.heartbeat_interval = heartbeat_interval
        self.worker_ttl = worker_ttl
        self.recovery_interval = recovery_interval
        self.maintenance_interval = maintenance_interval
        self.scheduler = RQScheduler(
            w.queue_names(), connection=w.connection, serializer=serializer, logging_level=logging.WARNING
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.loop, name="poolq-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def loop(self) -> None:
        next_beat = next_maint = next_sched = next_recovery = time.monotonic()
        while not self._stop.wait(0.25):
            t = time.monotonic()
            try:
                stop = self.stop_state
                if stop.requested and not stop.cold and t >= stop.deadline:
                    # The warm drain ran out of time: what still runs is stopped and re-queued.
                    # First, so that Redis calls failing below cannot delay it.
                    os.kill(os.getpid(), signal.SIGTERM)
                self.enforce_timeouts(t)
                if t >= next_beat:
                    next_beat = t + self.heartbeat_interval
                    self.heartbeat_all()
                if t >= next_sched:
                    next_sched = t + 1.0
                    self.scheduler_tick()
                if t >= next_recovery:
                    next_recovery = t + self.recovery_interval
                    self.recover()
                if t >= next_maint:
                    next_maint = t + self.maintenance_interval
                    self.w.clean_registries()
            except redis.exceptions.RedisError as e:
                log.warning("monitor: Redis error (%s); will retry", e)
            except Exception:
                log.exception("monitor: unexpected error (ignored)")

    def enforce_timeouts(self, t: float) -> None:
        """Fail jobs past their timeout that their strategy did not stop (threads cannot be killed)."""
        for ticket in self.inflight.tickets():
            if ticket.deadline is None or ticket.claimed or t < ticket.deadline + TIMEOUT_GRACE_SECONDS:
                continue
            if not ticket.abandoned:
                ticket.abandoned = True
                if self.strategy.abandon(ticket.token):
                    continue  # the strategy stopped it and its slot will record the timeout
            elif t < ticket.deadline + STOPPED_JOB_GRACE_SECONDS:
                continue
            if not ticket.claim():
                continue
            if rqcompat.callback_name(ticket.job, "failure"):
                # Its failure callback may take up to its timeout (60 s by default): not in this
                # thread, whose heartbeats keep the worker from being taken for dead.
                args = (ticket, t - ticket.started)
                threading.Thread(target=self.fail_overdue, args=args, name="poolq-overdue", daemon=True).start()
            else:
                self.fail_overdue(ticket, t - ticket.started)

    def fail_overdue(self, ticket: Ticket, run_seconds: float) -> None:
        try:
            raise JobTimeoutException(
                f"Task exceeded maximum timeout value ({ticket.job.timeout} seconds); "
                f"the {self.strategy.name} slot running it could not be stopped and was abandoned"
            )
        except JobTimeoutException:
            self.lifecycle.fail(ticket, sys.exc_info(), run_seconds)
        self.inflight.end(ticket)

    def heartbeat_all(self) -> None:
        """Worker, executions and jobs in one round trip (RQ's maintain_heartbeats, batched)."""
        tickets = [tk for tk in self.inflight.tickets() if tk.execution is not None]
        ttl = int(self.heartbeat_interval) + 60
        with self.w.connection.pipeline() as p:
            self.w.heartbeat(self.worker_ttl + 60, pipeline=p)
            index: list[Ticket] = []
            for tk in tickets:
                assert tk.execution is not None
                tk.execution.heartbeat(tk.job.started_job_registry, ttl, pipeline=p)
                index.append(tk)
                tk.job.heartbeat(now(), ttl, pipeline=p)
            results = p.execute()
        # A job deleted right after it finished (result_ttl=0) would be re-created by the hset.
        per = (len(results) - 3) // max(1, len(tickets)) if tickets else 0
        stale = [tk.job.key for i, tk in enumerate(index) if per and results[3 + per * (i + 1) - 1] == 1]
        if stale:
            self.w.connection.delete(*stale)

    def scheduler_tick(self) -> None:
        """Move due scheduled jobs (Retry intervals, enqueue_in) to their queues."""
        try:
            if self.scheduler.acquire_locks():
                self.scheduler.enqueue_scheduled_jobs()
        except redis.exceptions.RedisError as e:
            log.debug("scheduler tick failed: %s", e)
