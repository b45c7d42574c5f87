"""The steps of one job's RQ lifecycle: prepare, finish, fail, re-queue, reject.

Every step writes what RQ's own worker writes, built by RQ's own functions (``Execution.create``,
``Job.prepare_for_execution``, ``Job._handle_success``, ``BaseWorker._finalize_failure``, ...:
their private members through worker/rqcompat.py), so stock tooling reads the outcome as
RQ's. Where RQ takes several round trips, the same commands are recorded into a pipeline that
is never sent and applied as one Lua call (``APPLY_LUA``): atomically, in one round trip.

:class:`JobLifecycle` knows an RQ ``BaseWorker`` (name, state, counters, executions), never the
``PoolWorker`` around it: the dequeue loop, the monitor and the drain call its steps.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis
import redis.exceptions
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.executions import Execution
from rq.job import JobStatus, Retry
from rq.rate_limit import release_slot
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import WorkerStatus

from worker import events, rqcompat
from worker.allowlist import check_allowed
from worker.errors import (
    ChildCrashed,
    ColdShutdown,
    FunctionNotAllowed,
    MalformedJob,
    RequeueJob,
    UnserializableResult,
    WrongTypeKey,
)
from worker.guarded_job import GuardedJob
from worker.lifecycle.dequeue import IdTooLong
from worker.lifecycle.scripts import APPLY_LUA
from worker.outage import LeftToRecovery
from worker.quarantine import printable, refuse
from worker.recovery import SEEN_KEY

if TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue
    from rq.worker import BaseWorker

    from worker.hooks import Hooks, WorkerView
    from worker.inflight import InFlight, Ticket
    from worker.lifecycle.retrying import RedisRetry

log = logging.getLogger("worker")

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


class Preempted(Exception):
    """The job left the intermediate list before its slot registered it (a recovery took it)."""


class Quarantined(Preempted):
    """The job could not be started (a key of it has the wrong type); it was failed alone."""


def status_of(exc: BaseException | None) -> events.EndStatus:
    """The bounded ``status`` label for an ended job."""
    if exc is None:
        return "finished"
    if isinstance(exc, JobTimeoutException):
        return "timed_out"
    if isinstance(exc, ChildCrashed):
        return "crashed"
    if isinstance(exc, FunctionNotAllowed):
        return "rejected"
    return "failed"


class JobLifecycle:
    """The lifecycle steps for the jobs of one RQ worker identity ``w``."""

    def __init__(
        self,
        w: BaseWorker,
        view: WorkerView,
        hooks: Hooks,
        retry: RedisRetry,
        inflight: InFlight,
        client: Callable[[], redis.Redis[bytes]],
        pool_of: Callable[[Job], str],
        allowed_functions: list[str],
    ) -> None:
        self.w = w
        self.view = view
        self.hooks = hooks
        self.retry = retry
        self.inflight = inflight
        self.connection: redis.Redis[bytes] = w.connection
        self._client = client
        self._pool_of = pool_of
        self.allowed_functions = allowed_functions
        self._apply_script = self.connection.register_script(APPLY_LUA)

    def perform(self, ticket: Ticket, run: Callable[[Job, float], Any], default_timeout: int) -> bool:
        """RQ's ``perform_job`` for one ticket, the function call being ``run(job, timeout)``.

        Preparation is RQ's ``prepare_execution`` and ``prepare_job_execution`` in one pipeline
        (:meth:`prepare`); success is RQ's writes in one Lua call (:meth:`finish_success`), or
        RQ's own ``_finalize_success`` for what that cannot do; failure is RQ's
        ``_finalize_failure`` (:meth:`fail`). True when the job finished here.
        """
        job, queue = ticket.job, ticket.queue
        t0 = time.perf_counter()
        try:
            self.prepare(ticket)  # retries its one round trip itself, idempotently
            job.started_at = now()
            self.admit(job)
            timeout = job.timeout or default_timeout
            limit = None if timeout == -1 else float(timeout)
            ticket.deadline = None if limit is None else time.monotonic() + limit
            return_value = run(job, limit if limit is not None else 1e9)
        except Preempted as e:
            log.warning("%s", e)
            ticket.claim()
            return False
        except ColdShutdown:
            self.requeue(ticket)
            raise
        except RequeueJob:  # stopped through no fault of its own (hybrid: an overdue sibling; cold stop)
            self.requeue(ticket)
            return False
        except Exception:
            if ticket.claim():
                self.fail(ticket, sys.exc_info(), time.perf_counter() - t0)
            return False
        if not ticket.claim():
            return False  # the monitor (timeout) or a drain (re-queue) already ended this job
        try:
            self.check_result(return_value)
            self.retry.run(lambda: self.finish_success(job, queue, ticket.execution, return_value))
        except Exception:  # e.g. a result the serializer cannot store
            self.fail(ticket, sys.exc_info(), time.perf_counter() - t0)
            return False
        self.report(ticket, None, time.perf_counter() - t0)
        return True

    def admit(self, job: Job) -> None:
        """Refuse, by name (nothing is imported), a job whose function or callbacks the allowlist
        does not admit, or a bound-method job. Where the function runs it is resolved under the
        allowlist too: ``GuardedJob.func`` in this process, the pool child otherwise."""
        if isinstance(job, GuardedJob):
            job.check_admissible()
        else:
            check_allowed(job.func_name, self.allowed_functions)

    def prepare(self, ticket: Ticket) -> None:
        """RQ's ``prepare_execution`` and ``prepare_job_execution``, in one round trip.

        RQ runs them as two pipelines (one in the worker, one in the work horse). Here the slot
        builds the same writes from RQ's own pieces into one pipeline: the execution
        (``Execution.create``: its hash, the per-job execution registry, the started registry,
        the worker's execution index), the worker's ``busy`` state (only when it changes),
        ``job.prepare_for_execution`` (status, started_at, worker_name, last_heartbeat),
        PERSIST of the job hash and the LREM from the queue's intermediate list. Left out:
        the worker heartbeat per job (the monitor thread beats every few seconds) and the
        job heartbeat HSET, which ``prepare_for_execution`` writes in the same HSET anyway.
        """
        job = ticket.job
        p = self.connection.pipeline(transaction=False)  # records the commands; never executed
        p.lrem(ticket.queue.intermediate_queue_key, 1, job.id)  # first: the guard
        execution = Execution.create(job, self.w.get_heartbeat_ttl(job), pipeline=p, worker_name=self.w.name)
        if self.w.get_state() != WorkerStatus.BUSY:
            self.w.set_state(WorkerStatus.BUSY, pipeline=p)
        job.prepare_for_execution(self.w.name, pipeline=p)
        p.persist(job.key)
        p.delete(SEEN_KEY.format(job.id))  # recovery's "stuck in the intermediate list" mark, if any
        # Built once, sent until Redis answers: a resend after a lost reply finds this execution's
        # hash and is a no-op, instead of being refused as "taken by a recovery" and leaving the
        # job registered as started but never run.
        argv = self._apply_args(p, guard="first")
        try:
            applied = self.retry.run(lambda: self._send_apply(argv, key=execution.key))
        except WrongTypeKey as e:  # nothing was written: the job is failed alone, as at dequeue
            self.reject_malformed(job.id, ticket.queue, e)
            raise Quarantined(f"job {job.id} was not started: {e}") from None
        if not applied:
            raise Preempted(f"job {job.id} left the intermediate list before it started; not running it")
        self.w.executions[execution.id] = execution
        ticket.execution = execution

    def _apply(self, recorded: redis.client.Pipeline[bytes], guard: str = "", key: str | None = None) -> bool:
        """Send the commands recorded in ``recorded`` as one Lua call (worker/lifecycle/scripts.py).

        One EVALSHA instead of MULTI, the commands and EXEC: the same writes, atomically, with
        one command to encode and one reply to parse. False when the guard refused (see the script).
        """
        return self._send_apply(self._apply_args(recorded, guard), key)

    @staticmethod
    def _apply_args(recorded: redis.client.Pipeline[bytes], guard: str) -> list[Any]:
        argv: list[Any] = [guard]
        for args, _options in recorded.command_stack:
            argv.append(len(args))
            argv.extend(args)
        recorded.reset()
        return argv

    def _send_apply(self, argv: list[Any], key: str | None = None) -> bool:
        """Raises :class:`WrongTypeKey` when the script found a key of the wrong type (nothing written)."""
        reply = self._apply_script(keys=[] if key is None else [key], args=argv, client=self._client())
        if isinstance(reply, bytes):
            raise WrongTypeKey(reply.decode(errors="replace"))
        return bool(reply)

    def finish_success(self, job: Job, queue: Queue, execution: Execution | None, return_value: Any) -> None:
        """RQ's ``_finalize_success`` for a plain job, in one round trip instead of four or five.

        RQ's path is ``handle_execution_ended`` (an HSET of ``last_heartbeat``), then
        ``handle_job_success``: WATCH the job's dependents key, SMEMBERS, MULTI, the writes,
        EXEC, with a Python retry loop on WatchError. Here the very same writes are built by
        RQ's own functions (``increment_successful_job_count``, ``increment_total_working_time``,
        ``Job._handle_success`` — job hash, ``Result`` stream entry with its TTL, finished
        registry —, ``Job.cleanup`` and ``cleanup_execution``) into a pipeline that is never
        sent; its commands go to one Lua call (:meth:`_apply`) that applies them only if the job
        has no dependents, atomically, as WATCH + MULTI/EXEC do. ``last_heartbeat`` is written by
        the job hash's save in the same call rather than by an HSET of its own.

        RQ's own ``_finalize_success`` still runs whenever this path would not behave the same:
        the job returned a ``Retry``, has a success callback, repeats, keeps no result
        (``result_ttl=0``: RQ then deletes the job, which reads first), or has dependents (the
        script then writes nothing). Webhooks and the rate-limit slot are handled as RQ does,
        after the writes.
        """
        assert execution is not None and job.started_at is not None  # set by prepare and perform_job
        result_ttl = job.get_result_ttl(self.w.default_result_ttl)
        if (
            isinstance(return_value, Retry)
            or rqcompat.callback_name(job, "success")
            or (job.repeats_left is not None and job.repeats_left > 0)
            or result_ttl == 0
        ):
            rqcompat.finalize_success(self.w, job, queue, execution, return_value)
            return
        job.ended_at = job.last_heartbeat = now()
        rqcompat.mark_finished(job, return_value)
        p = self.connection.pipeline(transaction=False)  # records the commands; never executed
        self.w.increment_successful_job_count(pipeline=p)
        self.w.increment_total_working_time(job.ended_at - job.started_at, p)
        rqcompat.handle_success(job, result_ttl, p, self.w.name, execution, job.ended_at)
        job.cleanup(result_ttl, pipeline=p, remove_from_queue=False)
        self.w.cleanup_execution(job, pipeline=p, execution=execution)
        try:
            applied = self._apply(p, guard="absent", key=job.dependents_key)
        except WrongTypeKey as e:
            # Nothing was written. The failure path that follows cannot write a Result either
            # when the wrong key is the results stream: the reason goes where it can be read.
            reason = f"{WrongTypeKey.__name__}: job {job.id} could not be finished: {e}"
            self._refuse(job.id, queue, reason, from_intermediate=False)
            raise
        if not applied:
            # Dependents appeared while the job ran: RQ's WATCH/MULTI path moves and enqueues them.
            rqcompat.finalize_success(self.w, job, queue, execution, return_value)
            return
        release_slot(job)
        job.send_webhooks(JobStatus.FINISHED)

    def check_result(self, value: Any) -> None:
        """Refuse a result the serializer cannot store: RQ would store a placeholder silently."""
        try:
            self.w.serializer.dumps(value)
        except Exception as e:
            name = getattr(self.w.serializer, "__name__", type(self.w.serializer).__name__)
            kind = type(value).__name__
            raise UnserializableResult(f"the job returned a {kind}, which {name} cannot store: {e}") from e

    def fail(self, ticket: Ticket, exc_info: ExcInfo, run_seconds: float) -> None:
        job = ticket.job
        if isinstance(exc_info[1], LeftToRecovery):  # not the job's failure: its outcome could not be written
            self.retry.note_left_to_recovery()
            return
        retries_before = job.retries_left
        try:
            self.retry.run(lambda: rqcompat.finalize_failure(self.w, job, ticket.queue, ticket.execution, exc_info))
        except LeftToRecovery:
            self.retry.note_left_to_recovery()
            return
        except Exception:
            log.exception("could not record the failure of job %s", job.id)
        retried = retries_before is not None and job.retries_left is not None and job.retries_left < retries_before
        self.report(ticket, exc_info[1], run_seconds, "retried" if retried else None)

    def report(
        self, ticket: Ticket, exc: BaseException | None, run_seconds: float, status: events.EndStatus | None = None
    ) -> None:
        end = time.time()
        job = ticket.job
        wait = None
        if ticket.enqueued_at is not None and job.started_at is not None:
            wait = max(0.0, job.started_at.timestamp() - ticket.enqueued_at)
        total = None if ticket.enqueued_at is None else max(0.0, end - ticket.enqueued_at)
        ended = events.JobEnded(
            job, ticket.queue.name, status or status_of(exc), run_seconds, wait, total, self._pool_of(job)
        )
        self.hooks.on_job_end(self.view, ended)

    def reject_malformed(self, job_id: str | bytes, queue: Queue, exc: BaseException) -> None:
        """Fail a job whose hash cannot be read, with the reason, and go on.

        Recorded by :func:`worker.quarantine.refuse`: out of the intermediate list, into the
        FailedJobRegistry with a failed Result, ``status=failed`` unless the key holds no hash,
        one entry in the ``poolq:quarantine`` stream, one log line.
        """
        detail = str(exc) or repr(exc)
        if len(detail) > 500:  # e.g. strptime quotes the whole bad value
            detail = detail[:497] + "..."
        reason = f"{MalformedJob.__name__}: job {printable(job_id)} could not be loaded: {type(exc).__name__}: {detail}"
        self.hooks.on_malformed_job(self.view, events.MalformedJob(queue.name))
        self._refuse(job_id, queue, reason, from_intermediate=not isinstance(exc, IdTooLong))

    def _refuse(self, job_id: str | bytes, queue: Queue, reason: str, from_intermediate: bool) -> None:
        """Fail the job with ``reason`` where RQ's failure path cannot (worker/quarantine.py)."""
        refuse(
            self.connection,
            job_id,
            queue,
            reason,
            failure_ttl=DEFAULT_FAILURE_TTL,
            worker_name=self.w.name,
            from_intermediate=from_intermediate,
            serializer=self.w.serializer,
        )

    def requeue(self, ticket: Ticket) -> bool:
        """Put a running job back at the front of its queue (shutdown, cold stop)."""
        if not ticket.claim():
            return False
        job, queue = ticket.job, ticket.queue
        if self.retry.redis_down_at_stop:  # one failed attempt is enough to know: no waiting for each job
            self.retry.note_left_to_recovery()
            return False
        try:
            with self.connection.pipeline() as p:
                self.w.cleanup_execution(job, pipeline=p, execution=ticket.execution)
                rqcompat.enqueue_at_front(queue, job, p)
                p.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            if not self.retry.stop.any:
                log.error("could not re-queue job %s (%s); recovery will bring it back", job.id, e)
            self.retry.note_left_to_recovery()
            return False
        except redis.exceptions.RedisError:
            log.exception("could not re-queue job %s; recovery will bring it back", job.id)
            return False
        self.report(ticket, None, time.monotonic() - ticket.started, "requeued")
        self.inflight.forget(ticket)
        return True
