"""Composite strategies: ``hybrid`` (P processes x T threads) and ``auto`` (a thread pool and a
process pool in one worker, each job routed by its function's measured CPU time / wall time).

Both keep the dequeue loop and the job lifecycle unchanged (``worker/pool_worker.py``): like the
other strategies they own a set of lifecycle slot threads (:class:`~worker.strategies.SlotThreads`)
and decide, in :meth:`perform`, where the job's function runs.

hybrid
    ``P`` pool children (forkserver), each running ``T`` threads (:func:`_threaded_child_main`).
    A lifecycle slot sends the call to the least busy child and waits for its reply, which a
    reader thread per child delivers. CPU-bound work gets ``P`` cores, I/O-bound work ``P x T``
    slots. The guarantees of the process strategy, adapted to children that run several jobs:

    - **Hard timeouts.** A thread cannot be stopped, so an overdue job's whole child is killed
      (SIGKILL) and replaced; the job fails with ``JobTimeoutException``. The other jobs that
      were running in that child (its *siblings*) did nothing wrong: they are **re-queued**
      (:class:`~worker.errors.RequeueJob`: the lifecycle puts them back at the front of their
      queue, status ``requeued``; they run again with a new execution and their full timeout).
      Re-running them in place instead would leave them only what is left of their timeout.
    - **Crash isolation.** When a child dies by itself (segfault, ``os._exit``, OOM kill) with
      one job in flight, that job fails (:class:`~worker.errors.ChildCrashed`, with the exit code
      or signal). With several in flight the culprit is unknown (any thread may have crashed the
      process), so each of them is **re-run alone** in a fresh one-job child, within what is left
      of its timeout: the one that crashes again alone is the culprit and fails with the signal;
      the others finish normally. Nothing is re-queued blindly, so a crashing job cannot take new
      siblings down with it again and again.
    - **At-least-once.** Unchanged: the parent owns every Redis write, and the generic recovery
      (``worker/recovery.py``) re-queues the jobs of a worker that died.

auto
    A thread pool (jobs run in the lifecycle slot thread itself, in the worker process) and a
    process pool (one job per child, as the process strategy). Each job is routed in
    :meth:`AutoStrategy.perform` by :class:`Router`:

    1. an explicit hint wins: ``job.meta["poolq_hint"]`` (``"cpu"``/``"io"``), then a hint on the
       function (``@worker.composite.cpu_bound`` / ``@io_bound``);
    2. otherwise the function's learned class: ``cpu`` -> process, ``io`` -> thread. A function
       becomes ``cpu`` when its CPU time / wall time is >= :data:`CPU_RATIO` (and it uses at
       least :data:`MIN_CPU_SECONDS` of CPU per job: below that a process hop costs more than the
       GIL time it saves), and ``io`` again when the ratio drops below :data:`IO_RATIO`
       (hysteresis). The figures are measured on every job: ``time.thread_time`` around the call
       in a thread; the child's ``process_time`` in a process child (one job at a time, so it is
       the job's own CPU). Wall time excludes the time the thread waited for a free core
       (``/proc/thread-self/schedstat``), so an oversubscribed machine does not make CPU-bound
       code look I/O-bound. A function's first run in each process is not counted: it pays for
       imports and warm-up (``worker.jobs.cpu`` calibrates its loop then);
    3. a new function is measured in a process first (:data:`PROBE_RUNS` runs): there its ratio
       is clean. In a thread the ratio of CPU-bound code is understated (it also waits for the
       GIL), so thread measurements can only *raise* a function to ``cpu``, and only when no
       process measurement is recent (within the last ``REPROBE_EVERY / 4`` runs); an ``io``
       function is re-measured in a free process child every :data:`REPROBE_EVERY` runs. When no
       child frees up within :data:`EARLY_SECONDS`, one job of a new function at a time is
       measured in a free thread instead (its other jobs wait), so new work never stalls behind
       long CPU jobs: alone in a thread a CPU-bound function still shows a high ratio, and a low
       one is only provisional (and that job is not crash-isolated, as any thread job). Jobs of a
       new function that wait do not wait for a long first run to end: once one has run
       :data:`EARLY_SECONDS`, its CPU so far / time so far classes the function;
    4. an ``io`` function that still uses CPU (>= :data:`MIN_CPU_SECONDS` per job, e.g. parse
       then wait) runs in an *idle* process child when there is one and no ``cpu`` job waits for
       it: its CPU then leaves the worker's GIL, which the worker's own per-job work needs too.
       Any ``io`` function overflows into a free child when the thread pool is full. Never the
       reverse: CPU-bound code in the worker's threads would stall every thread on the GIL.

    **Waiting for a full sub-pool.** The dequeue loop holds one semaphore of ``capacity`` =
    threads + processes lifecycle slots, and a job's class is only known once it is dequeued. A
    job whose sub-pool is full waits for it in its lifecycle slot. That cannot deadlock: a
    sub-pool slot is held only by a job that is running, and a running job needs nothing else to
    finish (or to be stopped at its timeout). It must not prefetch either (jobs held in memory
    while the other sub-pool idles, that another replica could have run): the dequeue loop asks
    :meth:`AutoStrategy.admit` before each dequeue, which holds it while a job waits for a full
    sub-pool, and while :data:`ADMIT_AHEAD` jobs are *in transit* (dequeued, not yet placed:
    their class is not known yet). So at most ``ADMIT_AHEAD`` (2) jobs are ever dequeued and not
    running, and the worker never holds more than ``capacity`` jobs; the bottleneck sub-pool
    still never idles: a waiting job takes the first slot that frees. (With ``ADMIT_AHEAD`` = 1
    the loop would wait for each job's ``prepare_job_execution`` before the next dequeue; under a
    saturated GIL every hand-off costs up to the 5 ms switch interval and that halved the
    throughput of ``worker.jobs.mixed``.)

    Which pool ran a job is exported: :meth:`pool_of` gives the ``pool`` label of the job metrics
    (``thread`` or ``process``); the rule is logged at start and every class change is logged
    (and counted as the ``route_changed`` worker event).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import queue as queue_mod
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from rq.timeouts import JobTimeoutException

from worker.allowlist import Allowlist, allowlist_for
from worker.errors import ChildCrashed, RemoteJobError, RequeueJob
from worker.poolchild import child_main, resolve_reply, runqueue_wait, schedstat
from worker.strategies import (
    STRATEGIES,
    PoolChild,
    Slot,
    SlotThreads,
    Strategy,
    StrategyConfig,
    describe_exit,
    recycle_reason,
    unpack_reply,
)

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, ForkServerProcess

    from rq.job import Job

    from worker.hooks import Hooks

log = logging.getLogger("worker.composite")

# ---------------------------------------------------------------------------------------------
# Hints

CPU = "cpu"
IO = "io"
HINT_META_KEY = "poolq_hint"
HINT_ATTRIBUTE = "poolq_hint"
_HINT_VALUES = {"cpu": CPU, "process": CPU, "io": IO, "thread": IO}
POOL_OF_CLASS = {CPU: "process", IO: "thread"}
# Router._declared_hint of a name that does not resolve under the allowlist.
UNRESOLVED = "unresolved"
# Set on the Job object (not saved to Redis) by auto's perform(): the sub-pool that ran it.
POOL_ATTRIBUTE = "poolq_pool"

F = TypeVar("F", bound=Callable[..., Any])


def cpu_bound(func: F) -> F:
    """Declares ``func`` CPU-bound: the ``auto`` strategy runs it in a process child, unmeasured."""
    setattr(func, HINT_ATTRIBUTE, CPU)
    return func


def io_bound(func: F) -> F:
    """Declares ``func`` I/O-bound: the ``auto`` strategy runs it in a thread of the worker."""
    setattr(func, HINT_ATTRIBUTE, IO)
    return func


def parse_hint(value: object) -> str | None:
    """``"cpu"``/``"process"`` -> cpu, ``"io"``/``"thread"`` -> io, anything else -> None."""
    if isinstance(value, str):
        return _HINT_VALUES.get(value.strip().lower())
    return None


# ---------------------------------------------------------------------------------------------
# Sizing


def hybrid_layout(config: StrategyConfig) -> tuple[int, int, int]:
    """(processes, threads per process, capacity) of a hybrid pool.

    Default: one process per available CPU x ``threads_per_cpu`` threads each. An explicit
    ``concurrency`` is the number of jobs at once, spread over the processes.
    """
    procs = max(1, config.processes or config.available_cpus)
    if config.concurrency is not None:
        procs = min(procs, config.concurrency)
        threads = config.threads_per_process or math.ceil(config.concurrency / procs)
        return procs, threads, min(config.concurrency, procs * threads)
    threads = config.threads_per_process or config.threads_per_cpu
    return procs, threads, procs * threads


def auto_layout(config: StrategyConfig) -> tuple[int, int, int]:
    """(threads, processes, capacity) of an auto worker.

    Default: a thread pool as the thread strategy's (CPUs x ``threads_per_cpu``) and a process
    pool as the process strategy's (one per CPU). An explicit ``concurrency`` is the number of
    jobs at once, both pools together: the processes (``processes``, default the CPUs, at most
    concurrency - 1) and the rest threads.
    """
    procs = max(1, config.processes or config.available_cpus)
    if config.concurrency is not None:
        procs = max(1, min(procs, config.concurrency - 1))
        threads = max(1, config.concurrency - procs)
        return threads, procs, threads + procs
    threads = config.available_cpus * config.threads_per_cpu
    return threads, procs, threads + procs


def _preload(config: StrategyConfig) -> list[str]:
    return list(dict.fromkeys((*config.preload, "worker.composite")))


# ---------------------------------------------------------------------------------------------
# The hybrid child: several jobs at once, one per thread


def _threaded_child_main(conn: multiprocessing.connection.Connection, threads: int, patterns: tuple[str, ...]) -> None:
    """A hybrid pool child: ``threads`` threads run ``(call_id, func, args, kwargs)`` messages.

    Replies are ``(call_id, "ok", value, cpu_seconds, wall_seconds)`` or
    ``(call_id, "err", type_name, message, traceback)``, or when the function cannot run
    ``(call_id, "refused", message)`` / ``(call_id, "unresolved", ...)``: it is resolved here under
    the allowlist ``patterns``, as in the process strategy's child (``poolchild.resolve_reply``).
    Like that child it never talks to Redis. ``None`` asks it to finish the running calls and exit.
    """
    allowlist = Allowlist(patterns)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when jobs stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    calls: queue_mod.SimpleQueue[tuple[int, str, list[Any], dict[str, Any]] | None] = queue_mod.SimpleQueue()
    send_lock = threading.Lock()

    def send(reply: tuple[Any, ...]) -> None:
        with send_lock:
            try:
                conn.send(reply)
            except (OSError, ValueError):  # the parent is gone
                os._exit(0)
            except Exception as e:  # the return value could not be pickled
                conn.send(
                    (
                        reply[0],
                        "err",
                        type(e).__name__,
                        f"job result could not be sent from the pool child: {e}",
                        traceback.format_exc(),
                    )
                )

    def run() -> None:
        while True:
            item = calls.get()
            if item is None:
                return
            call_id, func_name, args, kwargs = item
            t0_cpu, t0_wall = time.thread_time(), time.perf_counter()
            func, refusal = resolve_reply(allowlist, func_name)
            if refusal is not None:
                send((call_id, *refusal))
                continue
            try:
                value = func(*args, **kwargs)
                if asyncio.iscoroutine(value):
                    value = asyncio.run(value)
                reply: tuple[Any, ...] = (
                    call_id,
                    "ok",
                    value,
                    time.thread_time() - t0_cpu,
                    time.perf_counter() - t0_wall,
                )
            except BaseException as e:  # report everything, including SystemExit from the job
                reply = (call_id, "err", type(e).__name__, str(e), traceback.format_exc())
            send(reply)

    workers = [threading.Thread(target=run, name=f"poolq-hybrid-job-{i}", daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone: nobody wants the results
            os._exit(0)
        if msg is None:
            break
        calls.put(msg)
    for _ in workers:
        calls.put(None)
    for t in workers:
        t.join()


@dataclass(eq=False)
class Call:
    """One job sent to a hybrid child; ``reply`` is None when the child died with it in flight."""

    id: int
    child: ThreadedChild
    event: threading.Event = field(default_factory=threading.Event)
    reply: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Death:
    pid: int
    exitcode: int | None
    in_flight: int  # calls the child was running when it died


class ThreadedChild:
    """One hybrid pool child, its pipe, its calls in flight and the thread that reads its replies."""

    def __init__(
        self,
        ctx: ForkServerContext,
        threads: int,
        reader: Callable[[ThreadedChild], None],
        patterns: tuple[str, ...],
    ) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process: ForkServerProcess = ctx.Process(
            target=_threaded_child_main, args=(child_conn, threads, patterns), daemon=True
        )
        self.process.start()
        child_conn.close()
        self.threads = threads
        self.send_lock = threading.Lock()
        self.inflight: dict[int, Call] = {}
        self.state = "live"  # live -> retiring (no new calls) -> stopping -> dead
        self.kill_reason: str | None = None  # timed_out, cold_stop
        self.broken = False  # a send failed: the child is dying, its reader thread will replace it
        self.overdue: set[int] = set()
        self.jobs_done = 0
        self.dispatched = 0  # calls sent to it (WORKER_MAX_JOBS_PER_CHILD counts these)
        self.death: Death | None = None
        self.reader = threading.Thread(target=reader, args=(self,), name=f"poolq-hybrid-reader-{self.pid}", daemon=True)
        self.reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def _thread_cpu_reader() -> Callable[[], float | None]:
    """CPU seconds the calling thread uses from now on, readable from any thread of the process."""
    try:
        clock = time.pthread_getcpuclockid(threading.get_ident())
        start = time.clock_gettime(clock)
    except (AttributeError, OSError):
        return lambda: None

    def read() -> float | None:
        try:
            return time.clock_gettime(clock) - start
        except OSError:  # the thread is gone
            return None

    return read


def _process_cpu_reader(pid: int) -> Callable[[], float | None]:
    """CPU seconds process ``pid`` uses from now on."""
    import psutil

    def total() -> float | None:
        try:
            t = psutil.Process(pid).cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return None

    start = total()

    def read() -> float | None:
        now = total()
        return None if now is None or start is None else now - start

    return read


class MeasuredChild(PoolChild):
    """A one-job pool child that also reports its job's run-queue wait (``child_main`` measuring it)."""

    def __init__(self, ctx: ForkServerContext, patterns: tuple[str, ...]) -> None:  # PoolChild's, another target
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=child_main, args=(child_conn, patterns, True), daemon=True)
        self.process.start()
        child_conn.close()
        self.jobs_done = 0


def _timeout_error(timeout: float, detail: str) -> JobTimeoutException:
    return JobTimeoutException(f"Task exceeded maximum timeout value ({timeout:g} seconds); {detail}")


class _SoloDied(Exception):
    def __init__(self, pid: int, exitcode: int | None, reason: str | None) -> None:
        super().__init__(pid, exitcode, reason)
        self.pid, self.exitcode, self.reason = pid, exitcode, reason


def _solo_call(child: PoolChild, job: Job, timeout: float) -> tuple[Any, float, float]:
    """Runs ``job`` in a one-job :class:`PoolChild` (the process strategy's child or a measured one).

    Returns (value, CPU seconds, seconds the child waited for a CPU). Raises
    ``JobTimeoutException`` (the caller kills the child), :class:`_SoloDied` (EOF: the child
    died), ``RemoteJobError`` (the job raised), ``ChildCrashed`` when the child was gone before
    the job was sent.
    """
    try:
        child.conn.send((job.func_name, list(job.args), dict(job.kwargs)))
    except (OSError, ValueError) as e:
        raise ChildCrashed(f"pool child {child.pid} was gone before the job started: {e}") from None
    except Exception as e:  # arguments that cannot be pickled (pickle serializer only)
        raise RemoteJobError(f"job arguments could not be sent to the pool child: {e}") from None
    if not child.wait_reply(timeout):
        raise JobTimeoutException(f"pool child {child.pid}")
    try:
        reply = child.conn.recv()
    except (EOFError, OSError):
        child.process.join(5)
        raise _SoloDied(child.pid, child.process.exitcode, None) from None
    reply = unpack_reply(job, reply)
    return reply[1], float(reply[2]), float(reply[3]) if len(reply) > 3 else 0.0


class HybridStrategy(Strategy):
    """``P`` child processes x ``T`` threads each: parallel CPU across children, many waits in each."""

    name = "hybrid"
    advice = (
        "processes x threads: P children (one per CPU) each running T threads; for mixed or unknown "
        "workloads: CPU-bound work gets the cores, I/O-bound work many slots; hard timeouts (the child is "
        "killed, the jobs beside the overdue one are re-queued); a crash fails only the job that caused it"
    )

    @classmethod
    def size(cls, config: StrategyConfig) -> int:
        return hybrid_layout(config)[2]

    def __init__(self, config: StrategyConfig, hooks: Hooks | None = None) -> None:
        super().__init__(config, hooks)
        self.processes, self.threads_per_process, _ = hybrid_layout(config)
        self.ctx: ForkServerContext = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(_preload(config))
        self.slots = SlotThreads(self.capacity, "poolq-hybrid")
        self.cond = threading.Condition()
        self.children: list[ThreadedChild | None] = [None] * self.processes
        self.retiring: list[ThreadedChild] = []
        self.solos: dict[int, PoolChild] = {}
        self.solo_reasons: dict[int, str] = {}
        self.closing = False
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ pool management

    def start(self) -> None:
        with self.cond:
            for i in range(self.processes):
                self.children[i] = self._spawn()
        self.slots.start()
        log.info(
            "hybrid pool: %d processes x %d threads = %d jobs at once (pids %s)",
            self.processes,
            self.threads_per_process,
            self.capacity,
            ", ".join(str(p) for p in self.child_pids()),
        )

    def _spawn(self) -> ThreadedChild:
        return ThreadedChild(self.ctx, self.threads_per_process, self._read, self.config.allowed_functions)

    def _pick(self) -> ThreadedChild:
        """The live child with the fewest calls in flight (caller holds ``cond``)."""
        while True:
            if self.closing:
                raise RequeueJob("the worker is stopping; the job was not started and is re-queued")
            best: ThreadedChild | None = None
            for i, child in enumerate(self.children):
                if child is None or child.state == "dead":
                    child = self.children[i] = self._spawn()  # an earlier replacement failed
                if child.state != "live" or child.kill_reason is not None or child.broken:
                    continue  # dying: its replacement is on its way
                if len(child.inflight) < child.threads and (best is None or len(child.inflight) < len(best.inflight)):
                    best = child
            if best is not None:
                return best
            # Every child is full: only while a replacement is on its way (the lifecycle never
            # runs more than P x T jobs at once). Wait for a reply or a replacement.
            self.cond.wait(0.05)

    def _dispatch(self, job: Job) -> Call:
        msg_args = (job.func_name, list(job.args), dict(job.kwargs))
        for _attempt in range(5):
            with self.cond:
                if self.closing:
                    raise RequeueJob("the worker is stopping; the job was not started and is re-queued")
                child = self._pick()
                call = Call(next(self._ids), child)
                child.inflight[call.id] = call
                child.dispatched += 1
                cap = self.config.max_jobs_per_child
                if cap and child.dispatched >= cap:
                    # Its last job: no more are sent to it (its threads would take them before the
                    # first ended); its replacement starts now, and it exits once its jobs end.
                    self._retire(child, "max_jobs")
            try:
                with child.send_lock:
                    child.conn.send((call.id, *msg_args))
                return call
            except (OSError, ValueError):  # the child died before the job reached it: it never ran
                with self.cond:
                    child.inflight.pop(call.id, None)
                    child.broken = True
                continue
            except Exception as e:  # arguments that cannot be pickled (pickle serializer only)
                with self.cond:
                    child.inflight.pop(call.id, None)
                raise RemoteJobError(f"job arguments could not be sent to the pool child: {e}") from None
        raise ChildCrashed("pool children kept dying before the job could be sent to one")

    def _read(self, child: ThreadedChild) -> None:
        """The reader thread of one child: delivers replies, then handles the child's end."""
        conn = child.conn
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a reply the parent cannot unpickle: its job fails at its timeout
                log.exception("hybrid: unreadable reply from pool child %d", child.pid)
                continue
            stop_now = False
            with self.cond:
                call = child.inflight.pop(msg[0], None)
                child.jobs_done += 1
                if child.state == "retiring" and not child.inflight:
                    child.state = "stopping"
                    stop_now = True
                self.cond.notify_all()
            if call is not None:
                call.reply = msg
                call.event.set()
            if stop_now:
                with child.send_lock, contextlib.suppress(OSError, ValueError):
                    conn.send(None)
        self._exited(child)

    def _retire(self, child: ThreadedChild, reason: str) -> None:
        """Stop giving ``child`` work, start its replacement; it stops once its calls end (holds cond)."""
        if child.state != "live":
            return
        child.state = "retiring"
        self.retiring.append(child)
        for i, c in enumerate(self.children):
            if c is child:
                self.children[i] = None if self.closing else self._spawn()
        self.children_replaced += 1
        self._event("child_replaced", reason=reason)

    def _exited(self, child: ThreadedChild) -> None:
        child.process.join(5)
        code = child.process.exitcode
        with self.cond:
            calls = list(child.inflight.values())
            child.inflight.clear()
            expected = child.state == "stopping" and not calls
            child.death = Death(child.pid, code, len(calls))
            child.state = "dead"
            if child in self.retiring:
                self.retiring.remove(child)
            replace = [i for i, c in enumerate(self.children) if c is child]
            if not expected and child.kill_reason != "cold_stop":
                reason = child.kill_reason or "crashed"
                if reason == "crashed":
                    log.warning(
                        "hybrid pool child %d died (%s) with %d job(s) in flight",
                        child.pid,
                        describe_exit(code),
                        len(calls),
                    )
                if replace or calls:
                    self.children_replaced += 1
                    self._event("child_replaced", reason=reason)
            for i in replace:
                if self.closing:
                    self.children[i] = None
                    continue
                try:
                    self.children[i] = self._spawn()
                except Exception:
                    log.exception("hybrid: could not start a replacement pool child (will retry)")
                    self.children[i] = None
            self.cond.notify_all()
        with contextlib.suppress(OSError):
            child.conn.close()
        for call in calls:
            call.event.set()  # reply None: the child died with it

    def _kill_overdue(self, call: Call) -> int | None:
        """Kill the child running overdue ``call``; returns how many other jobs it was running.

        None when the call's reply (or the child's death) came first.
        """
        child = call.child
        with self.cond:
            if call.id not in child.inflight:
                return None
            child.overdue.add(call.id)
            if child.kill_reason is None:
                child.kill_reason = "timed_out"
            others = len(child.inflight) - len(child.overdue)
        child.kill()
        return others

    # ------------------------------------------------------------------ the strategy interface

    def submit(self, work: Callable[[], None]) -> None:
        self.slots.submit(work)

    def current_token(self) -> object:
        return self.slots.current()

    def pool_of(self, job: Job) -> str:
        return self.name

    def perform(self, job: Job, timeout: float) -> Any:
        slot = self.slots.current()
        if slot is None:
            raise RuntimeError("HybridStrategy.perform called outside a pool slot")
        deadline = time.monotonic() + timeout
        call = self._dispatch(job)
        slot.extra["call"] = call
        try:
            if not call.event.wait(timeout):
                others = self._kill_overdue(call)
                if others is not None:
                    raise _timeout_error(
                        timeout,
                        f"pool child {call.child.pid} was killed"
                        + (f" ({others} job(s) running beside it re-queued)" if others > 0 else ""),
                    )
                call.event.wait(10)
        finally:
            slot.extra.pop("call", None)
        reply = call.reply
        if reply is None:
            return self._after_death(job, call, slot, deadline, timeout)
        self._after_reply(call.child)
        return unpack_reply(job, reply[1:])[1]

    def _after_reply(self, child: ThreadedChild) -> None:
        limit = self.config.max_child_memory_mb
        if not limit or child.state != "live":
            return
        try:
            import psutil

            rss = psutil.Process(child.pid).memory_info().rss
        except Exception:
            return
        if rss > limit * 1024 * 1024:
            log.warning(
                "hybrid pool child %d uses %.0f MiB > WORKER_MAX_CHILD_MEMORY_MB=%g: replacing it once its "
                "running jobs end",
                child.pid,
                rss / 2**20,
                limit,
            )
            stop_now = False
            with self.cond:
                self._retire(child, "memory")
                if child.state == "retiring" and not child.inflight:
                    child.state = "stopping"
                    stop_now = True
            if stop_now:
                with child.send_lock, contextlib.suppress(OSError, ValueError):
                    child.conn.send(None)

    def _after_death(self, job: Job, call: Call, slot: Slot, deadline: float, timeout: float) -> Any:
        child = call.child
        death = child.death or Death(child.pid, child.process.exitcode, 1)
        if call.id in child.overdue or time.monotonic() >= deadline:
            raise _timeout_error(timeout, f"pool child {death.pid} was killed")
        if child.kill_reason == "timed_out":
            raise RequeueJob(
                f"pool child {death.pid} was killed to stop an overdue job running beside this one; "
                "this job did nothing wrong and was re-queued"
            )
        if child.kill_reason == "cold_stop" or self.closing:
            raise RequeueJob(f"cold stop: pool child {death.pid} was killed; the job was re-queued")
        if death.in_flight <= 1:
            raise ChildCrashed(f"pool child {death.pid} died while running the job: {describe_exit(death.exitcode)}")
        return self._isolate(job, slot, deadline, timeout, death)

    def _isolate(self, job: Job, slot: Slot, deadline: float, timeout: float, death: Death) -> Any:
        """Re-run a crash suspect alone in a one-job child: the culprit crashes again, the others finish."""
        first = f"pool child {death.pid} died ({describe_exit(death.exitcode)}) with {death.in_flight} jobs in flight"
        log.info("hybrid: %s; re-running job %s alone in a fresh child to find the culprit", first, job.id)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout_error(timeout, first)
        with self.cond:
            if self.closing:
                raise RequeueJob(f"{first}; the worker is stopping, so the job was re-queued")
            solo = MeasuredChild(self.ctx, self.config.allowed_functions)
            self.solos[solo.pid] = solo
        slot.extra["solo"] = solo
        try:
            value, _, _ = _solo_call(solo, job, remaining)
            return value
        except JobTimeoutException:
            solo.kill()
            raise _timeout_error(timeout, f"{first}; its re-run alone in pool child {solo.pid} was killed") from None
        except _SoloDied as d:
            reason = self.solo_reasons.pop(d.pid, None)
            if reason == "timed_out":
                raise _timeout_error(timeout, f"its re-run alone in pool child {d.pid} was killed") from None
            if reason == "cold_stop":
                raise RequeueJob(f"cold stop: pool child {d.pid} was killed; the job was re-queued") from None
            raise ChildCrashed(
                f"pool child {d.pid} died while running the job alone: {describe_exit(d.exitcode)} "
                f"(re-run in isolation after {first})"
            ) from None
        finally:
            slot.extra.pop("solo", None)
            with self.cond:
                self.solos.pop(solo.pid, None)
            if solo.alive():
                solo.stop()
            else:
                solo.kill()

    def abandon(self, slot_token: object) -> bool:
        # perform() kills an overdue child itself; this is the monitor's fallback.
        if not isinstance(slot_token, Slot):
            return False
        call = slot_token.extra.get("call")
        if isinstance(call, Call):
            self._kill_overdue(call)
            return True
        solo = slot_token.extra.get("solo")
        if isinstance(solo, PoolChild):
            self.solo_reasons[solo.pid] = "timed_out"
            with contextlib.suppress(ProcessLookupError):
                os.kill(solo.pid, signal.SIGKILL)
            return True
        return False

    def kill_running(self) -> None:
        with self.cond:
            self.closing = True
            children = [c for c in (*self.children, *self.retiring) if c is not None and c.state != "dead"]
            for c in children:
                if c.kill_reason is None:
                    c.kill_reason = "cold_stop"
            solos = list(self.solos.values())
            for s in solos:
                self.solo_reasons[s.pid] = "cold_stop"
        for c in children:
            c.kill()
        for s in solos:
            with contextlib.suppress(ProcessLookupError):
                os.kill(s.pid, signal.SIGKILL)

    def child_pids(self) -> list[int]:
        with self.cond:
            kids = [c for c in (*self.children, *self.retiring) if c is not None and c.state != "dead"]
            return [c.pid for c in kids if c.pid] + [p for p in self.solos if p]

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        with self.cond:
            self.closing = True
        self.slots.shutdown(wait, timeout)
        with self.cond:
            children = [c for c in (*self.children, *self.retiring) if c is not None and c.state != "dead"]
            for c in children:
                c.state = "stopping"
        for c in children:
            if wait:
                with c.send_lock, contextlib.suppress(OSError, ValueError):
                    c.conn.send(None)
            else:
                c.kill()
        deadline = time.monotonic() + (timeout if timeout is not None else 5.0)
        for c in children:
            c.process.join(max(0.0, deadline - time.monotonic()))
            if c.process.is_alive():
                c.kill()
                c.process.join(2)
            c.reader.join(2)


# ---------------------------------------------------------------------------------------------
# auto: learning and routing

# A function goes to the process pool when its CPU time / wall time reaches CPU_RATIO and back to
# the thread pool when it falls below IO_RATIO (hysteresis: a function near the line does not
# flap). With P single-job children and one GIL, a job of CPU c and wait w is served faster in the
# threads (up to 1/c a second, bounded by the GIL) than in the children (P/(c+w)) when
# c/(c+w) < 1/P: 0.5 on a 2-CPU machine. The threshold is that figure, not a tuned constant.
CPU_RATIO = 0.5
IO_RATIO = 0.4
# Below this much CPU per job, a process hop (pickling, a pipe round trip, the parent's own
# lifecycle work of ~2 ms per job) costs more than the GIL time it would save.
MIN_CPU_SECONDS = 0.002
PROBE_RUNS = 2  # runs of a new function measured in a process child before it is classed
EARLY_SECONDS = 1.0  # a first run this long in progress classes its function (from its CPU so far)
REPROBE_EVERY = 200  # an io function is re-measured in a free process child every this many runs
EWMA_ALPHA = 0.3
# auto: jobs the dequeue loop may have in transit (dequeued, class not known yet); see the docstring.
ADMIT_AHEAD = 2


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + EWMA_ALPHA * (new - old)


@dataclass
class Profile:
    """What auto learned about one function."""

    klass: str | None = None  # cpu, io, or None while it is measured
    process_ratio: float | None = None  # EWMA of CPU/wall measured in a process child (clean)
    process_cpu: float | None = None  # EWMA of CPU seconds per run, in a process child
    thread_ratio: float | None = None  # EWMA of CPU/wall in a thread (understated under GIL contention)
    thread_cpu: float | None = None
    process_runs: int = 0
    thread_runs: int = 0
    since_probe: int = 0
    thread_runs_since_process: int = 0  # thread runs since the last process measurement
    thread_probe: bool = False  # a job of this new function is being measured in a thread
    basis: str = ""  # how the class was decided when it was not from finished runs


@dataclass(frozen=True)
class RunInProgress:
    """A run of a new function, watched so that its class can be decided before it ends."""

    started: float  # perf_counter
    cpu: Callable[[], float | None]  # CPU seconds of the run so far (None: cannot tell)


@dataclass(frozen=True)
class Route:
    pool: str  # "process" or "thread": where the job should run
    overflow: bool  # may run in the other pool when its own is full (learned io functions only)
    reason: str
    probe: bool = False  # an io function re-measured in a process: only if one is free now
    idle_child: bool = False  # an io function that uses CPU: an idle child first, if no cpu job waits
    new: bool = False  # not classed yet: a process, or one job at a time in a thread


class Router:
    """Per-function CPU/wall profiles and the routing rule (thread-safe)."""

    def __init__(
        self,
        on_change: Callable[[str, str | None, str, Profile], None] | None = None,
        allowlist: Allowlist | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.allowlist = allowlist if allowlist is not None else allowlist_for(StrategyConfig.allowed_functions)
        self.profiles: dict[str, Profile] = {}
        self.declared: dict[str, str | None] = {}
        self.on_change = on_change
        self._bad_hints: set[str] = set()
        self.running: dict[str, dict[int, RunInProgress]] = {}
        self._run_ids = itertools.count(1)

    @staticmethod
    def describe_rule() -> str:
        return (
            f"a function runs in a process when its CPU time / wall time >= {CPU_RATIO:g} and it uses >= "
            f"{MIN_CPU_SECONDS * 1000:g} ms CPU per job, in a thread otherwise (back to threads below "
            f"{IO_RATIO:g}); a new function is measured in a process first ({PROBE_RUNS} runs; one job at a time "
            f"in a thread when no process frees up within {EARLY_SECONDS:g} s); an I/O-bound "
            f"function overflows into a free process when the threads are full, and takes an idle one first if it "
            f"uses >= {MIN_CPU_SECONDS * 1000:g} ms CPU per job; hints win: "
            f"job.meta['{HINT_META_KEY}'] = 'cpu'|'io', or @worker.composite.cpu_bound / @io_bound"
        )

    def _declared_hint(self, func_name: str) -> str | None:
        """The hint on the function itself (decorator), resolved once per name in this process
        under the allowlist; :data:`UNRESOLVED` when the name does not resolve (refused, or no
        such function). Only names that resolved are remembered: the table stays as small as
        the code, whatever names producers make up."""
        with self.lock:
            if func_name in self.declared:
                return self.declared[func_name]
        try:
            hint = parse_hint(getattr(self.allowlist.resolve(func_name), HINT_ATTRIBUTE, None))
        except Exception:  # the job itself reports why where it runs
            return UNRESOLVED
        with self.lock:
            self.declared[func_name] = hint
        return hint

    def route(self, job: Job) -> Route:
        meta = job.meta.get(HINT_META_KEY) if isinstance(job.meta, dict) else None
        if meta is not None:
            hint = parse_hint(meta)
            if hint is not None:
                return Route(POOL_OF_CLASS[hint], False, f"hint job.meta[{HINT_META_KEY!r}]={meta!r}")
            if str(meta) not in self._bad_hints and len(self._bad_hints) < 100:
                self._bad_hints.add(str(meta))
                log.warning("auto: ignoring job.meta[%r]=%r (expected 'cpu' or 'io')", HINT_META_KEY, meta)
        func_name = str(job.func_name)
        hint = self._declared_hint(func_name)
        if hint == UNRESOLVED:  # it fails to resolve in the thread as it did here: no child, no profile
            return Route("thread", False, "does not resolve")
        if hint is not None:
            return Route(POOL_OF_CLASS[hint], False, f"declared {hint}-bound")
        with self.lock:
            p = self.profiles.setdefault(func_name, Profile())
            if p.klass is None:
                return Route("process", False, "new function: measured", new=True)
            if p.klass == CPU:
                return Route("process", False, "learned cpu")
            p.since_probe += 1
            if p.since_probe >= REPROBE_EVERY:
                p.since_probe = 0
                return Route("thread", True, "learned io (re-measured in a process)", probe=True)
            cpu = p.process_cpu if p.process_cpu is not None else p.thread_cpu
            if cpu is not None and cpu >= MIN_CPU_SECONDS:
                return Route("thread", True, "learned io, uses CPU: an idle child first", idle_child=True)
            return Route("thread", True, "learned io")

    def start_thread_probe(self, func_name: str) -> bool:
        """Claim the one thread measurement of a new function (False if one runs already)."""
        with self.lock:
            p = self.profiles.setdefault(func_name, Profile())
            if p.thread_probe or p.klass is not None:
                return False
            p.thread_probe = True
            return True

    def is_new(self, func_name: str) -> bool:
        with self.lock:
            p = self.profiles.get(func_name)
            return p is None or p.klass is None

    def run_started(self, func_name: str, cpu: Callable[[], float | None]) -> int | None:
        """Watch a run of a new function (returns a handle for :meth:`run_ended`, None if not new)."""
        with self.lock:
            p = self.profiles.get(func_name)
            if p is not None and p.klass is not None:
                return None
            rid = next(self._run_ids)
            self.running.setdefault(func_name, {})[rid] = RunInProgress(time.perf_counter(), cpu)
            return rid

    def run_ended(self, func_name: str, rid: int | None) -> None:
        if rid is None:
            return
        with self.lock:
            runs = self.running.get(func_name)
            if runs is not None:
                runs.pop(rid, None)
                if not runs:
                    del self.running[func_name]

    def early(self, func_name: str) -> bool:
        """Class a new function from a run in progress for EARLY_SECONDS or more; True if classed now."""
        with self.lock:
            p = self.profiles.get(func_name)
            if p is None or p.klass is not None:
                return False
            runs = list(self.running.get(func_name, {}).values())
        for r in runs:
            elapsed = time.perf_counter() - r.started
            cpu = r.cpu() if elapsed >= EARLY_SECONDS else None
            if cpu is None:
                continue
            ratio = min(1.0, max(0.0, cpu / elapsed))
            if IO_RATIO <= ratio < CPU_RATIO:
                continue
            new = IO if ratio < IO_RATIO else CPU
            with self.lock:
                if p.klass is not None:
                    return False
                p.klass = new
                p.since_probe = 0
                p.basis = f"{elapsed:.1f} s into a first run still in progress, CPU/wall so far {ratio:.2f}"
                snapshot = Profile(**vars(p))
            if self.on_change is not None:
                self.on_change(func_name, None, new, snapshot)
            return True
        return False

    def end_thread_probe(self, func_name: str) -> None:
        with self.lock:
            p = self.profiles.get(func_name)
            if p is not None:
                p.thread_probe = False

    def observe(self, func_name: str, pool: str, cpu: float, wall: float) -> None:
        """One finished run: ``cpu`` and ``wall`` seconds where it ran (a thread or a process child)."""
        if wall <= 0:
            return
        ratio = min(1.0, max(0.0, cpu / wall))
        with self.lock:
            p = self.profiles.setdefault(func_name, Profile())
            if pool == "process":
                p.process_runs += 1
                p.process_ratio = _ewma(p.process_ratio, ratio)
                p.process_cpu = _ewma(p.process_cpu, cpu)
                p.thread_runs_since_process = 0
            else:
                p.thread_runs += 1
                p.thread_runs_since_process += 1
                p.thread_ratio = _ewma(p.thread_ratio, ratio)
                p.thread_cpu = _ewma(p.thread_cpu, cpu)
            old = p.klass
            new = self._classify(p)
            if new == old:
                return
            p.klass = new
            p.since_probe = 0
            p.basis = ""
            snapshot = Profile(**vars(p))
        if self.on_change is not None and new is not None:
            self.on_change(func_name, old, new, snapshot)

    @staticmethod
    def _classify(p: Profile) -> str | None:
        old = p.klass
        measured = old is not None or p.process_runs >= PROBE_RUNS
        fresh = p.thread_runs_since_process < REPROBE_EVERY // 4
        if p.process_ratio is not None and p.process_cpu is not None and measured and fresh:
            # Measured in a process, recently: the clean figure decides, alone.
            heavy = p.process_ratio >= CPU_RATIO and p.process_cpu >= MIN_CPU_SECONDS
            light = p.process_ratio < IO_RATIO or p.process_cpu < MIN_CPU_SECONDS / 2
            if old is None:
                return CPU if heavy else IO
            if old == CPU and light:
                return IO
            if old == IO and heavy:
                return CPU
            return old
        if p.thread_ratio is not None and p.thread_cpu is not None and old != CPU:
            if p.thread_ratio >= CPU_RATIO and p.thread_cpu >= MIN_CPU_SECONDS:
                return CPU  # CPU-heavy even though a thread understates it
            if old is None and p.thread_runs >= PROBE_RUNS and p.process_runs == 0:
                return IO  # provisional: measured alone in a thread; a process re-probe checks it
        return old


@dataclass(eq=False)
class ChildSlot:
    """One slot of auto's process pool: a one-job child, busy or free."""

    index: int
    child: PoolChild
    busy: bool = False
    # Serialises kill/stop/replace of the child: a slot thread replacing a killed child and
    # shutdown() must not close the same pipe twice (the fd number may be reused meanwhile).
    lock: threading.Lock = field(default_factory=threading.Lock)


class AutoStrategy(Strategy):
    """A thread pool and a process pool in one worker; each job goes where its function runs best."""

    name = "auto"
    advice = (
        "threads and processes in one worker: each function is measured (CPU time / wall time) and routed, "
        "CPU-bound ones to processes, I/O-bound ones to threads; hints: job.meta['poolq_hint']='cpu'|'io' or "
        "@worker.composite.cpu_bound/io_bound"
    )

    @classmethod
    def size(cls, config: StrategyConfig) -> int:
        return auto_layout(config)[2]

    def __init__(self, config: StrategyConfig, hooks: Hooks | None = None) -> None:
        super().__init__(config, hooks)
        self.n_threads, self.n_processes, _ = auto_layout(config)
        self.ctx: ForkServerContext = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(_preload(config))
        self.slots = SlotThreads(self.capacity, "poolq-auto")
        self.cond = threading.Condition()
        self.free_threads = self.n_threads
        self.children: list[ChildSlot] = []
        self.unplaced = 0  # dequeued jobs not yet placed in a sub-pool (in transit or waiting)
        self.waiting = 0  # of those, jobs that found their sub-pool full and wait for it
        self.blocked_for_process = 0  # of those, jobs waiting for a process slot
        self.kill_reasons: dict[int, str] = {}
        self.stopping = False
        self.router = Router(self._class_changed, allowlist_for(config.allowed_functions))
        self.routed: dict[str, int] = {"thread": 0, "process": 0}
        self._warm: set[tuple[int, str]] = set()  # (pid, function) that ran once: later runs are measured

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        with self.cond:
            self.children = [
                ChildSlot(i, MeasuredChild(self.ctx, self.config.allowed_functions)) for i in range(self.n_processes)
            ]
        self.slots.start()
        log.info(
            "auto: a thread pool of %d and a process pool of %d (%d jobs at once); rule: %s",
            self.n_threads,
            self.n_processes,
            self.capacity,
            self.router.describe_rule(),
        )

    def _class_changed(self, func_name: str, old: str | None, new: str, p: Profile) -> None:
        def fmt(ratio: float | None, cpu: float | None, runs: int) -> str:
            if ratio is None or cpu is None:
                return "not measured"
            return f"{ratio:.2f} ({cpu * 1000:.1f} ms CPU per job, {runs} run(s))"

        basis = p.basis or (
            f"CPU/wall in a process {fmt(p.process_ratio, p.process_cpu, p.process_runs)}, "
            f"in a thread {fmt(p.thread_ratio, p.thread_cpu, p.thread_runs)}"
        )
        log.info(
            "auto: %s is now %s-bound -> runs in %s (was: %s); %s",
            func_name,
            new,
            "processes" if new == CPU else "threads",
            "new" if old is None else f"{old}-bound",
            basis,
        )
        self._event("route_changed", function=func_name, pool=POOL_OF_CLASS[new])

    def submit(self, work: Callable[[], None]) -> None:
        with self.cond:
            self.unplaced += 1

        def run() -> None:
            slot = self.slots.current()
            if slot is not None:
                slot.extra["unplaced"] = True
            try:
                work()
            finally:  # a job that never reached perform() (rejected, Redis trouble) is "placed" too
                if slot is None or slot.extra.pop("unplaced", False):
                    self._placed()

        self.slots.submit(run)

    def _placed(self) -> None:
        with self.cond:
            self.unplaced -= 1
            self.cond.notify_all()

    def current_token(self) -> object:
        return self.slots.current()

    def admit(self, timeout: float) -> bool:
        """Not while a job waits for a full sub-pool or ADMIT_AHEAD are in transit (see the docstring)."""
        with self.cond:
            if self.waiting == 0 and self.unplaced < ADMIT_AHEAD:
                return True
            self.cond.wait(timeout)
            return self.waiting == 0 and self.unplaced < ADMIT_AHEAD

    def pool_of(self, job: Job) -> str:
        return str(getattr(job, POOL_ATTRIBUTE, self.name))

    # ------------------------------------------------------------------ placing a job

    def _free_child(self) -> ChildSlot | None:
        for cs in self.children:
            if not cs.busy:
                return cs
        return None

    def _acquire(self, slot: Slot, job: Job, route: Route, deadline: float, timeout: float) -> ChildSlot | None:
        """Take a place for the job: a child (returned) or a thread token (None). Waits if full."""
        func_name = str(job.func_name)
        waiting = False
        since = time.monotonic()
        try:
            with self.cond:
                while True:
                    if route.new and not self.router.is_new(func_name):
                        old_pool = route.pool
                        route = self.router.route(job)  # classed meanwhile (a run ended, or early)
                        if waiting and old_pool == "process" and route.pool != "process":
                            self.blocked_for_process -= 1
                    if self.stopping:
                        raise RequeueJob("the worker is stopping; the job was not started and is re-queued")
                    if route.pool == "process" or ((route.probe or route.idle_child) and self.blocked_for_process == 0):
                        cs = self._free_child()
                        if cs is not None:
                            cs.busy = True
                            return cs
                    if route.pool == "thread" and self.free_threads > 0:
                        self.free_threads -= 1
                        return None
                    if (
                        route.new
                        and self.free_threads > 0
                        and time.monotonic() - since >= EARLY_SECONDS
                        and self.router.start_thread_probe(func_name)
                    ):
                        slot.extra["thread_probe"] = func_name
                        self.free_threads -= 1
                        return None
                    if route.pool == "thread" and route.overflow and self.blocked_for_process == 0:
                        cs = self._free_child()
                        if cs is not None:
                            cs.busy = True
                            return cs
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise _timeout_error(timeout, f"no {route.pool} slot became free within it")
                    if not waiting:
                        waiting = True
                        self.waiting += 1
                        if route.pool == "process":
                            self.blocked_for_process += 1
                    self.cond.wait(min(left, 0.25))
                    if route.new:
                        self.router.early(func_name)
        finally:
            with self.cond:
                if waiting:
                    self.waiting -= 1
                    if route.pool == "process":
                        self.blocked_for_process -= 1
                if slot.extra.pop("unplaced", False):
                    self.unplaced -= 1
                self.cond.notify_all()

    def _release_thread(self, slot: Slot) -> None:
        with self.cond:
            if slot.extra.pop("thread_token", False):
                self.free_threads += 1
                self.cond.notify_all()

    def _release_child(self, cs: ChildSlot) -> None:
        with self.cond:
            cs.busy = False
            self.cond.notify_all()

    def _replace(self, cs: ChildSlot, reason: str) -> None:
        with cs.lock:
            cs.child.kill()
            if self.stopping:
                return  # no replacement while stopping (a cold stop killed it)
            cs.child = MeasuredChild(self.ctx, self.config.allowed_functions)
        self.children_replaced += 1
        self._event("child_replaced", reason=reason)

    # ------------------------------------------------------------------ running it

    def perform(self, job: Job, timeout: float) -> Any:
        slot = self.slots.current()
        if slot is None:
            raise RuntimeError("AutoStrategy.perform called outside a pool slot")
        deadline = time.monotonic() + timeout
        route = self.router.route(job)
        cs = self._acquire(slot, job, route, deadline, timeout)
        pool = "thread" if cs is None else "process"
        setattr(job, POOL_ATTRIBUTE, pool)  # read by pool_of(): the metrics' pool label
        with self.cond:
            self.routed[pool] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("auto: job %s (%s) -> %s (%s)", job.id, job.func_name, pool, route.reason)
        if cs is None:
            return self._perform_in_thread(job, slot)
        return self._perform_in_child(job, slot, cs, deadline, timeout)

    def _observe(self, pid: int, func_name: str, pool: str, cpu: float, wall: float) -> None:
        """Count a run, unless it was the function's first in that process (imports, warm-up)."""
        key = (pid, func_name)
        with self.cond:
            first = key not in self._warm
            if first:
                if len(self._warm) > 10_000:  # children come and go: forget old pids now and then
                    self._warm.clear()
                self._warm.add(key)
        if not first:
            self.router.observe(func_name, pool, cpu, wall)

    def _perform_in_thread(self, job: Job, slot: Slot) -> Any:
        slot.extra["thread_token"] = True
        slot.extra["where"] = "thread"
        t0_cpu, t0_wall, s0 = time.thread_time(), time.perf_counter(), schedstat()
        func_name = str(job.func_name)
        rid = self.router.run_started(func_name, _thread_cpu_reader()) if self.router.is_new(func_name) else None
        ok = False
        try:
            value = job.perform()
            ok = True
            return value
        finally:
            cpu = time.thread_time() - t0_cpu
            wall = time.perf_counter() - t0_wall - runqueue_wait(s0)
            slot.extra.pop("where", None)
            self._release_thread(slot)
            self.router.run_ended(func_name, rid)
            if ok:
                self._observe(os.getpid(), func_name, "thread", cpu, wall)
            probing = slot.extra.pop("thread_probe", None)
            if probing is not None:
                self.router.end_thread_probe(str(probing))

    def _perform_in_child(self, job: Job, slot: Slot, cs: ChildSlot, deadline: float, timeout: float) -> Any:
        slot.extra["child"] = cs
        func_name = str(job.func_name)
        rid: int | None = None
        try:
            child = cs.child
            if not child.alive():
                self._replace(cs, "crashed")
                child = cs.child
            if self.router.is_new(func_name):
                rid = self.router.run_started(func_name, _process_cpu_reader(child.pid))
            t0 = time.perf_counter()
            remaining = max(0.001, deadline - time.monotonic())
            try:
                value, cpu, waited = _solo_call(child, job, remaining)
            except JobTimeoutException:
                pid = child.pid
                self._replace(cs, "timed_out")
                raise _timeout_error(timeout, f"pool child {pid} was killed") from None
            except _SoloDied as d:
                reason = self.kill_reasons.pop(d.pid, None)
                self._replace(cs, "crashed" if reason is None else reason)
                if reason == "timed_out":
                    raise _timeout_error(timeout, f"pool child {d.pid} was killed") from None
                if reason == "cold_stop":
                    raise RequeueJob(f"cold stop: pool child {d.pid} was killed; the job was re-queued") from None
                raise ChildCrashed(
                    f"pool child {d.pid} died while running the job: {describe_exit(d.exitcode)}"
                ) from None
            except ChildCrashed:
                self._replace(cs, "crashed")
                raise
            wall = time.perf_counter() - t0 - waited
            child.jobs_done += 1
            self._after_job(cs)
            self.router.run_ended(func_name, rid)
            rid = None
            self._observe(child.pid, func_name, "process", cpu, wall)
            return value
        finally:
            self.router.run_ended(func_name, rid)
            slot.extra.pop("child", None)
            self._release_child(cs)

    def _after_job(self, cs: ChildSlot) -> None:
        child = cs.child
        reason = recycle_reason(child.pid, child.jobs_done, self.config, "auto pool child")
        if reason is not None:
            with cs.lock:
                child.stop()
                cs.child = MeasuredChild(self.ctx, self.config.allowed_functions)
            self.children_replaced += 1
            self._event("child_replaced", reason=reason)

    def abandon(self, slot_token: object) -> bool:
        if not isinstance(slot_token, Slot):
            return False
        cs = slot_token.extra.get("child")
        if isinstance(cs, ChildSlot):
            # perform() normally kills an overdue child itself; this is the fallback.
            self.kill_reasons[cs.child.pid] = "timed_out"
            with contextlib.suppress(ProcessLookupError):
                os.kill(cs.child.pid, signal.SIGKILL)
            return True
        if slot_token.extra.get("where") == "thread" and not slot_token.retired:
            # As the thread strategy: a thread cannot be killed. Its job is failed by the caller,
            # the thread is dropped when the function returns, and a fresh one takes its place
            # (its place in the thread pool too, so the pool keeps its size).
            self._release_thread(slot_token)
            self.slots.retire(slot_token)
            self.runaway_threads += 1
            self._event("runaway_thread")
            log.warning(
                "auto: a thread job overran its timeout and cannot be killed; a replacement thread was started "
                "(%d runaway so far)",
                self.runaway_threads,
            )
        return False

    def kill_running(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
            children = [cs.child for cs in self.children]
        for child in children:
            if child.alive():
                self.kill_reasons[child.pid] = "cold_stop"
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)

    def child_pids(self) -> list[int]:
        with self.cond:
            return [cs.child.pid for cs in self.children if cs.child.pid]

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.slots.shutdown(wait, timeout)
        for cs in self.children:
            with cs.lock:
                if wait:
                    cs.child.stop()
                else:
                    cs.child.kill()
        if self.routed["thread"] or self.routed["process"]:
            log.info(
                "auto: %d job(s) ran in threads, %d in processes; classes: %s",
                self.routed["thread"],
                self.routed["process"],
                ", ".join(f"{f}={p.klass or '?'}" for f, p in sorted(self.router.profiles.items())) or "-",
            )


STRATEGIES["hybrid"] = HybridStrategy
STRATEGIES["auto"] = AutoStrategy
