"""Reading a job hash without trusting it: a size cap, a capped inflate, values checked.

Anyone who can write to Redis can write any job hash, and RQ's ``Job.restore`` trusts it:
it inflates ``data`` and ``exc_info`` with ``zlib.decompress`` in one go (a 400 KiB payload of
zeros is 400 MiB in the worker; the worker tree peaked at ~2 GiB RSS), decodes every field
however large, and takes numbers as they come (a timeout of 10**8 s overflows a pool child's
``poll()``; a result TTL of 10**18 s is refused by Redis' EXPIRE half-way through a script).

- :func:`harden_rq_reads` makes RQ's own inflate stop at ``WORKER_MAX_JOB_BYTES`` (a
  ``zlib.decompressobj`` with ``max_length``: memory never holds more than the cap), for every
  ``Job`` this process reads: the dequeue path, the scheduler, registries, dependents; and
  gives RQ's scheduler (which reads with plain ``Job``) the bounded class below.
- :func:`bounded_job_class` gives the worker's job class a size check on the raw hash (the
  dequeue script already refuses larger ones in Redis, :data:`READ_JOB_LUA`), and makes RQ's
  own maintenance paths (registry clean-up, dependents, the scheduler) take a hash they cannot
  read — a key of the wrong type, a bad field — for a missing job instead of raising, which
  would stop the clean-up of every other job in the same registry.
- :func:`check_fields` refuses values the lifecycle cannot act on; the dequeue path calls it,
  so such a job fails alone, with the reason, before it starts.

Pool children get the function's arguments already decoded by the worker (a pickled tuple on
a pipe), never the hash: the cap in the worker process bounds them too.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from worker import defaults, rqcompat
from worker.errors import JobTooLarge, MalformedJob, WrongTypeKey

log = logging.getLogger("worker.jobdata")

# The longest job timeout accepted (-1 means none). Longer ones are a producer's mistake or
# an attack: 10**8 s overflowed the pool child's poll(), 10**30 s every wait in the worker.
MAX_JOB_TIMEOUT_SECONDS = 365 * 86400
# The longest TTL (result, failure, job) and retry/repeat interval accepted: far beyond any use,
# well within what Redis' EXPIRE accepts (it refuses 10**18 s) and what a datetime can hold.
MAX_TTL_SECONDS = 100 * 365 * 86400

# Lua: ``read(key, cap)`` returns the job hash as HGETALL does, or, for a hash that must not
# cross the wire, its size in bytes (an integer, when the field names and values add up to more
# than ``cap``) or ``'wrongtype:<type>'`` (the key holds no hash). Prepended to the scripts that
# dequeue. A hash bigger than the cap is copied inside Redis for a moment, never sent.
READ_JOB_LUA = """
local function read(key, cap)
  local h = redis.pcall('HGETALL', key)
  if h['err'] then return 'wrongtype:' .. redis.call('TYPE', key)['ok'] end
  local n = 0
  for i = 1, #h do n = n + #h[i] end
  if n > cap then return n end
  return h
end
"""


def inflate(raw: bytes, limit: int) -> bytes:
    """``zlib.decompress(raw)`` that gives up past ``limit`` bytes of output (:class:`JobTooLarge`).

    Raises ``zlib.error`` where ``zlib.decompress`` would (not zlib, truncated, bad checksum),
    so RQ's fallback (take the bytes as they are) is unchanged.
    """
    d = zlib.decompressobj()
    out = d.decompress(raw, limit + 1)
    if len(out) > limit:
        raise JobTooLarge(
            f"the job's payload inflates to more than WORKER_MAX_JOB_BYTES ({limit} bytes); it was not decoded"
        )
    if not d.eof:
        raise zlib.error("Error -5 while decompressing data: incomplete or truncated stream")
    return out


class _CappedZlib:
    """Stands in for the ``zlib`` module inside ``rq.job`` and ``rq.results``."""

    error = zlib.error

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def decompress(self, data: bytes, *args: Any, **kwargs: Any) -> bytes:
        if args or kwargs:  # RQ passes none; anything else is not ours to cap
            return zlib.decompress(data, *args, **kwargs)
        return inflate(data, self.limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(zlib, name)


def harden_rq_reads(limit: int) -> None:
    """Make RQ's reads of job hashes in this process bounded and unable to stop a loop.

    - every zlib inflate of RQ's job model stops at ``limit`` bytes: RQ calls ``zlib.decompress``
      by module attribute in ``rq.job`` (``data``, ``exc_info``) and ``rq.results``
      (``exc_string``); those names are pointed at a capped stand-in;
    - ``rq.scheduler`` fetches due jobs with ``Job.fetch_many``, where one job key of the wrong
      type (or one unreadable hash) failed the whole batch at every tick: no scheduled job of
      that queue (``Retry`` intervals, ``enqueue_in``) was ever enqueued again. Its ``Job`` is
      pointed at a :class:`BoundedJob`, for which such a job is missing (the scheduler drops it).

    Idempotent; the last call's limit wins (one worker per process).
    """
    rqcompat.replace_zlib(_CappedZlib(limit), _CappedZlib)
    rqcompat.replace_scheduler_job_class(bounded_job_class(Job, limit))


def hash_size(fields: Mapping[Any, Any]) -> int:
    """Bytes in a hash as HGETALL returns it: field names and values (what the cap counts)."""
    return sum(len(k) + len(v) for k, v in fields.items())


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _interval_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= MAX_TTL_SECONDS
            for v in value
        )
    )


def check_fields(job: Job) -> None:
    """Refuse (:class:`MalformedJob`) values of a restored job that the lifecycle cannot act on.

    Each of these made a job raise outside its own failure handling, measured against running
    workers: the job stayed ``started`` for good (its failure could not be recorded), or, for
    a timeout, its pool child's reply was read by the next job of the same slot.
    """
    timeout = job.timeout
    if timeout is not None and not (timeout == -1 or 0 <= timeout <= MAX_JOB_TIMEOUT_SECONDS):
        raise MalformedJob(
            f"timeout {timeout} is out of range (-1 for none, or 0 to {MAX_JOB_TIMEOUT_SECONDS} seconds)"
        )
    for name in ("result_ttl", "failure_ttl", "ttl"):
        ttl = getattr(job, name)
        if ttl is not None and not -1 <= ttl <= MAX_TTL_SECONDS:
            raise MalformedJob(f"{name} {ttl} is out of range (-1 to {MAX_TTL_SECONDS} seconds)")
    for name in ("retry_intervals", "repeat_intervals"):
        intervals = getattr(job, name, None)
        if intervals is not None and not _interval_list(intervals):
            raise MalformedJob(
                f"{name} must be a non-empty list of seconds from 0 to {MAX_TTL_SECONDS}, not {_short(intervals)}"
            )
    deps = rqcompat.dependency_ids(job)
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise MalformedJob(f"dependency_ids must be a list of job ids, not {_short(deps)}")
    for name in ("retries_left", "number_of_retries", "repeats_left"):
        n = getattr(job, name, None)
        if n is not None and not _whole(n):
            raise MalformedJob(f"{name} must be a whole number, not {_short(n)}")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_wrongtype(e: redis.exceptions.ResponseError) -> bool:
    return str(e).startswith("WRONGTYPE")


class BoundedJob(Job):
    """An RQ ``Job`` whose hash is size-checked before it is decoded.

    Mixed in front of the worker's job class by :func:`bounded_job_class`, which sets the cap.
    """

    max_bytes: ClassVar[int] = defaults.MAX_JOB_BYTES

    def restore(self, raw_data: Any) -> Any:
        size = hash_size(raw_data)
        if size > self.max_bytes:
            raise JobTooLarge(
                f"the job hash is {size} bytes, more than WORKER_MAX_JOB_BYTES ({self.max_bytes} bytes); "
                "it was not decoded"
            )
        return super().restore(raw_data)

    def refresh(self) -> None:
        """RQ's ``refresh``; a key that holds no hash is no job (:class:`NoSuchJobError`).

        ``Job.fetch`` is how RQ's maintenance (the started registry's clean-up, the intermediate
        list's) reads jobs, and it lets only "no such job" through: any other error there stops
        the clean-up of that registry, for every job in it, at every pass.
        """
        try:
            refresh: Callable[[], None] = super().refresh  # RQ's is untyped
            refresh()
        except redis.exceptions.ResponseError as e:
            if not _is_wrongtype(e):
                raise
            raise NoSuchJobError(f"{self.key} holds no hash ({WrongTypeKey.__name__}); not a job") from None
        except (MalformedJob, ValueError, TypeError, LookupError) as e:
            raise NoSuchJobError(f"{self.key} cannot be read as a job: {type(e).__name__}: {e}") from None

    @classmethod
    def fetch_many(cls, job_ids: Iterable[str], connection: Any, serializer: Any = None) -> list[Job | None]:
        """RQ's ``fetch_many``; a job whose hash cannot be read comes back as None (missing).

        RQ uses it for dependents and (with plain ``Job``) scheduled jobs: one unreadable hash
        would make every job of the batch fail to be fetched.
        """
        ids = list(job_ids)
        with connection.pipeline() as p:
            for job_id in ids:
                p.hgetall(cls.key_for(job_id))
            rows = p.execute(raise_on_error=False)
        jobs: list[Job | None] = []
        for job_id, row in zip(ids, rows, strict=True):
            job: Job | None = None
            try:
                if isinstance(row, Exception):
                    raise row
                if row:
                    job = cls(job_id, connection=connection, serializer=serializer)
                    job.restore(row)
            except Exception as e:
                log.warning("job %s cannot be read (%s: %.200s); taken as missing", job_id, type(e).__name__, e)
                job = None
            jobs.append(job)
        return jobs


def bounded_job_class(base: type[Job], max_bytes: int) -> type[Job]:
    """``base`` (the worker's job class) with :class:`BoundedJob` in front, capped at ``max_bytes``."""
    if issubclass(base, BoundedJob):
        bases: tuple[type, ...] = (base,)
    else:
        bases = (BoundedJob, base)
    return type(base.__name__, bases, {"max_bytes": max_bytes})
