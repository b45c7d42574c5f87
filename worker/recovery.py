"""At-least-once delivery: give the jobs of dead workers back to their queues.

RQ notices a dead worker's job only when its execution entry expires from the
``StartedJobRegistry`` (minutes later) and then fails it. Here every live worker, every few
seconds, looks for executions whose worker is dead (its hash gone, marked dead, or its poolq
heartbeat older than its declared TTL) and re-queues the job at the front of its queue, up to
``max_redeliveries`` times; after that the job fails as abandoned, with that reason.

Several workers may scan at once: each recovery is one Lua script that starts by removing the
execution from the started registry, and only the caller whose removal succeeded goes on, so
a job is never re-queued twice. Jobs stuck in a queue's intermediate list (dequeued by a
worker that died before it registered the execution) are re-queued the same way.

Recovery runs at start-up, so nothing it reads may stop it (a job key SET to a string used to
fail every restart with WRONGTYPE): a job whose key holds no hash is taken out and refused
(worker/quarantine.py), as is an id RQ cannot read; a registry, queue or intermediate list of
the wrong type skips that queue (logged once a minute); the worker hashes and execution hashes
it reads are taken for what they are (unreadable: that worker is dead).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from rq.callbacks import execute_failure_callback
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.results import Result
from rq.utils import utcformat, utcparse

from worker import rqcompat
from worker.callbacks import CallbackDeadline
from worker.errors import AbandonedJob, MalformedJob, WrongTypeKey
from worker.quarantine import Throttle, printable, refuse, valid_id

if TYPE_CHECKING:
    from rq.queue import Queue

log = logging.getLogger("worker.recovery")

REDELIVERIES_FIELD = "poolq_redeliveries"
WORKER_TTL_FIELD = "poolq_worker_ttl"
SEEN_KEY = "poolq:intermediate_seen:{}"

# Both recovery scripts first check the queue's own keys (the queue list, the failed registry):
# of the wrong type, they return an error with nothing written, and the caller skips the queue.
# Then, for the job's keys: a job key that holds no hash returns 'wrongtype:<type>' (the caller
# refuses the job); per-job keys that cannot be written (a worker's executions set, the per-job
# execution registry) are skipped; a redelivery count that is not a number counts as spent.
# Both end in ``redeliver``: count the redelivery, then requeue the job, or fail it once the
# count is spent (returning the count, negated when failed; 0 when the job hash is gone).
_QUEUE_KEYS_OK = (
    """
local function check(key, want)
  local have = redis.call('TYPE', key)['ok']
  if have ~= 'none' and have ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. have .. ', not a ' .. want)
  end
end
local function redeliver(queue, job, failed, job_id, max, score, now)
  local t = redis.call('TYPE', job)['ok']
  if t == 'none' then return 0 end
  if t ~= 'hash' then return 'wrongtype:' .. t end
  local n = redis.pcall('HINCRBY', job, '"""
    + REDELIVERIES_FIELD
    + """', 1)
  if type(n) ~= 'number' then n = tonumber(max) + 1 end
  if n > tonumber(max) then
    redis.call('HSET', job, 'status', 'failed', 'ended_at', now)
    redis.call('ZADD', failed, score, job_id)
    return -n
  end
  redis.call('HSET', job, 'status', 'queued')
  redis.call('LPUSH', queue, job_id)
  return n
end
"""
)

# KEYS: started registry, queue list, job hash, execution hash, worker executions set,
#       per-job execution registry, failed registry, intermediate list
# ARGV: member (job_id:execution_id), job id, execution id, max redeliveries, failed score, now
_RECOVER_EXECUTION = (
    _QUEUE_KEYS_OK
    + """
local bad = check(KEYS[2], 'list') or check(KEYS[7], 'zset')
if bad then return bad end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
redis.call('DEL', KEYS[4])
redis.pcall('SREM', KEYS[5], ARGV[1])
redis.pcall('ZREM', KEYS[6], ARGV[3])
redis.pcall('LREM', KEYS[8], 0, ARGV[2])
return redeliver(KEYS[2], KEYS[3], KEYS[7], ARGV[2], ARGV[4], ARGV[5], ARGV[6])
"""
)

# KEYS: intermediate list, queue list, job hash, failed registry; ARGV: job id, max, failed score, now
_RECOVER_INTERMEDIATE = (
    _QUEUE_KEYS_OK
    + """
local bad = check(KEYS[2], 'list') or check(KEYS[4], 'zset')
if bad then return bad end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return false end
return redeliver(KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)


# KEYS: intermediate list, job hash, seen key; ARGV: job id, now, seconds the mark lives.
# Marks a job id found in the intermediate list and not in the started registry, atomically
# with respect to the worker that dequeued it (its registration LREMs the id, sets the status
# to started and deletes the mark in one atomic call): a job already registered is never marked,
# so no mark outlives the pass through the list it was made in. Returns the time the job was
# first seen there (this pass's ARGV[2] when newly marked), or false: the job has left the list
# or is being started. A job key or mark that is not what it should be is read as no status /
# no mark (and the mark rewritten), never as an error.
_MARK_INTERMEDIATE = """
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return false end
if redis.pcall('HGET', KEYS[2], 'status') == 'started' then return false end
local seen = redis.pcall('GET', KEYS[3])
local t = type(seen) == 'string' and tonumber(seen)
if t and t == t and t > -math.huge and t < math.huge then return seen end
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
return ARGV[2]
"""


@dataclass
class RecoveryStats:
    """What one scan did: (queue name, job id, function name) per recovered job."""

    requeued: list[tuple[str, str, str]] = field(default_factory=list)
    abandoned: list[tuple[str, str, str]] = field(default_factory=list)
    # (queue name, job id as printable) per job refused: its key holds no hash, or its id is not RQ's
    refused: list[tuple[str, str]] = field(default_factory=list)


def _decode(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def pid_exists(pid: int) -> bool:
    """Whether a process of this pid runs on this host (an earlier life of a worker of the same name).

    ``psutil.pid_exists`` without importing psutil into every worker (metrics import it).
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def dead_workers(conn: redis.Redis[bytes], names: Iterable[str], now: float | None = None) -> set[str]:
    """Which of ``names`` are dead: no hash, marked dead, or a poolq heartbeat past its TTL.

    Workers without the poolq TTL field (stock RQ workers) count as alive while their hash
    exists: their own key expiry is their liveness, and their heartbeats are minutes apart.
    A worker key that is no hash, or a heartbeat or TTL that cannot be read, is a dead worker.
    """
    names = list(dict.fromkeys(names))
    if not names:
        return set()
    now = time.time() if now is None else now
    with conn.pipeline(transaction=False) as p:
        for n in names:
            p.hmget(rqcompat.worker_key(n), ["last_heartbeat", "death", WORKER_TTL_FIELD])
        rows = p.execute(raise_on_error=False)
    dead = set()
    for name, row in zip(names, rows, strict=True):
        if isinstance(row, Exception):
            dead.add(name)
            continue
        beat, death, ttl = row
        if beat is None or death is not None:
            dead.add(name)
        elif ttl is not None:
            try:
                age = now - utcparse(_decode(beat)).timestamp()
                if age > float(ttl):
                    dead.add(name)
            except (ValueError, OverflowError):
                dead.add(name)
    return dead


class Recovery:
    """Periodic scan for dead workers' jobs, shared by every worker on the same Redis."""

    def __init__(
        self,
        conn: redis.Redis[bytes],
        queues: list[Queue],
        max_redeliveries: int,
        stale_after_seconds: float,
        failure_ttl: int,
        serializer: Any = None,
        job_class: type[Job] = Job,
        worker_name: str | None = None,
    ) -> None:
        self.conn = conn
        self.queues = queues
        self.max_redeliveries = max_redeliveries
        self.stale_after = stale_after_seconds
        self.failure_ttl = failure_ttl
        self.serializer = serializer
        self.job_class = job_class
        self.worker_name = worker_name
        self._recover_execution = conn.register_script(_RECOVER_EXECUTION)
        self._recover_intermediate = conn.register_script(_RECOVER_INTERMEDIATE)
        self._mark_intermediate = conn.register_script(_MARK_INTERMEDIATE)
        self._skipped_log = Throttle()

    def run(self) -> RecoveryStats:
        """One scan of every queue. A queue whose keys are of the wrong type is skipped (logged);
        a Redis outage still raises (the caller retries)."""
        stats = RecoveryStats()
        for queue in self.queues:
            for step in (self._executions, self._intermediate):
                try:
                    step(queue, stats)
                except (redis.exceptions.ResponseError, ValueError, TypeError) as e:
                    self._skipped(queue, e)
        return stats

    def _skipped(self, queue: Queue, e: Exception) -> None:
        if self._skipped_log.ready(queue.name):
            log.error("recovery: queue %s cannot be scanned (%s); skipping it (said once a minute)", queue.name, e)

    def _refuse(self, queue: Queue, raw_id: str | bytes, reason: str, stats: RecoveryStats) -> None:
        """A job recovery took out of a registry or list but cannot give back: failed alone."""
        stats.refused.append((queue.name, printable(raw_id)))
        refuse(
            self.conn,
            raw_id,
            queue,
            f"{MalformedJob.__name__}: job {printable(raw_id)} could not be recovered: {reason}",
            failure_ttl=self.failure_ttl,
            worker_name=self.worker_name,
            from_intermediate=False,
            serializer=self.serializer,
        )

    def _executions(self, queue: Queue, stats: RecoveryStats) -> None:
        registry = queue.started_job_registry
        raw_members: list[bytes] = self.conn.zrange(registry.key, 0, -1)
        if not raw_members:
            return
        members: list[str] = []
        for raw in raw_members:
            job_id = valid_id(raw.partition(b":")[0])
            if job_id is None:  # not RQ's: no execution of it can exist; out of the registry
                if self.conn.zrem(registry.key, raw):
                    self._refuse(queue, raw, "its started-registry entry is not an RQ job id", stats)
                continue
            members.append(raw.decode())
        with self.conn.pipeline(transaction=False) as p:
            for m in members:
                p.hget(rqcompat.execution_key(m), "worker_name")
            owners = [None if w is None or isinstance(w, Exception) else _decode(w) for w in p.execute(False)]
        dead = dead_workers(self.conn, [w for w in owners if w])
        now = time.time()
        for member, owner in zip(members, owners, strict=True):
            if owner and owner not in dead:
                continue
            job_id, _, execution_id = member.partition(":")
            keys = [
                registry.key,
                queue.key,
                Job.key_for(job_id),
                rqcompat.execution_key(member),
                rqcompat.worker_executions_key(str(owner)),
                rqcompat.job_executions_key(job_id),
                queue.failed_job_registry.key,
                queue.intermediate_queue_key,
            ]
            args = [member, job_id, execution_id, self.max_redeliveries, now + self.failure_ttl, utcformat_now()]
            result = self._recover_execution(keys=keys, args=args)
            self._outcome(queue, job_id, printable(owner or "<expired execution>"), result, stats)

    def _intermediate(self, queue: Queue, stats: RecoveryStats) -> None:
        raw_ids: list[bytes] = self.conn.lrange(queue.intermediate_queue_key, 0, -1)
        if not raw_ids:
            return
        started = {m.partition(b":")[0] for m in self.conn.zrange(queue.started_job_registry.key, 0, -1)}
        now = time.time()
        for raw in raw_ids:
            if raw in started:
                continue
            job_id = valid_id(raw)
            if job_id is None:  # no worker can have dequeued it as a job: out of the list now
                if self.conn.lrem(queue.intermediate_queue_key, 1, raw):
                    self._refuse(queue, raw, "its intermediate-list entry is not an RQ job id", stats)
                continue
            key = SEEN_KEY.format(job_id)
            mark_ttl = max(60, int(4 * self.stale_after))
            seen = self._mark_intermediate(
                keys=[queue.intermediate_queue_key, Job.key_for(job_id), key], args=[job_id, now, mark_ttl]
            )
            # Gone, being started, or first sighting: a live worker may be about to register it.
            try:
                if seen is None or now - float(seen) < self.stale_after:
                    continue
            except ValueError:  # a mark someone wrote in a form Lua reads and Python does not
                continue
            keys = [queue.intermediate_queue_key, queue.key, Job.key_for(job_id), queue.failed_job_registry.key]
            result = self._recover_intermediate(
                keys=keys, args=[job_id, self.max_redeliveries, now + self.failure_ttl, utcformat_now()]
            )
            self.conn.delete(key)
            self._outcome(queue, job_id, "<intermediate list>", result, stats)

    def _outcome(self, queue: Queue, job_id: str, owner: str, result: Any, stats: RecoveryStats) -> None:
        if result is None:
            return  # another worker recovered it first
        if isinstance(result, bytes):  # 'wrongtype:<type>': the job key holds no hash
            kind = result.decode(errors="replace").partition(":")[2]
            self._refuse(queue, job_id, f"{WrongTypeKey.__name__}: {Job.key_for(job_id)} holds a {kind}", stats)
            return
        n = int(result)
        func = self._func_name(job_id)
        if n > 0:
            stats.requeued.append((queue.name, job_id, func))
            log.warning(
                "re-queued job %s of dead worker %s on %s (redelivery %d of %d)",
                job_id,
                owner,
                queue.name,
                n,
                self.max_redeliveries,
            )
        elif n < 0:
            stats.abandoned.append((queue.name, job_id, func))
            reason = (
                f"{AbandonedJob.__name__}: the worker running the job ({owner}) died and the job was "
                f"already redelivered {self.max_redeliveries} times (WORKER_MAX_REDELIVERIES)"
            )
            log.error("job %s failed as abandoned: %s", job_id, reason)
            stub = Job(job_id, connection=self.conn, serializer=self.serializer)
            try:
                Result.create_failure(stub, self.failure_ttl, reason)
            except redis.exceptions.ResponseError as e:  # its results stream is of the wrong type
                log.error("job %s: its failed result could not be written: %s", job_id, e)
            # RQ runs an abandoned job's failure callback (StartedJobRegistry.cleanup); so does
            # recovery, in a thread of its own: the callback may take up to its timeout, and the
            # scan runs in the monitor thread, which also sends the heartbeats.
            threading.Thread(
                target=self._abandoned_callback, args=(job_id,), name="poolq-abandoned-callback", daemon=True
            ).start()

    def _abandoned_callback(self, job_id: str) -> None:
        """The failure callback of a job failed as abandoned, as RQ calls it (AbandonedJobError)."""
        try:
            job = self.job_class.fetch(job_id, connection=self.conn, serializer=self.serializer)
            execute_failure_callback(job, CallbackDeadline, AbandonedJobError, AbandonedJobError(), None)
        except Exception:  # the callback's own error, or one the allowlist refused: logged, as RQ does
            log.exception("job %s: the failure callback of the abandoned job raised", job_id)

    def _func_name(self, job_id: str) -> str:
        try:
            name = self.job_class.fetch(job_id, connection=self.conn, serializer=self.serializer).func_name
        except Exception:  # gone, or unreadable: the metrics label it "other"
            return ""
        return name if isinstance(name, str) else ""


def utcformat_now() -> str:
    from rq.utils import now

    return utcformat(now())
