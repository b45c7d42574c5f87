"""Taking jobs off the queues: up to one per free slot, each hash read in the same round trip.

Every queue is read with LMOVE into its intermediate list, never with BLPOP, so a job is
always somewhere recovery can find it, also with several queues (RQ uses BLPOP then). The
LMOVEs and the job hashes' HGETALLs are one Lua call (worker/lifecycle/scripts.py), one round
trip for every free slot; each hash is read into a Job as ``Job.fetch`` does. A hash that
cannot be read fails its job (``reject``) and the rest go on: a bad field, a key that holds no
hash, a hash or payload over ``WORKER_MAX_JOB_BYTES``, an id RQ refuses. A queue that cannot
be read is skipped, said once a minute.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
import redis.exceptions
from rq.exceptions import NoSuchJobError

from worker import defaults, rqcompat
from worker.errors import JobTooLarge, MalformedJob, WrongTypeKey
from worker.jobdata import check_fields
from worker.lifecycle.scripts import DEQUEUE_LUA, READ_ONE_LUA
from worker.quarantine import MAX_JOB_ID_BYTES, Throttle, printable, valid_id

if TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue
    from rq.worker import BaseWorker

    from worker.lifecycle.retrying import RedisRetry

log = logging.getLogger("worker")

Popped = list[tuple["Queue", bytes, "dict[bytes, bytes] | int | bytes"]]


class IdTooLong(MalformedJob):
    """A queue entry longer than ``MAX_JOB_ID_BYTES``: the dequeue script already dropped it."""


class Dequeuer:
    """Reads jobs for one RQ worker identity; ``reject`` fails a job that cannot be loaded."""

    def __init__(
        self,
        worker: BaseWorker,
        client: Callable[[], redis.Redis[bytes]],
        retry: RedisRetry,
        reject: Callable[[str | bytes, Queue, BaseException], None],
        max_job_bytes: int,
    ) -> None:
        self.worker = worker
        self.connection: redis.Redis[bytes] = worker.connection
        self._client = client
        self._retry = retry
        self._reject = reject
        self.max_job_bytes = max_job_bytes
        self._script = self.connection.register_script(DEQUEUE_LUA)
        self._read_one = self.connection.register_script(READ_ONE_LUA)
        self._bad_queue_log = Throttle()

    def dequeue(self, burst: bool, n: int) -> tuple[list[tuple[Job, Queue]], bool]:
        """Up to ``n`` jobs, and whether the queues may hold more (False: they were empty)."""
        try:
            popped = self._pop(burst, n)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            if not self._retry.stop.requested:  # stopping: said once, by the drain
                log.error("Redis unavailable while dequeuing (%s); retrying", e)
            self._retry.redis_error()
            self._retry.gate.nap(1.0)  # returns at once when the worker is stopping
            return [], True
        jobs: list[tuple[Job, Queue]] = []
        bad = False
        for queue, raw_id, fields in popped:
            job_id = valid_id(raw_id)
            try:
                if isinstance(fields, bytes) and fields.startswith(b"idtoolong:"):
                    raise IdTooLong(f"a queue entry of {fields[10:].decode()} bytes is no job id; it was dropped")
                if job_id is None:
                    raise MalformedJob("its id is not an RQ job id (letters, digits, '_' and '-')")
                job = self.job_from_hash(job_id, fields)
            except Exception as e:
                bad = True
                try:
                    self._reject(job_id or raw_id, queue, e)
                except Exception as e2:  # Redis down, or worse: the job stays where recovery finds it
                    log.error("could not record the failure of job %s: %s", printable(raw_id), e2)
                continue
            if job is None:  # deleted or expired: drop the id, as RQ does
                bad = True
                with contextlib.suppress(redis.exceptions.RedisError):
                    self.connection.lrem(queue.intermediate_queue_key, 1, job_id)
                continue
            jobs.append((job, queue))
            self.worker.reorder_queues(reference_queue=queue)
        return jobs, bool(popped) or bad

    def job_from_hash(self, job_id: str, fields: dict[bytes, bytes] | int | bytes) -> Job | None:
        """``Job.fetch`` from a hash already read: None when there was no hash.

        ``fields`` is what the dequeue script's ``read`` gave: the hash, or its size when it is
        over the cap (it never left Redis), or ``wrongtype:<type>``. The values are then checked
        (:func:`worker.jobdata.check_fields`), so the job fails here, before it starts.
        """
        job_class = self.worker.job_class
        if isinstance(fields, int):
            raise JobTooLarge(
                f"the job hash is {fields} bytes, more than WORKER_MAX_JOB_BYTES ({self.max_job_bytes} bytes); "
                "it was not read"
            )
        if isinstance(fields, bytes):
            kind = fields.decode(errors="replace").partition(":")[2]
            raise WrongTypeKey(f"{job_class.key_for(job_id)} holds a {kind}, not a job hash")
        if not fields:
            return None
        job = job_class(job_id, connection=self.connection, serializer=self.worker.serializer)
        try:
            job.restore(fields)
        except NoSuchJobError:  # a hash RQ cannot read as a job
            raise MalformedJob("the job hash has no 'data' field") from None
        check_fields(job)
        return job

    def _pop(self, burst: bool, n: int) -> Popped:
        """(queue, raw job id, what ``read`` gave) for up to ``n`` jobs; ids stay bytes until checked."""
        out: Popped = []
        prefix = self.worker.job_class.redis_job_namespace_prefix
        client = self._client()
        unreadable: set[str] = set()
        queues = rqcompat.ordered_queues(self.worker)
        for queue in queues:
            try:
                flat: Any = self._script(
                    keys=[queue.key, queue.intermediate_queue_key],
                    args=[n - len(out), prefix, self.max_job_bytes],
                    client=client,
                )
            except redis.exceptions.ResponseError as e:
                unreadable.add(queue.name)
                self._skip_queue(queue, e)
                continue
            for i in range(0, len(flat), 2):
                raw = flat[i + 1]
                fields = dict(zip(raw[::2], raw[1::2], strict=True)) if isinstance(raw, list) else raw
                out.append((queue, flat[i], fields))
            if len(out) >= n:
                break
        if out or burst:
            return out
        # Nothing anywhere: block on the first readable queue for a moment (the others are
        # re-checked next time); none readable: wait as long, so a broken queue is no busy loop.
        first = next((q for q in queues if q.name not in unreadable), None)
        if first is None:
            time.sleep(defaults.DEQUEUE_BLOCK_SECONDS)
            return []
        try:
            job_id: Any = self.connection.blmove(
                first.key, first.intermediate_queue_key, defaults.DEQUEUE_BLOCK_SECONDS
            )
        except redis.exceptions.ResponseError as e:
            self._skip_queue(first, e)
            return []
        if job_id is None:
            return []
        if len(job_id) > MAX_JOB_ID_BYTES:
            self.connection.lrem(first.intermediate_queue_key, -1, job_id)
            return [(first, job_id[:100], b"idtoolong:%d" % len(job_id))]
        raw = self._read_one(keys=[prefix.encode() + job_id], args=[self.max_job_bytes])
        return [(first, job_id, dict(zip(raw[::2], raw[1::2], strict=True)) if isinstance(raw, list) else raw)]

    def _skip_queue(self, queue: Queue, e: redis.exceptions.ResponseError) -> None:
        """A queue (or its intermediate list) of the wrong type: skipped, said once a minute."""
        if self._bad_queue_log.ready(queue.name):
            log.error(
                "queue %s cannot be read (%s); skipping it and serving the other queues (said once a minute)",
                queue.name,
                e,
            )
