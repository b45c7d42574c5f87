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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from rq.job import Job
from rq.results import Result
from rq.utils import utcformat, utcparse

from worker.errors import AbandonedJob

if TYPE_CHECKING:
    from rq.queue import Queue

log = logging.getLogger("worker.recovery")

REDELIVERIES_FIELD = "poolq_redeliveries"
WORKER_TTL_FIELD = "poolq_worker_ttl"
SEEN_KEY = "poolq:intermediate_seen:{}"

# KEYS: started registry, queue list, job hash, execution hash, worker executions set,
#       per-job execution registry, failed registry, intermediate list
# ARGV: member (job_id:execution_id), job id, execution id, max redeliveries, failed score, now
_RECOVER_EXECUTION = (
    """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
redis.call('DEL', KEYS[4])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[3])
redis.call('LREM', KEYS[8], 0, ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[3], '"""
    + REDELIVERIES_FIELD
    + """', 1)
if n > tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[3], 'status', 'failed', 'ended_at', ARGV[6])
  redis.call('ZADD', KEYS[7], ARGV[5], ARGV[2])
  return -n
end
redis.call('HSET', KEYS[3], 'status', 'queued')
redis.call('LPUSH', KEYS[2], ARGV[2])
return n
"""
)

# KEYS: intermediate list, queue list, job hash, failed registry; ARGV: job id, max, failed score, now
_RECOVER_INTERMEDIATE = (
    """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return false end
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[3], '"""
    + REDELIVERIES_FIELD
    + """', 1)
if n > tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[3], 'status', 'failed', 'ended_at', ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
  return -n
end
redis.call('HSET', KEYS[3], 'status', 'queued')
redis.call('LPUSH', KEYS[2], ARGV[1])
return n
"""
)


# KEYS: intermediate list, job hash, seen key; ARGV: job id, now, seconds the mark lives.
# Marks a job id found in the intermediate list and not in the started registry, atomically
# with respect to the worker that dequeued it (its registration LREMs the id, sets the status
# to started and deletes the mark in one atomic call): a job already registered is never marked,
# so no mark outlives the pass through the list it was made in. 1: newly marked; 2: marked
# earlier; 0: the job has left the list or is being started.
_MARK_INTERMEDIATE = """
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[2], 'status') == 'started' then return 0 end
if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'EX', ARGV[3]) then return 1 end
return 2
"""


@dataclass
class RecoveryStats:
    """What one scan did: (queue name, job id, function name) per recovered job."""

    requeued: list[tuple[str, str, str]] = field(default_factory=list)
    abandoned: list[tuple[str, str, str]] = field(default_factory=list)


def _decode(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def dead_workers(conn: redis.Redis[bytes], names: Iterable[str], now: float | None = None) -> set[str]:
    """Which of ``names`` are dead: no hash, marked dead, or a poolq heartbeat past its TTL.

    Workers without the poolq TTL field (stock RQ workers) count as alive while their hash
    exists: their own key expiry is their liveness, and their heartbeats are minutes apart.
    """
    names = list(dict.fromkeys(names))
    if not names:
        return set()
    now = time.time() if now is None else now
    with conn.pipeline(transaction=False) as p:
        for n in names:
            p.hmget(f"rq:worker:{n}", ["last_heartbeat", "death", WORKER_TTL_FIELD])
        rows = p.execute()
    dead = set()
    for name, (beat, death, ttl) in zip(names, rows, strict=True):
        if beat is None or death is not None:
            dead.add(name)
        elif ttl is not None:
            try:
                age = now - utcparse(_decode(beat)).timestamp()
            except ValueError:
                dead.add(name)
                continue
            if age > float(ttl):
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
    ) -> None:
        self.conn = conn
        self.queues = queues
        self.max_redeliveries = max_redeliveries
        self.stale_after = stale_after_seconds
        self.failure_ttl = failure_ttl
        self.serializer = serializer
        self._recover_execution = conn.register_script(_RECOVER_EXECUTION)
        self._recover_intermediate = conn.register_script(_RECOVER_INTERMEDIATE)
        self._mark_intermediate = conn.register_script(_MARK_INTERMEDIATE)

    def run(self) -> RecoveryStats:
        stats = RecoveryStats()
        for queue in self.queues:
            self._executions(queue, stats)
            self._intermediate(queue, stats)
        return stats

    def _executions(self, queue: Queue, stats: RecoveryStats) -> None:
        registry = queue.started_job_registry
        members = [_decode(m) for m in self.conn.zrange(registry.key, 0, -1)]
        if not members:
            return
        with self.conn.pipeline(transaction=False) as p:
            for m in members:
                p.hget(f"rq:execution:{m}", "worker_name")
            owners = [None if w is None else _decode(w) for w in p.execute()]
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
                f"rq:execution:{member}",
                f"rq:worker:{owner}:executions",
                f"rq:executions:{job_id}",
                queue.failed_job_registry.key,
                queue.intermediate_queue_key,
            ]
            args = [member, job_id, execution_id, self.max_redeliveries, now + self.failure_ttl, utcformat_now()]
            result = self._recover_execution(keys=keys, args=args)
            self._outcome(queue, job_id, owner or "<expired execution>", result, stats)

    def _intermediate(self, queue: Queue, stats: RecoveryStats) -> None:
        ids = [_decode(j) for j in self.conn.lrange(queue.intermediate_queue_key, 0, -1)]
        if not ids:
            return
        started = {_decode(m).partition(":")[0] for m in self.conn.zrange(queue.started_job_registry.key, 0, -1)}
        now = time.time()
        for job_id in ids:
            if job_id in started:
                continue
            key = SEEN_KEY.format(job_id)
            mark_ttl = max(60, int(4 * self.stale_after))
            marked = self._mark_intermediate(
                keys=[queue.intermediate_queue_key, Job.key_for(job_id), key], args=[job_id, now, mark_ttl]
            )
            if marked != 2:
                continue  # gone, being started, or first sighting: a live worker may be about to register it
            seen = self.conn.get(key)
            if seen is None or now - float(seen) < self.stale_after:
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
            Result.create_failure(stub, self.failure_ttl, reason)

    def _func_name(self, job_id: str) -> str:
        try:
            name = Job.fetch(job_id, connection=self.conn, serializer=self.serializer).func_name
        except Exception:  # gone, or unreadable: the metrics label it "other"
            return ""
        return name or ""


def utcformat_now() -> str:
    from rq.utils import now

    return utcformat(now())
