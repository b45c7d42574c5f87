"""The worker: one RQ worker identity, many executions at once.

``PoolWorker`` is an RQ 3 ``BaseWorker``: registration, heartbeats, executions, results,
retries, dependents and registries all go through RQ's own functions, so stock tooling
(``rq info``, ``Job.fetch``, ``FailedJobRegistry``) reads a poolq worker like any other.
What it adds is concurrency without prefetch: a job is dequeued only when a slot is free
(worker/inflight.py), and handed to the strategy, which decides where its function runs.

This module keeps registration, the dequeue loop, signals and the drain. The rooms it uses:
- worker/lifecycle/: taking jobs off the queues (``dequeue``), the RQ writes of each step of a
  job (``steps``: prepare, finish, fail, re-queue, reject), riding out Redis (``retrying``);
- worker/inflight.py: the running jobs, each ended exactly once, and their slots;
- worker/monitor.py: the clock (heartbeats, timeouts, scheduler, recovery, maintenance).

Three threads matter:
- the main thread runs :meth:`PoolWorker._loop` (dequeue) and receives signals;
- slot threads (owned by the strategy) run :meth:`PoolWorker._run`, the lifecycle of one job;
- the monitor thread (worker/monitor.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import redis.exceptions
from rq.defaults import DEFAULT_FAILURE_TTL, DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.utils import now, utcformat
from rq.worker import BaseWorker, DequeueStrategy, WorkerStatus

from worker import defaults, events, rqcompat
from worker.allowlist import allowlist_for
from worker.callbacks import CallbackDeadline
from worker.errors import ColdShutdown
from worker.guarded_job import guarded_job_class
from worker.hooks import HookChain
from worker.inflight import InFlight, Ticket
from worker.jobdata import bounded_job_class, harden_rq_reads
from worker.lifecycle.clients import ThreadClients
from worker.lifecycle.dequeue import Dequeuer
from worker.lifecycle.retrying import RedisRetry, StopState
from worker.lifecycle.steps import JobLifecycle
from worker.monitor import Monitor
from worker.recovery import WORKER_TTL_FIELD, Recovery, pid_exists
from worker.strategies import Strategy
from worker.webhooks import WebhookHosts

if TYPE_CHECKING:
    from worker.cpus import CpuInfo

log = logging.getLogger("worker")

# Most jobs one dequeue round trip takes: one per free slot (never more: no prefetch), capped.
DEQUEUE_BATCH = 32


class PoolWorker(BaseWorker):
    """An RQ worker that runs up to ``strategy.capacity`` jobs at once."""

    log_result_lifespan = False
    # RQ only uses the worker's death penalty class around job callbacks, and its default
    # (SIGALRM) works in the main thread only; the callbacks' timeouts are enforced by
    # GuardedJob's callback wrappers instead (worker/callbacks.py).
    death_penalty_class = CallbackDeadline

    def __init__(
        self,
        queues: list[str],
        connection: redis.Redis[bytes],
        strategy: Strategy,
        *,
        name: str | None = None,
        serializer: Any = None,
        allowed_functions: list[str] | None = None,
        webhook_hosts: list[str] | None = None,
        cpu_info: CpuInfo | None = None,
        hooks: HookChain | None = None,
        default_result_ttl: int = defaults.RESULT_TTL_SECONDS,
        default_job_timeout: int = defaults.JOB_TIMEOUT_SECONDS,
        heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL_SECONDS,
        worker_ttl: int = defaults.WORKER_TTL_SECONDS,
        maintenance_interval: float = defaults.MAINTENANCE_INTERVAL_SECONDS,
        shutdown_timeout: float = defaults.SHUTDOWN_TIMEOUT_SECONDS,
        max_redeliveries: int = defaults.MAX_REDELIVERIES,
        recovery_interval: float = defaults.RECOVERY_INTERVAL_SECONDS,
        max_job_bytes: int = defaults.MAX_JOB_BYTES,
    ) -> None:
        # Every job hash this process decodes is capped (worker/jobdata.py), RQ's own reads too.
        self.max_job_bytes = max_job_bytes
        harden_rq_reads(max_job_bytes)
        rqcompat.bound_registry_callbacks(CallbackDeadline)
        self.allowed_functions = allowed_functions or list(defaults.ALLOWED_FUNCTIONS)
        self.webhook_hosts = WebhookHosts(webhook_hosts or ())
        super().__init__(
            queues,
            name=name,
            connection=connection,
            serializer=serializer,
            # Jobs resolve their function, callbacks and webhooks through the allowlists.
            job_class=bounded_job_class(
                guarded_job_class(allowlist_for(tuple(self.allowed_functions)), self.webhook_hosts), max_job_bytes
            ),
            default_result_ttl=default_result_ttl,
            worker_ttl=worker_ttl,
            job_monitoring_interval=max(1, int(heartbeat_interval)),
            maintenance_interval=int(maintenance_interval),
            log_job_description=False,
        )
        # RQ logs several lines per job at INFO; at thousands of jobs/s that is the bottleneck.
        self.log = logging.getLogger("worker.rq")
        self.strategy = strategy
        self.cpu_info = cpu_info
        self.hooks = hooks or HookChain()
        self.default_job_timeout = default_job_timeout
        self.heartbeat_interval = heartbeat_interval
        self.shutdown_timeout = shutdown_timeout
        self.recovery = Recovery(
            connection,
            self.queues,
            max_redeliveries=max_redeliveries,
            stale_after_seconds=worker_ttl,
            failure_ttl=DEFAULT_FAILURE_TTL,
            serializer=self.serializer,
            job_class=self.job_class,
            worker_name=self.name,
        )
        self.recovery_interval = recovery_interval
        self.inflight = InFlight(strategy.capacity)
        self._batch = strategy.dequeue_batch(DEQUEUE_BATCH)
        self._client = ThreadClients(connection)  # this thread's own client
        self.stop = StopState()
        self.retry = RedisRetry(connection, self.stop, lambda: len(self.inflight), self.hooks, self)
        self.lifecycle = JobLifecycle(
            self,
            self,
            self.hooks,
            self.retry,
            self.inflight,
            self._client,
            strategy.pool_of,
            self.allowed_functions,
        )
        self.dequeuer = Dequeuer(self, self._client, self.retry, self.lifecycle.reject_malformed, max_job_bytes)
        self.monitor = Monitor(
            self,
            strategy,
            self.inflight,
            self.lifecycle,
            self.stop,
            self.recover,
            heartbeat_interval=heartbeat_interval,
            worker_ttl=worker_ttl,
            recovery_interval=recovery_interval,
            maintenance_interval=maintenance_interval,
            serializer=serializer,
        )
        self.jobs_started = 0

    # ------------------------------------------------------------------ what hooks see (WorkerView)

    @property
    def in_flight(self) -> int:
        return len(self.inflight)

    @property
    def strategy_name(self) -> str:
        return self.strategy.name

    @property
    def capacity(self) -> int:
        return self.strategy.capacity

    def child_pids(self) -> list[int]:
        return self.strategy.child_pids()

    # ------------------------------------------------------------------ the loop

    def work(
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        dequeue_strategy: DequeueStrategy = DequeueStrategy.DEFAULT,
    ) -> bool:
        """Register, start the pool, dequeue until stopped (or, with ``burst``, until idle).

        RQ's signature; only ``burst`` is used (logging is the CLI's, the scheduler always runs
        in the monitor, the queues are read in RQ's default order)."""
        self._install_signal_handlers()
        self.bootstrap(logging_level=None)
        self.strategy.start()
        self.set_state(WorkerStatus.IDLE)
        self.hooks.on_worker_start(self)
        self.monitor.start()
        self.monitor.scheduler_tick()
        try:
            self.recover()
        except redis.exceptions.RedisError as e:  # Redis went away just after start: the monitor retries
            log.warning("recovery at start failed (%s); will retry", e)
        worked = False
        try:
            worked = self._loop(burst)
        except ColdShutdown:
            worked = True
        finally:
            try:
                self._finish()
            except ColdShutdown:  # a signal during the drain itself: it is already cold
                self._finish()
        return worked

    def _loop(self, burst: bool) -> bool:
        worked = False
        inflight = self.inflight
        while not self.stop.requested:
            if not inflight.take(timeout=0.5):
                continue
            if not self.strategy.admit(0.5):  # auto: a dequeued job still waits for its sub-pool
                inflight.give_back()
                continue
            free = 1  # every slot free right now: one dequeue round trip fills them all
            while free < self._batch and inflight.take():
                free += 1
            try:
                jobs, more = self.dequeuer.dequeue(burst, free)
            except BaseException:
                inflight.give_back(free)
                raise
            inflight.give_back(free - len(jobs))
            for job, queue in jobs:
                self._start(job, queue)
            if jobs:
                worked = True
                continue
            if more:  # a bad job was rejected or Redis hiccuped: the queues may hold more
                continue
            if not inflight and self.get_state() != WorkerStatus.IDLE:
                with contextlib.suppress(redis.exceptions.RedisError):
                    self.set_state(WorkerStatus.IDLE)
            if burst and not inflight.wait_changed(0.5):
                log.info("burst: queues empty and nothing in flight, quitting")
                break
        return worked

    def _start(self, job: Job, queue: Queue) -> None:
        enq = job.enqueued_at.timestamp() if job.enqueued_at else None
        ticket = Ticket(job=job, queue=queue, enqueued_at=enq)
        self.inflight.add(ticket)
        self.jobs_started += 1
        self.strategy.submit(lambda: self._run(ticket))

    # ------------------------------------------------------------------ one job

    def _run(self, ticket: Ticket) -> None:
        """The lifecycle of one job, in a slot thread (or the main thread for inline)."""
        ticket.token = self.strategy.current_token()
        self.retry.mark_in_job(True)
        try:
            self.hooks.on_job_start(self, events.JobStarted(ticket.job, ticket.queue.name))
            self.perform_job(ticket.job, ticket.queue, ticket.execution, ticket)
        finally:
            self.retry.mark_in_job(False)
            self.inflight.end(ticket)

    def perform_job(self, job: Job, queue: Queue, execution: Execution | None, ticket: Ticket | None = None) -> bool:
        """RQ's ``perform_job`` with the function call delegated to the strategy.

        The one override point for running a job: ``JobLifecycle.perform`` (worker/lifecycle/steps.py).
        """
        if ticket is None:
            ticket = next(t for t in self.inflight.tickets() if t.execution is execution)
        return self.lifecycle.perform(ticket, self.strategy.perform, self.default_job_timeout)

    # ------------------------------------------------------------------ registration, recovery

    def recover(self) -> None:
        """Re-queue (or fail as abandoned) the jobs of dead workers; see worker/recovery.py."""
        stats = self.recovery.run()
        for queue, _, func in stats.requeued:
            self.hooks.on_recovered(self, events.Recovered("requeued", queue, func))
        for queue, _, func in stats.abandoned:
            self.hooks.on_recovered(self, events.Recovered("abandoned", queue, func))
        for queue, _ in stats.refused:
            self.hooks.on_malformed_job(self, events.MalformedJob(queue))

    def register_birth(self) -> None:
        """Take over from a dead earlier life under the same name before registering.

        A container restarted after kill -9 comes back with the same hostname and pid (1), so
        the same default name: its old hash still looks alive for a while, and RQ would refuse
        to start. Same host and (our pid, or a pid no longer running) means it is dead: mark it
        so, recover its jobs, then register.
        """
        host, pid, death = self.connection.hmget(self.key, ["hostname", "pid", "death"])
        if host is not None and death is None and host.decode() == self.hostname:
            old_pid = int(pid or 0)
            if old_pid == os.getpid() or not pid_exists(old_pid):
                log.warning(
                    "an earlier worker named %s on this host (pid %d) died; recovering its jobs", self.name, old_pid
                )
                self.connection.hset(self.key, "death", utcformat(now()))
                self.recover()
        register: Callable[[], None] = super().register_birth  # RQ's is untyped
        register()

    def serialize(self) -> dict[str, Any]:
        """RQ's worker hash, plus what recovery and dashboards need to read about this worker."""
        data: dict[str, Any] = super().serialize()
        data[WORKER_TTL_FIELD] = self.worker_ttl
        data["poolq_strategy"] = self.strategy.name
        data["poolq_concurrency"] = self.strategy.capacity
        return data

    # ------------------------------------------------------------------ stopping

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags here: the main thread may be inside a Redis call.
        stop = self.stop
        if not stop.requested:
            stop.requested = True
            stop.deadline = time.monotonic() + self.shutdown_timeout
            rqcompat.note_shutdown_requested(self)
            log.info(
                "warm shutdown (%s): no new jobs; waiting up to %.0f s for %d running; signal again for cold",
                signal.Signals(signum).name,
                self.shutdown_timeout,
                self.in_flight,
            )
        elif not stop.cold:
            stop.cold = True
            log.warning("cold shutdown (%s): stopping running jobs and re-queueing them", signal.Signals(signum).name)
            self.strategy.cold_stop()  # inline: raises ColdShutdown into the job running in this thread

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._on_signal(signum or signal.SIGTERM, frame)

    def _finish(self) -> None:
        """Drain (warm) or stop (cold), re-queue what did not finish, register death.

        With Redis unreachable this ends within the shutdown timeout and a few seconds: nothing
        waits for Redis past the stop deadline (``RedisRetry.stop_retrying``), and what could not
        be written is left to recovery, said in one log line.
        """
        stop, retry = self.stop, self.retry
        stop.stopping = True
        if not stop.requested:  # burst end, or an error: nothing to wait for beyond in-flight jobs
            stop.deadline = time.monotonic() + self.shutdown_timeout
        self.inflight.wait_empty(stop.deadline, lambda: stop.cold)
        leftover = self.inflight.tickets()
        if leftover:
            log.warning("%d job(s) did not finish in time: re-queueing them", len(leftover))
            for ticket in leftover:  # claim them first, so a killed child is not taken for a crash
                self.lifecycle.requeue(ticket)
            self.strategy.kill_running()
        self.strategy.shutdown(wait=not leftover, timeout=2.0)
        self.monitor.stop(2.0)
        self.hooks.on_worker_stop(self)
        self._client.close()
        registered = False
        if not retry.redis_down_at_stop:
            try:
                self.teardown()
                registered = True
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                retry.redis_down_at_stop = True
            except redis.exceptions.RedisError as e:
                log.error("could not register worker death: %s", e)
        if retry.redis_down_at_stop:
            log.warning(
                "Redis unreachable while stopping: %d job(s) left to recovery (they stay in the started registry "
                "or the intermediate list; a live worker re-queues them once this worker's heartbeat is %d s old)%s",
                retry.left_to_recovery,
                self.worker_ttl,
                "" if registered else "; worker death not registered",
            )

    def procline(self, message: str) -> None:
        """RQ sets the process title per job; from many threads that is noise and a syscall each."""

    def own_pid(self) -> int:
        return os.getpid()
