"""The dequeue loop and the job lifecycle: one RQ worker identity, many executions at once.

``PoolWorker`` is an RQ 3 ``BaseWorker``: registration, heartbeats, executions, results,
retries, dependents and registries all go through RQ's own functions, so stock tooling
(``rq info``, ``Job.fetch``, ``FailedJobRegistry``) reads a poolq worker like any other.
What it adds is concurrency without prefetch: a job is dequeued only when a slot is free
(``_slots``), and handed to the strategy, which decides where its function runs.

Three threads matter:
- the main thread runs :meth:`_loop` (dequeue) and receives signals;
- slot threads (owned by the strategy) run :meth:`_run`, the lifecycle of one job;
- the monitor thread (:meth:`_monitor`) sends heartbeats, enforces timeouts that a strategy
  could not enforce itself, runs the scheduler tick and RQ's registry maintenance.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import redis.exceptions
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.queue import Queue
from rq.rate_limit import release_slot
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.timeouts import JobTimeoutException
from rq.utils import now, utcformat
from rq.worker import BaseWorker, WorkerStatus

from worker import defaults, events
from worker.allowlist import allowlist_for, check_allowed
from worker.callbacks import CallbackDeadline
from worker.errors import (
    ChildCrashed,
    ColdShutdown,
    FunctionNotAllowed,
    JobTooLarge,
    MalformedJob,
    RequeueJob,
    UnserializableResult,
    WrongTypeKey,
)
from worker.guarded_job import GuardedJob, guarded_job_class
from worker.hooks import HookChain
from worker.jobdata import READ_JOB_LUA, bounded_job_class, check_fields, harden_rq_reads
from worker.outage import LeftToRecovery, StopAwareRetry, StopGate
from worker.quarantine import MAX_JOB_ID_BYTES, Throttle, printable, refuse, valid_id
from worker.recovery import SEEN_KEY, WORKER_TTL_FIELD, Recovery
from worker.strategies import Strategy
from worker.webhooks import WebhookHosts

if TYPE_CHECKING:
    from worker.cpus import CpuInfo

log = logging.getLogger("worker")

# An overdue job gets this much longer for its strategy to stop it before the monitor fails it.
TIMEOUT_GRACE_SECONDS = 0.5
# After a strategy said it stopped an overdue job, how long before the monitor fails it anyway.
STOPPED_JOB_GRACE_SECONDS = 4.0
# How long a finished job's outcome waits for Redis to come back before it is given up
# (the job then stays in the started registry and RQ's clean-up fails it as abandoned).
REDIS_OUTAGE_BUDGET_SECONDS = 600.0

# Most jobs one dequeue round trip takes: one per free slot (never more: no prefetch), capped.
DEQUEUE_BATCH = 32

# KEYS: queue list, its intermediate list. ARGV: most jobs to take, job key prefix, most bytes
# of a hash (WORKER_MAX_JOB_BYTES). Returns [id1, fields1, id2, fields2, ...]: each job moved to
# the intermediate list exactly as RQ's LMOVE dequeue does, with its hash read in the same round
# trip (empty: no such hash) by ``read`` (worker/jobdata.py): a hash over the cap comes back as
# its size, a key of another type as 'wrongtype:<type>', so neither stops the script half-way
# (a WRONGTYPE error used to leave the ids already moved stranded and stop the worker). An id
# longer than MAX_JOB_ID_BYTES is removed here and comes back truncated, as 'idtoolong:<n>'. A
# queue or intermediate list of the wrong type fails the first LMOVE, before anything moved.
_DEQUEUE_LUA = (
    READ_JOB_LUA
    + """
local cap = tonumber(ARGV[3])
local out = {}
for _ = 1, tonumber(ARGV[1]) do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not id then break end
  if #id > """
    + str(MAX_JOB_ID_BYTES)
    + """ then
    redis.call('LREM', KEYS[2], -1, id)
    out[#out + 1] = string.sub(id, 1, 100)
    out[#out + 1] = 'idtoolong:' .. #id
  else
    out[#out + 1] = id
    out[#out + 1] = read(ARGV[2] .. id, cap)
  end
end
return out
"""
)

# KEYS: the job hash. ARGV: most bytes. The hash of a job BLMOVE took, read as above.
_READ_ONE_LUA = READ_JOB_LUA + "return read(KEYS[1], tonumber(ARGV[1]))\n"

# ARGV: guard, n1, command 1 (n1 words), n2, command 2, ...
# Applies the commands atomically (like MULTI/EXEC) and returns 1, unless the guard says no:
#   guard "absent": KEYS[1] (the job's dependents set) must not exist; else nothing is written
#     and 0 returned (the caller falls back to RQ's WATCH/MULTI path, which enqueues them);
#   guard "first": the first command (LREM from the intermediate list) must remove something;
#     else 0, and only that command ran (another worker's recovery took the job meanwhile) —
#     unless KEYS[1] (this attempt's execution hash) exists: the same writes were applied by an
#     earlier send whose reply was lost, so 1 and nothing written twice.
# Before anything is written, every key a command writes by type (HSET: a hash, ZADD: a sorted
# set, ...) is checked: a key of another type (a job hash someone SET to a string, a results
# stream that is a list) makes the script return 'WRONGTYPE <key> ...' with nothing written.
# Without the check the command failed half-way through the script: the writes before it
# stayed (a job counted as finished, its execution left registered) and the rest never ran.
_APPLY_LUA = """
local guard = ARGV[1]
if guard == 'absent' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local want = {HSET = 'hash', HINCRBY = 'hash', HINCRBYFLOAT = 'hash', HDEL = 'hash', ZADD = 'zset',
  ZREM = 'zset', SADD = 'set', SREM = 'set', LREM = 'list', LPUSH = 'list', RPUSH = 'list',
  XADD = 'stream', XTRIM = 'stream'}
local checked = {}
local i, n = 2, #ARGV
while i <= n do
  local t = want[string.upper(ARGV[i + 1])]
  local key = ARGV[i + 2]
  if t and not checked[key] then
    checked[key] = true
    local have = redis.call('TYPE', key)['ok']
    if have ~= 'none' and have ~= t then
      return 'WRONGTYPE ' .. key .. ' holds a ' .. have .. ', not a ' .. t
    end
  end
  i = i + tonumber(ARGV[i]) + 1
end
i = 2
while i <= n do
  local c = tonumber(ARGV[i])
  local r = redis.call(unpack(ARGV, i + 1, i + c))
  if guard == 'first' and i == 2 and r == 0 then
    if KEYS[1] and redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
    return 0
  end
  i = i + c + 1
end
return 1
"""


class Preempted(Exception):
    """The job left the intermediate list before its slot registered it (a recovery took it)."""


class Quarantined(Preempted):
    """The job could not be started (a key of it has the wrong type); it was failed alone."""


class IdTooLong(MalformedJob):
    """A queue entry longer than ``MAX_JOB_ID_BYTES``: the dequeue script already dropped it."""


ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


@dataclass(eq=False)
class Ticket:
    """One in-flight job. Whoever claims it first (the slot, the monitor, the drain) ends it."""

    job: Job
    queue: Queue
    enqueued_at: float | None
    execution: Execution | None = None  # registered by the slot, in :meth:`PoolWorker._prepare`
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    token: object = None
    abandoned: bool = False
    _claimed: bool = False
    _released: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        with self._lock:
            if self._claimed:
                return False
            self._claimed = True
            return True

    @property
    def claimed(self) -> bool:
        return self._claimed

    def release_once(self) -> bool:
        with self._lock:
            if self._released:
                return False
            self._released = True
            return True


def install_rq_fast_paths() -> None:
    """Make two of RQ's per-job helpers cheap, with the same results, in this process.

    A py-spy profile of a thread worker on 10,000 no-op jobs (docs/performance.md) put ~10 % of
    the samples holding the GIL in ``rq.serializers.resolve_serializer``: every ``Job``,
    ``Result`` and registry object RQ creates (several per job) checks its serializer with
    ``isinstance(x, Serializer)`` against a runtime-checkable ``Protocol``, which on Python 3.11
    re-lists the protocol's attributes each time. And ~4 % in ``_strptime``: ``Job.restore``
    parses its timestamps with ``datetime.strptime``.

    - ``resolve_serializer`` is memoised per argument (a class, a dotted path, None: each always
      resolves to the same object; unhashable arguments go to RQ's own function);
    - ``utcparse`` takes ``datetime.fromisoformat`` for strings of exactly RQ's own shape
      (``YYYY-MM-DDTHH:MM:SS.ffffffZ``, the one ``utcformat`` writes), which gives the same
      aware UTC datetime; anything else goes to RQ's own function (same result, same errors);
    - ``utcformat`` (~8 per job, ~5 % of the samples) uses ``isoformat``, which writes the
      same characters as RQ's ``strftime('%Y-%m-%dT%H:%M:%S.%fZ')`` for years 1000-9999.

    The names are replaced in the ``rq`` modules that imported them; idempotent.
    """
    import datetime as dt

    import rq.serializers
    import rq.utils

    resolve = rq.serializers.resolve_serializer
    if not getattr(resolve, "poolq_fast", False):
        cache: dict[Any, Any] = {}

        def resolve_serializer(serializer: Any = None) -> Any:
            try:
                return cache[serializer]
            except KeyError:
                pass
            except TypeError:  # unhashable: RQ's own check every time
                return resolve(serializer)
            resolved = resolve(serializer)
            if len(cache) < 64:
                cache[serializer] = resolved
            return resolved

        resolve_serializer.poolq_fast = True  # type: ignore[attr-defined]
        _replace_in_rq("resolve_serializer", resolve, resolve_serializer)

    parse = rq.utils.utcparse
    if not getattr(parse, "poolq_fast", False):
        fromisoformat = dt.datetime.fromisoformat

        def utcparse(string: str) -> dt.datetime:
            if len(string) == 27 and string[10] == "T" and string[19] == "." and string[26] == "Z":
                try:
                    return fromisoformat(string)
                except ValueError:
                    pass
            return parse(string)

        utcparse.poolq_fast = True  # type: ignore[attr-defined]
        _replace_in_rq("utcparse", parse, utcparse)

    fmt = rq.utils.utcformat
    if not getattr(fmt, "poolq_fast", False):

        def utcformat(value: dt.datetime) -> str:
            if value.year < 1000:
                return fmt(value)
            return value.isoformat(timespec="microseconds")[:26] + "Z"

        utcformat.poolq_fast = True  # type: ignore[attr-defined]
        _replace_in_rq("utcformat", fmt, utcformat)


def _replace_in_rq(name: str, old: Any, new: Any) -> None:
    for module_name, module in list(sys.modules.items()):
        if (module_name == "rq" or module_name.startswith("rq.")) and getattr(module, name, None) is old:
            setattr(module, name, new)


def _pid_exists(pid: int) -> bool:
    """``psutil.pid_exists`` without importing psutil into every worker (metrics import it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


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
        # RQ's registry clean-up (the monitor thread) runs abandoned jobs' failure callbacks
        # under its own death penalty class, SIGALRM: not in a thread. The callbacks of the
        # worker's job class bound themselves (worker/callbacks.py).
        started_registry: Any = StartedJobRegistry  # RQ types the attribute as SIGALRM's class
        started_registry.death_penalty_class = CallbackDeadline
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
        self._slots = threading.BoundedSemaphore(strategy.capacity)
        # Strategies that gate admission themselves (auto) get one job per dequeue.
        self._batch = 1 if type(strategy).admit is not Strategy.admit else min(DEQUEUE_BATCH, strategy.capacity)
        self._dequeue_script = connection.register_script(_DEQUEUE_LUA)
        self._apply_script = connection.register_script(_APPLY_LUA)
        self._read_one_script = connection.register_script(_READ_ONE_LUA)
        self._bad_queue_log = Throttle()
        self._tickets: dict[Ticket, None] = {}
        self._local = threading.local()
        self._clients: list[redis.Redis[bytes]] = []
        self._clients_lock = threading.Lock()
        self._changed = threading.Condition()
        self._stop_requested = False
        self._cold = False
        self._stop_deadline = float("inf")
        self._stopping = False  # _finish has begun (also after a burst or an error: no signal)
        # Jobs whose outcome or re-queue Redis could not take while stopping: left to recovery.
        self._left_to_recovery = 0
        self._redis_down_at_stop = False
        # The client's retries (worker/cli.py connect) and this worker's own ask the same gate.
        retry = connection.connection_pool.connection_kwargs.get("retry")
        self._gate = retry.gate if isinstance(retry, StopAwareRetry) else StopGate()
        self._gate.bind(self._stop_retrying, lambda: self._stop_deadline)
        self._monitor_stop = threading.Event()
        self._monitor_thread: threading.Thread | None = None
        self._maintenance_interval_s = maintenance_interval
        self._scheduler = RQScheduler(
            self.queue_names(), connection=connection, serializer=serializer, logging_level=logging.WARNING
        )
        self.jobs_started = 0

    # ------------------------------------------------------------------ public state

    @property
    def in_flight(self) -> int:
        return len(self._tickets)

    @property
    def strategy_name(self) -> str:
        return self.strategy.name

    @property
    def capacity(self) -> int:
        return self.strategy.capacity

    # ------------------------------------------------------------------ the loop

    def work(self, burst: bool = False, logging_level: str | None = None, **_: Any) -> bool:  # type: ignore[override]
        """Register, start the pool, dequeue until stopped (or, with ``burst``, until idle)."""
        self._install_signal_handlers()
        self.bootstrap(logging_level=None)
        self.strategy.start()
        self.set_state(WorkerStatus.IDLE)
        self.hooks.on_worker_start(self)
        self._monitor_thread = threading.Thread(target=self._monitor, name="poolq-monitor", daemon=True)
        self._monitor_thread.start()
        self._scheduler_tick()
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
        while not self._stop_requested:
            if not self._slots.acquire(timeout=0.5):
                continue
            if not self.strategy.admit(0.5):  # auto: a dequeued job still waits for its sub-pool
                self._slots.release()
                continue
            free = 1  # every slot free right now: one dequeue round trip fills them all
            while free < self._batch and self._slots.acquire(blocking=False):
                free += 1
            try:
                jobs, more = self._dequeue(burst, free)
            except BaseException:
                for _ in range(free):
                    self._slots.release()
                raise
            for _ in range(free - len(jobs)):
                self._slots.release()
            for job, queue in jobs:
                self._start(job, queue)
            if jobs:
                worked = True
                continue
            if more:  # a bad job was rejected or Redis hiccuped: the queues may hold more
                continue
            with self._changed:
                idle = not self._tickets
            if idle and self.get_state() != WorkerStatus.IDLE:
                with contextlib.suppress(redis.exceptions.RedisError):
                    self.set_state(WorkerStatus.IDLE)
            if burst:
                with self._changed:
                    if not self._tickets:
                        log.info("burst: queues empty and nothing in flight, quitting")
                        break
                    self._changed.wait(0.5)
        return worked

    def _dequeue(self, burst: bool, n: int) -> tuple[list[tuple[Job, Queue]], bool]:
        """Up to ``n`` jobs, and whether the queues may hold more (False: they were empty).

        Every queue is read with LMOVE into its intermediate list, never with BLPOP, so a job
        is always somewhere recovery can find it, also with several queues (RQ uses BLPOP then).
        The LMOVEs and the job hashes' HGETALLs are one Lua call (:data:`_DEQUEUE_LUA`), one
        round trip for every free slot; each hash is read into a Job as ``Job.fetch`` does.
        A hash that cannot be read fails its job (:meth:`reject_malformed`) and the rest go on:
        a bad field, a key that holds no hash, a hash or payload over ``WORKER_MAX_JOB_BYTES``,
        an id RQ refuses. A queue that cannot be read is skipped (:meth:`_pop`).
        """
        try:
            popped = self._pop(burst, n)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            if not self._stop_requested:  # stopping: said once, by _finish
                log.error("Redis unavailable while dequeuing (%s); retrying", e)
            self.hooks.on_redis_error(self, events.RedisError())
            self._gate.nap(1.0)  # returns at once when the worker is stopping
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
                job = self._job_from_hash(job_id, fields)
            except Exception as e:
                bad = True
                try:
                    self.reject_malformed(job_id or raw_id, queue, e)
                except Exception as e2:  # Redis down, or worse: the job stays where recovery finds it
                    log.error("could not record the failure of job %s: %s", printable(raw_id), e2)
                continue
            if job is None:  # deleted or expired: drop the id, as RQ does
                bad = True
                with contextlib.suppress(redis.exceptions.RedisError):
                    self.connection.lrem(queue.intermediate_queue_key, 1, job_id)
                continue
            jobs.append((job, queue))
            self.reorder_queues(reference_queue=queue)
        return jobs, bool(popped) or bad

    def _job_from_hash(self, job_id: str, fields: dict[bytes, bytes] | int | bytes) -> Job | None:
        """``Job.fetch`` from a hash already read: None when there was no hash.

        ``fields`` is what the dequeue script's ``read`` gave: the hash, or its size when it is
        over the cap (it never left Redis), or ``wrongtype:<type>``. The values are then checked
        (:func:`worker.jobdata.check_fields`), so the job fails here, before it starts.
        """
        if isinstance(fields, int):
            raise JobTooLarge(
                f"the job hash is {fields} bytes, more than WORKER_MAX_JOB_BYTES ({self.max_job_bytes} bytes); "
                "it was not read"
            )
        if isinstance(fields, bytes):
            kind = fields.decode(errors="replace").partition(":")[2]
            raise WrongTypeKey(f"{self.job_class.key_for(job_id)} holds a {kind}, not a job hash")
        if not fields:
            return None
        job = self.job_class(job_id, connection=self.connection, serializer=self.serializer)
        try:
            job.restore(fields)
        except NoSuchJobError:  # a hash RQ cannot read as a job
            raise MalformedJob("the job hash has no 'data' field") from None
        check_fields(job)
        return job

    def _client(self) -> redis.Redis[bytes]:
        """This thread's own client, holding one connection for good.

        The hot path (dequeue, prepare, finish) goes through it: no pool check-out and check-in
        (a lock, a pid check, bookkeeping) per call, ~8 % of the GIL time on no-op jobs. Its
        one-connection pool has the worker pool's connection settings (address, retries,
        timeouts) but not its ``max_connections``: a pool of 200 threads holds 200 connections.
        Closed when the worker stops.
        """
        client: redis.Redis[bytes] | None = getattr(self._local, "client", None)
        if client is None:
            shared = self.connection.connection_pool
            own = redis.ConnectionPool(
                connection_class=shared.connection_class, max_connections=1, **shared.connection_kwargs
            )
            client = redis.Redis(connection_pool=own, single_connection_client=True)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _close_clients(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
                client.connection_pool.disconnect()

    def _pop(self, burst: bool, n: int) -> list[tuple[Queue, bytes, dict[bytes, bytes] | int | bytes]]:
        """(queue, raw job id, what ``read`` gave) for up to ``n`` jobs; ids stay bytes until checked."""
        out: list[tuple[Queue, bytes, dict[bytes, bytes] | int | bytes]] = []
        prefix = self.job_class.redis_job_namespace_prefix
        client = self._client()
        unreadable: set[str] = set()
        for queue in self._ordered_queues:
            try:
                flat: Any = self._dequeue_script(
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
        first = next((q for q in self._ordered_queues if q.name not in unreadable), None)
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
        raw = self._read_one_script(keys=[prefix.encode() + job_id], args=[self.max_job_bytes])
        return [(first, job_id, dict(zip(raw[::2], raw[1::2], strict=True)) if isinstance(raw, list) else raw)]

    def _skip_queue(self, queue: Queue, e: redis.exceptions.ResponseError) -> None:
        """A queue (or its intermediate list) of the wrong type: skipped, said once a minute."""
        if self._bad_queue_log.ready(queue.name):
            log.error(
                "queue %s cannot be read (%s); skipping it and serving the other queues (said once a minute)",
                queue.name,
                e,
            )

    def _start(self, job: Job, queue: Queue) -> None:
        enq = job.enqueued_at.timestamp() if job.enqueued_at else None
        ticket = Ticket(job=job, queue=queue, enqueued_at=enq)
        with self._changed:
            self._tickets[ticket] = None
        self.jobs_started += 1
        self.strategy.submit(lambda: self._run(ticket))

    # ------------------------------------------------------------------ one job

    def _run(self, ticket: Ticket) -> None:
        """The lifecycle of one job, in a slot thread (or the main thread for inline)."""
        ticket.token = self.strategy.current_token()
        try:
            self.hooks.on_job_start(self, events.JobStarted(ticket.job, ticket.queue.name))
            self.perform_job(ticket.job, ticket.queue, ticket.execution, ticket)
        finally:
            self._end(ticket)

    def perform_job(self, job: Job, queue: Queue, execution: Execution | None, ticket: Ticket | None = None) -> bool:
        """RQ's ``perform_job`` with the function call delegated to the strategy.

        The one override point for running a job. Preparation is RQ's ``prepare_execution`` and
        ``prepare_job_execution`` in one pipeline (:meth:`_prepare`); success is RQ's writes in
        one Lua call (:meth:`_finish_success`), or RQ's own ``_finalize_success`` for what that
        cannot do; failure is RQ's ``_finalize_failure``.
        """
        if ticket is None:
            ticket = next(t for t in list(self._tickets) if t.execution is execution)
        t0 = time.perf_counter()
        try:
            self._prepare(ticket)  # retries its one round trip itself, idempotently
            job.started_at = now()
            self._admit(job)
            timeout = job.timeout or self.default_job_timeout
            limit = None if timeout == -1 else float(timeout)
            ticket.deadline = None if limit is None else time.monotonic() + limit
            return_value = self.strategy.perform(job, limit if limit is not None else 1e9)
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
                self._fail(ticket, sys.exc_info(), time.perf_counter() - t0)
            return False
        if not ticket.claim():
            return False  # the monitor (timeout) or a drain (re-queue) already ended this job
        try:
            self._check_result(return_value)
            self._redis_retry(lambda: self._finish_success(job, queue, ticket.execution, return_value))
        except Exception:  # e.g. a result the serializer cannot store
            self._fail(ticket, sys.exc_info(), time.perf_counter() - t0)
            return False
        self._report(ticket, None, time.perf_counter() - t0)
        return True

    def _admit(self, job: Job) -> None:
        """Refuse, by name (nothing is imported), a job whose function or callbacks the allowlist
        does not admit, or a bound-method job. Where the function runs it is resolved under the
        allowlist too: ``GuardedJob.func`` in this process, the pool child otherwise."""
        if isinstance(job, GuardedJob):
            job.check_admissible()
        else:
            check_allowed(job.func_name, self.allowed_functions)

    def _prepare(self, ticket: Ticket) -> None:
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
        execution = Execution.create(job, self.get_heartbeat_ttl(job), pipeline=p, worker_name=self.name)
        if self.get_state() != WorkerStatus.BUSY:
            self.set_state(WorkerStatus.BUSY, pipeline=p)
        job.prepare_for_execution(self.name, pipeline=p)
        p.persist(job.key)
        p.delete(SEEN_KEY.format(job.id))  # recovery's "stuck in the intermediate list" mark, if any
        # Built once, sent until Redis answers: a resend after a lost reply finds this execution's
        # hash and is a no-op, instead of being refused as "taken by a recovery" and leaving the
        # job registered as started but never run.
        argv = self._apply_args(p, guard="first")
        try:
            applied = self._redis_retry(lambda: self._send_apply(argv, key=execution.key))
        except WrongTypeKey as e:  # nothing was written: the job is failed alone, as at dequeue
            self.reject_malformed(job.id, ticket.queue, e)
            raise Quarantined(f"job {job.id} was not started: {e}") from None
        if not applied:
            raise Preempted(f"job {job.id} left the intermediate list before it started; not running it")
        self.executions[execution.id] = execution
        ticket.execution = execution

    def _apply(self, recorded: redis.client.Pipeline[bytes], guard: str = "", key: str | None = None) -> bool:
        """Send the commands recorded in ``recorded`` as one Lua call (:data:`_APPLY_LUA`).

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

    def _finish_success(self, job: Job, queue: Queue, execution: Execution | None, return_value: Any) -> None:
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
        assert execution is not None and job.started_at is not None  # set by _prepare and perform_job
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        if (
            isinstance(return_value, Retry)
            or job._success_callback_name
            or (job.repeats_left is not None and job.repeats_left > 0)
            or result_ttl == 0
        ):
            self._finalize_success(job, queue, execution, return_value)
            return
        job.ended_at = job.last_heartbeat = now()
        job._result = return_value
        job._status = JobStatus.FINISHED
        p = self.connection.pipeline(transaction=False)  # records the commands; never executed
        self.increment_successful_job_count(pipeline=p)
        self.increment_total_working_time(job.ended_at - job.started_at, p)
        job._handle_success(
            result_ttl,
            pipeline=p,
            worker_name=self.name,
            execution_id=execution.id,
            execution_started_at=execution.created_at,
            execution_ended_at=job.ended_at,
        )
        job.cleanup(result_ttl, pipeline=p, remove_from_queue=False)
        self.cleanup_execution(job, pipeline=p, execution=execution)
        try:
            applied = self._apply(p, guard="absent", key=job.dependents_key)
        except WrongTypeKey as e:
            # Nothing was written. The failure path that follows cannot write a Result either
            # when the wrong key is the results stream: the reason goes where it can be read.
            reason = f"{WrongTypeKey.__name__}: job {job.id} could not be finished: {e}"
            refuse(
                self.connection,
                job.id,
                queue,
                reason,
                failure_ttl=DEFAULT_FAILURE_TTL,
                worker_name=self.name,
                from_intermediate=False,
                serializer=self.serializer,
            )
            raise
        if not applied:
            # Dependents appeared while the job ran: RQ's WATCH/MULTI path moves and enqueues them.
            self._finalize_success(job, queue, execution, return_value)
            return
        release_slot(job)
        job.send_webhooks(JobStatus.FINISHED)

    def _check_result(self, value: Any) -> None:
        """Refuse a result the serializer cannot store: RQ would store a placeholder silently."""
        try:
            self.serializer.dumps(value)
        except Exception as e:
            name = getattr(self.serializer, "__name__", type(self.serializer).__name__)
            kind = type(value).__name__
            raise UnserializableResult(f"the job returned a {kind}, which {name} cannot store: {e}") from e

    def _redis_retry(self, fn: Callable[[], Any]) -> Any:
        """Run a lifecycle step, riding out a Redis outage rather than losing the job's outcome.

        Up to :data:`REDIS_OUTAGE_BUDGET_SECONDS` while the worker runs; once it is stopping,
        only as long as :meth:`_stop_retrying` allows, then :class:`LeftToRecovery`: the job
        stays where recovery finds it.
        """
        deadline = time.monotonic() + REDIS_OUTAGE_BUDGET_SECONDS
        delay = 0.2
        while True:
            try:
                return fn()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
                if isinstance(e, LeftToRecovery) or self._stop_retrying():
                    raise LeftToRecovery(f"Redis unavailable while stopping: {e}") from e
                if time.monotonic() >= deadline:
                    raise
                log.warning("Redis unavailable (%s); retrying in %.1f s", e, delay)
                self.hooks.on_redis_error(self, events.RedisError())
                self._gate.nap(delay)
                delay = min(delay * 2, defaults.REDIS_BACKOFF_MAX_SECONDS)

    def _stop_retrying(self) -> bool:
        """Whether a failing Redis command should give up now instead of retrying (worker/outage.py).

        Never while the worker runs. Once it is stopping: at once when no job runs any more (no
        outcome left to record), after a second signal, and in the main thread (the dequeue loop
        and the drain: nothing there is worth the wait); other threads (running jobs' outcomes,
        heartbeats, the metrics sampler) until the stop deadline, for Redis to come back.
        """
        if not (self._stop_requested or self._stopping):
            return False
        if self._cold or not self._tickets or time.monotonic() >= self._stop_deadline:
            return True
        return threading.current_thread() is threading.main_thread() and not self.strategy.runs_in_main_thread()

    def _note_left_to_recovery(self) -> None:
        with self._changed:
            self._left_to_recovery += 1
            self._redis_down_at_stop = True
        self.hooks.on_left_to_recovery(self, events.LeftToRecovery())

    def _fail(self, ticket: Ticket, exc_info: ExcInfo, run_seconds: float) -> None:
        job = ticket.job
        if isinstance(exc_info[1], LeftToRecovery):  # not the job's failure: its outcome could not be written
            self._note_left_to_recovery()
            return
        retries_before = job.retries_left
        try:
            # execution is None when the job failed before it was registered; RQ handles that.
            self._redis_retry(lambda: self._finalize_failure(job, ticket.queue, ticket.execution, exc_info))  # type: ignore[arg-type]
        except LeftToRecovery:
            self._note_left_to_recovery()
            return
        except Exception:
            log.exception("could not record the failure of job %s", job.id)
        retried = retries_before is not None and job.retries_left is not None and job.retries_left < retries_before
        self._report(ticket, exc_info[1], run_seconds, "retried" if retried else None)

    def _report(
        self, ticket: Ticket, exc: BaseException | None, run_seconds: float, status: events.EndStatus | None = None
    ) -> None:
        end = time.time()
        job = ticket.job
        wait = None
        if ticket.enqueued_at is not None and job.started_at is not None:
            wait = max(0.0, job.started_at.timestamp() - ticket.enqueued_at)
        total = None if ticket.enqueued_at is None else max(0.0, end - ticket.enqueued_at)
        ended = events.JobEnded(
            job, ticket.queue.name, status or status_of(exc), run_seconds, wait, total, self.strategy.pool_of(job)
        )
        self.hooks.on_job_end(self, ended)

    def _end(self, ticket: Ticket) -> None:
        # The worker's ``idle`` state is set by the dequeue loop when it finds the queues empty.
        with self._changed:
            self._tickets.pop(ticket, None)
            self._changed.notify_all()
        if ticket.release_once():
            self._slots.release()

    # ------------------------------------------------------------------ monitor thread

    def _monitor(self) -> None:
        next_beat = next_maint = next_sched = next_recovery = time.monotonic()
        while not self._monitor_stop.wait(0.25):
            t = time.monotonic()
            try:
                if self._stop_requested and not self._cold and t >= self._stop_deadline:
                    # The warm drain ran out of time: what still runs is stopped and re-queued.
                    # First, so that Redis calls failing below cannot delay it.
                    os.kill(os.getpid(), signal.SIGTERM)
                self._enforce_timeouts(t)
                if t >= next_beat:
                    next_beat = t + self.heartbeat_interval
                    self._heartbeat_all()
                if t >= next_sched:
                    next_sched = t + 1.0
                    self._scheduler_tick()
                if t >= next_recovery:
                    next_recovery = t + self.recovery_interval
                    self.recover()
                if t >= next_maint:
                    next_maint = t + self._maintenance_interval_s
                    self.clean_registries()
            except redis.exceptions.RedisError as e:
                log.warning("monitor: Redis error (%s); will retry", e)
            except Exception:
                log.exception("monitor: unexpected error (ignored)")

    def _enforce_timeouts(self, t: float) -> None:
        """Fail jobs past their timeout that their strategy did not stop (threads cannot be killed)."""
        for ticket in list(self._tickets):
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
            if ticket.job._failure_callback_name:
                # Its failure callback may take up to its timeout (60 s by default): not in this
                # thread, whose heartbeats keep the worker from being taken for dead.
                args = (ticket, t - ticket.started)
                threading.Thread(target=self._fail_overdue, args=args, name="poolq-overdue", daemon=True).start()
            else:
                self._fail_overdue(ticket, t - ticket.started)

    def _fail_overdue(self, ticket: Ticket, run_seconds: float) -> None:
        try:
            raise JobTimeoutException(
                f"Task exceeded maximum timeout value ({ticket.job.timeout} seconds); "
                f"the {self.strategy.name} slot running it could not be stopped and was abandoned"
            )
        except JobTimeoutException:
            self._fail(ticket, sys.exc_info(), run_seconds)
        with self._changed:
            self._tickets.pop(ticket, None)
            self._changed.notify_all()
        if ticket.release_once():
            self._slots.release()

    def _heartbeat_all(self) -> None:
        """Worker, executions and jobs in one round trip (RQ's maintain_heartbeats, batched)."""
        tickets = [tk for tk in list(self._tickets) if tk.execution is not None]
        ttl = int(self.heartbeat_interval) + 60
        with self.connection.pipeline() as p:
            self.heartbeat(self.worker_ttl + 60, pipeline=p)
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
            self.connection.delete(*stale)

    def _scheduler_tick(self) -> None:
        """Move due scheduled jobs (Retry intervals, enqueue_in) to their queues."""
        try:
            if self._scheduler.acquire_locks():
                self._scheduler.enqueue_scheduled_jobs()
        except redis.exceptions.RedisError as e:
            log.debug("scheduler tick failed: %s", e)

    def recover(self) -> None:
        """Re-queue (or fail as abandoned) the jobs of dead workers; see worker/recovery.py."""
        stats = self.recovery.run()
        outcomes: tuple[tuple[events.RecoveryOutcome, Any], ...] = (
            ("requeued", stats.requeued),
            ("abandoned", stats.abandoned),
        )
        for outcome, jobs in outcomes:
            for queue, _, func in jobs:
                self.hooks.on_recovered(self, events.Recovered(outcome, queue, func))
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
            if old_pid == os.getpid() or not _pid_exists(old_pid):
                log.warning(
                    "an earlier worker named %s on this host (pid %d) died; recovering its jobs", self.name, old_pid
                )
                self.connection.hset(self.key, "death", utcformat(now()))
                self.recover()
        super().register_birth()  # type: ignore[no-untyped-call]

    def serialize(self) -> dict[str, Any]:
        """RQ's worker hash, plus what recovery and dashboards need to read about this worker."""
        data: dict[str, Any] = super().serialize()
        data[WORKER_TTL_FIELD] = self.worker_ttl
        data["poolq_strategy"] = self.strategy.name
        data["poolq_concurrency"] = self.strategy.capacity
        return data

    # ------------------------------------------------------------------ bad input

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
        self.hooks.on_malformed_job(self, events.MalformedJob(queue.name))
        refuse(
            self.connection,
            job_id,
            queue,
            reason,
            failure_ttl=DEFAULT_FAILURE_TTL,
            worker_name=self.name,
            from_intermediate=not isinstance(exc, IdTooLong),
            serializer=self.serializer,
        )

    # ------------------------------------------------------------------ stopping

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags here: the main thread may be inside a Redis call.
        if not self._stop_requested:
            self._stop_requested = True
            self._stop_deadline = time.monotonic() + self.shutdown_timeout
            self._shutdown_requested_date = now()
            log.info(
                "warm shutdown (%s): no new jobs; waiting up to %.0f s for %d running; signal again for cold",
                signal.Signals(signum).name,
                self.shutdown_timeout,
                self.in_flight,
            )
        elif not self._cold:
            self._cold = True
            log.warning("cold shutdown (%s): stopping running jobs and re-queueing them", signal.Signals(signum).name)
            if self.strategy.runs_in_main_thread():
                raise ColdShutdown()  # interrupts the job running in this (the main) thread

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self._on_signal(signum or signal.SIGTERM, frame)

    def _finish(self) -> None:
        """Drain (warm) or stop (cold), re-queue what did not finish, register death.

        With Redis unreachable this ends within the shutdown timeout and a few seconds: nothing
        waits for Redis past the stop deadline (:meth:`_stop_retrying`), and what could not be
        written is left to recovery, said in one log line.
        """
        self._stopping = True
        if not self._stop_requested:  # burst end, or an error: nothing to wait for beyond in-flight jobs
            self._stop_deadline = time.monotonic() + self.shutdown_timeout
        with self._changed:
            while self._tickets and not self._cold and time.monotonic() < self._stop_deadline:
                self._changed.wait(0.2)
        leftover = list(self._tickets)
        if leftover:
            log.warning("%d job(s) did not finish in time: re-queueing them", len(leftover))
            for ticket in leftover:  # claim them first, so a killed child is not taken for a crash
                self.requeue(ticket)
            self.strategy.kill_running()
        self.strategy.shutdown(wait=not leftover, timeout=2.0)
        self._monitor_stop.set()
        if self._monitor_thread is not None:
            self._monitor_thread.join(2.0)
        self.hooks.on_worker_stop(self)
        self._close_clients()
        registered = False
        if not self._redis_down_at_stop:
            try:
                self.teardown()
                registered = True
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                self._redis_down_at_stop = True
            except redis.exceptions.RedisError as e:
                log.error("could not register worker death: %s", e)
        if self._redis_down_at_stop:
            log.warning(
                "Redis unreachable while stopping: %d job(s) left to recovery (they stay in the started registry "
                "or the intermediate list; a live worker re-queues them once this worker's heartbeat is %d s old)%s",
                self._left_to_recovery,
                self.worker_ttl,
                "" if registered else "; worker death not registered",
            )

    def requeue(self, ticket: Ticket) -> bool:
        """Put a running job back at the front of its queue (shutdown, cold stop)."""
        if not ticket.claim():
            return False
        job, queue = ticket.job, ticket.queue
        if self._redis_down_at_stop:  # one failed attempt is enough to know: no waiting for each job
            self._note_left_to_recovery()
            return False
        try:
            with self.connection.pipeline() as p:
                self.cleanup_execution(job, pipeline=p, execution=ticket.execution)
                queue._enqueue_job(job, pipeline=p, at_front=True)
                p.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
            if not (self._stop_requested or self._stopping):
                log.error("could not re-queue job %s (%s); recovery will bring it back", job.id, e)
            self._note_left_to_recovery()
            return False
        except redis.exceptions.RedisError:
            log.exception("could not re-queue job %s; recovery will bring it back", job.id)
            return False
        self._report(ticket, None, time.monotonic() - ticket.started, "requeued")
        with self._changed:
            self._tickets.pop(ticket, None)
        return True

    def child_pids(self) -> list[int]:
        return self.strategy.child_pids()

    def procline(self, message: str) -> None:
        """RQ sets the process title per job; from many threads that is noise and a syscall each."""

    def own_pid(self) -> int:
        return os.getpid()
