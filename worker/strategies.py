"""How jobs run: one small class per strategy, picked from :data:`STRATEGIES`.

The dequeue loop (``worker/pool_worker.py``) never branches on the strategy. It asks a
strategy for its ``capacity``, hands it units of lifecycle work with ``submit``, and the
lifecycle code calls ``perform(job, timeout)`` at the one point where the job's function runs.
Everything that differs between threads, processes and inline execution lives here:

- where the function runs (the slot thread, a pool child process, the worker's main thread);
- how an overdue job is stopped (kill the child; SIGALRM in the main thread; nothing for a
  thread, which cannot be killed: it is abandoned and replaced, see :meth:`abandon`);
- which pids belong to the pool (for the memory and CPU of the process tree).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue as queue_mod
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from worker import defaults
from worker.allowlist import mark_resolved
from worker.errors import ChildCrashed, FunctionNotAllowed, RemoteJobError, RemoteTraceback, RequeueJob
from worker.poolchild import child_main

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, ForkServerProcess

    from rq.job import Job

    from worker.hooks import Hooks

log = logging.getLogger("worker.strategies")

Work = Callable[[], None]


@dataclass
class StrategyConfig:
    available_cpus: int
    concurrency: int | None  # None: size from the CPUs
    threads_per_cpu: int
    max_jobs_per_child: int = 0
    max_child_memory_mb: float = 0.0
    processes: int | None = None  # hybrid and auto: child processes (None: one per available CPU)
    threads_per_process: int | None = None  # hybrid: threads in each child (None: threads_per_cpu)
    # Imported once in the forkserver, so a new or recycled child starts warm. A process-pool
    # child imports nothing else (worker/poolchild.py): no rq or redis-py in the children.
    preload: tuple[str, ...] = ("worker.poolchild", "worker.jobs")
    # WORKER_ALLOWED_FUNCTIONS, for the pool children: they resolve the jobs' functions under it
    # (the parent checks the name only and imports nothing of a job it sends to a child).
    allowed_functions: tuple[str, ...] = defaults.ALLOWED_FUNCTIONS


@dataclass
class Slot:
    """One unit of concurrency: a thread that runs lifecycle work, and what it owns."""

    index: int
    thread: threading.Thread | None = None
    retired: bool = False
    child: PoolChild | None = None
    jobs_done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Strategy(ABC):
    """The interface every strategy implements; see the module docstring."""

    name: ClassVar[str]
    advice: ClassVar[str]

    def __init__(self, config: StrategyConfig, hooks: Hooks | None = None) -> None:
        self.config = config
        self.hooks = hooks
        self.capacity = self.size(config)
        self.runaway_threads = 0
        self.children_replaced = 0

    @classmethod
    @abstractmethod
    def size(cls, config: StrategyConfig) -> int:
        """The pool size for ``config``: the explicit concurrency, or a figure from the CPUs."""

    def start(self) -> None:
        """Start the pool (threads, children) before the first job is dequeued."""

    @abstractmethod
    def submit(self, work: Work) -> None:
        """Run ``work`` (the lifecycle of one job) in a free slot. The caller guarantees a slot is free."""

    @abstractmethod
    def perform(self, job: Job, timeout: float) -> Any:
        """Run the job's function where this strategy runs code; raise on failure or timeout."""

    def abandon(self, slot_token: object) -> bool:
        """The job in ``slot_token`` is overdue: stop it, or give up on its slot.

        Returns True when the job was stopped and its slot will record the timeout itself;
        False when the caller must fail the job (the code could not be stopped).
        """
        return False

    def current_token(self) -> object:
        """An opaque handle on the slot running the calling thread, for :meth:`abandon`."""
        return threading.get_ident()

    def kill_running(self) -> None:
        """Cold stop: stop every running job now, where the strategy can."""

    def runs_in_main_thread(self) -> bool:
        """True while a job runs in the worker's main thread (a cold stop must interrupt it)."""
        return False

    def admit(self, timeout: float) -> bool:
        """May the dequeue loop take another job now? Blocks up to ``timeout`` (auto: not while a
        dequeued job still waits for its sub-pool, so jobs are not hoarded)."""
        return True

    def pool_of(self, job: Job) -> str:
        """The pool that ran ``job``: the ``pool`` label of its metrics (a sub-pool for auto)."""
        return self.name

    @abstractmethod
    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        """Stop the pool; with ``wait``, let running work end first (up to ``timeout``)."""

    def child_pids(self) -> list[int]:
        """Pids of the pool's child processes (none for in-process strategies)."""
        return []

    def _event(self, event: str, **fields: Any) -> None:
        if self.hooks is not None:
            self.hooks.on_event(None, event, strategy=self.name, **fields)


class SlotThreads:
    """A fixed number of long-lived threads that run submitted work, one item each at a time.

    Unlike ``ThreadPoolExecutor`` a slot can be *retired* (its thread is stuck in a job that
    cannot be killed) and replaced by a fresh thread, so the pool keeps its configured size.
    """

    def __init__(self, size: int, name: str, on_start: Callable[[Slot], None] | None = None) -> None:
        self.name = name
        self.on_start = on_start
        self.items: queue_mod.SimpleQueue[Work | None] = queue_mod.SimpleQueue()
        self.slots: list[Slot] = []
        self.local = threading.local()
        self.lock = threading.Lock()
        self.size = size

    def start(self) -> None:
        for i in range(self.size):
            self._spawn(Slot(i))

    def _spawn(self, slot: Slot) -> None:
        t = threading.Thread(target=self._loop, args=(slot,), name=f"{self.name}-{slot.index}", daemon=True)
        slot.thread = t
        with self.lock:
            self.slots.append(slot)
        t.start()

    def _loop(self, slot: Slot) -> None:
        self.local.slot = slot
        if self.on_start is not None:
            self.on_start(slot)
        while True:
            item = self.items.get()
            if item is None:
                return
            try:
                item()
            except BaseException:  # the lifecycle code handles job errors; this is a bug guard
                log.exception("slot %s: unhandled error in lifecycle work", slot.index)
            if slot.retired:
                return

    def current(self) -> Slot | None:
        return getattr(self.local, "slot", None)

    def submit(self, work: Work) -> None:
        self.items.put(work)

    def retire(self, slot: Slot) -> Slot:
        """Give up on ``slot``'s thread (it exits when its job returns) and start a replacement."""
        slot.retired = True
        with self.lock:
            if slot in self.slots:
                self.slots.remove(slot)
        fresh = Slot(slot.index)
        self._spawn(fresh)
        return fresh

    def live_slots(self) -> list[Slot]:
        with self.lock:
            return list(self.slots)

    def shutdown(self, wait: bool, timeout: float | None) -> None:
        slots = self.live_slots()
        for _ in slots:
            self.items.put(None)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for s in slots:
                if s.thread is None:
                    continue
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                s.thread.join(left)


class InlineStrategy(Strategy):
    """One job at a time in the worker's main thread: RQ's SimpleWorker, the baseline."""

    name = "inline"
    advice = "one job at a time in the worker process (the baseline to compare against)"

    @classmethod
    def size(cls, config: StrategyConfig) -> int:
        return 1

    def __init__(self, config: StrategyConfig, hooks: Hooks | None = None) -> None:
        super().__init__(config, hooks)
        self._busy = False

    def submit(self, work: Work) -> None:
        self._busy = True
        try:
            work()
        finally:
            self._busy = False

    def runs_in_main_thread(self) -> bool:
        return self._busy

    def perform(self, job: Job, timeout: float) -> Any:
        # SIGALRM interrupts Python code in the main thread, as RQ's SimpleWorker does.
        if threading.current_thread() is threading.main_thread():
            with UnixSignalDeathPenalty(max(1, round(timeout)), JobTimeoutException, job_id=job.id):
                return job.perform()
        return job.perform()

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        pass


class ThreadStrategy(Strategy):
    """A pool of threads in the worker process. Cheap in memory, shares one GIL."""

    name = "thread"
    advice = "threads: for I/O-bound jobs (network, disk, sleeps); CPU-bound Python code is serialised by the GIL"

    @classmethod
    def size(cls, config: StrategyConfig) -> int:
        if config.concurrency is not None:
            return config.concurrency
        return config.available_cpus * config.threads_per_cpu

    def __init__(self, config: StrategyConfig, hooks: Hooks | None = None) -> None:
        super().__init__(config, hooks)
        self.threads = SlotThreads(self.capacity, "poolq-thread")

    def start(self) -> None:
        self.threads.start()

    def submit(self, work: Work) -> None:
        self.threads.submit(work)

    def perform(self, job: Job, timeout: float) -> Any:
        return job.perform()

    def current_token(self) -> object:
        return self.threads.current()

    def abandon(self, slot_token: object) -> bool:
        # A thread cannot be killed: the job has been failed by the caller; the thread goes on
        # until its function returns and is then dropped. A fresh thread takes its place.
        if isinstance(slot_token, Slot) and not slot_token.retired:
            self.threads.retire(slot_token)
            self.runaway_threads += 1
            self._event("runaway_thread")
            log.warning(
                "a thread job overran its timeout and cannot be killed; a replacement thread was started "
                "(%d runaway so far)",
                self.runaway_threads,
            )
        return False

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        self.threads.shutdown(wait, timeout)


# --------------------------------------------------------------------------------------------
# Process pool


# The child's loop lives in a module that imports only the standard library, so the children
# (and the forkserver they are forked from) do not carry rq and redis-py.
_child_main = child_main


class PoolChild:
    """One child process of the pool and the pipe to it."""

    def __init__(self, ctx: ForkServerContext, patterns: tuple[str, ...]) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process: ForkServerProcess = ctx.Process(target=_child_main, args=(child_conn, patterns), daemon=True)
        self.process.start()
        child_conn.close()
        self.jobs_done = 0

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def alive(self) -> bool:
        return self.process.is_alive()

    def wait_reply(self, timeout: float) -> bool:
        """``conn.poll(timeout)`` for any timeout: poll() takes milliseconds as a C int, so a
        wait beyond ~24.8 days (a job with no timeout waits 1e9 s) raised OverflowError after
        the job was sent, and the slot's next job read this job's reply. Waits a day at a time."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if self.conn.poll(max(0.0, min(left, 86400.0))):
                return True
            if left <= 86400.0:
                return False

    def kill(self) -> None:
        """Kill and reap the child. Safe to call twice, from two threads (a slot replacing its
        child while a cold stop kills every child)."""
        if self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.process.join(5)
        with contextlib.suppress(OSError):
            self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(2)
        if self.process.is_alive():
            self.kill()
        with contextlib.suppress(OSError):
            self.conn.close()


def recycle_reason(pid: int, jobs_done: int, cfg: StrategyConfig, what: str) -> str | None:
    """Why a pool child should be replaced after its job ("max_jobs", "memory"), or None.

    Shared by every strategy that keeps children, so the limits mean the same everywhere.
    """
    if cfg.max_jobs_per_child and jobs_done >= cfg.max_jobs_per_child:
        return "max_jobs"
    if not cfg.max_child_memory_mb:
        return None
    try:
        import psutil

        rss = psutil.Process(pid).memory_info().rss
    except Exception:
        return None
    if rss <= cfg.max_child_memory_mb * 1024 * 1024:
        return None
    log.warning(
        "%s %d uses %.0f MiB > WORKER_MAX_CHILD_MEMORY_MB=%g: replacing it",
        what,
        pid,
        rss / 2**20,
        cfg.max_child_memory_mb,
    )
    return "memory"


def unpack_reply(job: Job, reply: tuple[Any, ...]) -> tuple[Any, ...]:
    """A pool child's reply to one call (hybrid's without its call id): the ``"ok"`` tuple, or raise.

    ``"ok"`` and ``"err"`` (the function ran and raised) mean the function resolved in the child
    under the allowlist, which the job's metrics label needs to know; ``"refused"`` raises
    :class:`FunctionNotAllowed` (status ``rejected``); ``"unresolved"`` (no such function, an
    import error) raises :class:`RemoteJobError` with the child's traceback.
    """
    kind = reply[0]
    if kind == "refused":
        raise FunctionNotAllowed(str(reply[1]))
    if kind != "unresolved":
        mark_resolved(job)
    if kind == "ok":
        return reply
    _, type_name, message, tb = reply
    raise RemoteJobError(f"{type_name}: {message}") from RemoteTraceback(tb)


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name} (signal {-exitcode})"
    return f"exited with code {exitcode}"


class ProcessStrategy(Strategy):
    """A pool of child processes (forkserver), one per slot: parallel CPU, hard timeouts.

    The worker's threads keep the job lifecycle (Redis writes) in the parent; each slot thread
    sends the job's function call to its own child and waits. Children are started from a
    forkserver with the job modules preloaded: no ``fork`` of a parent that runs threads.
    """

    name = "process"
    advice = "processes: for CPU-bound jobs (one child per CPU; hard timeouts; a crash fails only its job)"

    @classmethod
    def size(cls, config: StrategyConfig) -> int:
        return config.concurrency if config.concurrency is not None else config.available_cpus

    def __init__(self, config: StrategyConfig, hooks: Hooks | None = None) -> None:
        super().__init__(config, hooks)
        self.ctx: ForkServerContext = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(list(config.preload))
        self.threads = SlotThreads(self.capacity, "poolq-process", on_start=self._start_child)
        self.kill_reasons: dict[int, str] = {}

    def _start_child(self, slot: Slot) -> None:
        slot.child = PoolChild(self.ctx, self.config.allowed_functions)

    def start(self) -> None:
        self.threads.start()

    def submit(self, work: Work) -> None:
        self.threads.submit(work)

    def current_token(self) -> object:
        return self.threads.current()

    def _child(self) -> tuple[Slot, PoolChild]:
        slot = self.threads.current()
        if slot is None:
            raise RuntimeError("ProcessStrategy.perform called outside a pool slot")
        if slot.child is None or not slot.child.alive():
            if slot.child is not None:
                slot.child.kill()
            slot.child = PoolChild(self.ctx, self.config.allowed_functions)
        return slot, slot.child

    def _replace(self, slot: Slot, reason: str) -> None:
        if slot.child is not None:
            slot.child.kill()
        slot.child = PoolChild(self.ctx, self.config.allowed_functions)
        self.children_replaced += 1
        self._event("child_replaced", reason=reason)

    def perform(self, job: Job, timeout: float) -> Any:
        slot, child = self._child()
        try:
            child.conn.send((job.func_name, list(job.args), dict(job.kwargs)))
        except (OSError, ValueError) as e:  # broken pipe: the child died between jobs
            self._replace(slot, "crashed")
            raise ChildCrashed(f"pool child {child.pid} was gone before the job started: {e}") from None
        except Exception as e:  # arguments that cannot be pickled (pickle serializer only)
            raise RemoteJobError(f"job arguments could not be sent to the pool child: {e}") from None
        ready = child.wait_reply(timeout)
        if not ready:
            pid = child.pid
            self._replace(slot, "timed_out")
            raise JobTimeoutException(
                f"Task exceeded maximum timeout value ({timeout:g} seconds); pool child {pid} was killed"
            )
        try:
            reply = child.conn.recv()
        except (EOFError, OSError):
            child.process.join(5)
            pid, code = child.pid, child.process.exitcode
            reason = self.kill_reasons.pop(pid, None)
            self._replace(slot, "crashed")
            if reason == "cold_stop":
                raise RequeueJob(f"cold stop: pool child {pid} was killed; the job was re-queued") from None
            if reason == "timed_out":
                raise JobTimeoutException(
                    f"Task exceeded maximum timeout value ({timeout:g} seconds); pool child {pid} was killed"
                ) from None
            raise ChildCrashed(f"pool child {pid} died while running the job: {describe_exit(code)}") from None
        child.jobs_done += 1
        self._after_job(slot, child)
        return unpack_reply(job, reply)[1]

    def _after_job(self, slot: Slot, child: PoolChild) -> None:
        reason = recycle_reason(child.pid, child.jobs_done, self.config, "pool child")
        if reason is not None:
            child.stop()
            slot.child = PoolChild(self.ctx, self.config.allowed_functions)
            self.children_replaced += 1
            self._event("child_replaced", reason=reason)

    def abandon(self, slot_token: object) -> bool:
        # Normally perform() kills an overdue child itself; this is the fallback.
        if isinstance(slot_token, Slot) and slot_token.child is not None:
            self.kill_reasons[slot_token.child.pid] = "timed_out"
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot_token.child.pid, signal.SIGKILL)
            return True
        return False

    def kill_running(self) -> None:
        for slot in self.threads.live_slots():
            if slot.child is not None and slot.child.alive():
                self.kill_reasons[slot.child.pid] = "cold_stop"
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.child.pid, signal.SIGKILL)

    def child_pids(self) -> list[int]:
        return [s.child.pid for s in self.threads.live_slots() if s.child is not None and s.child.pid]

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        self.threads.shutdown(wait, timeout)
        for slot in self.threads.live_slots():
            child = slot.child
            if child is None:
                continue
            try:
                child.stop() if wait else child.kill()
            except Exception:  # stopping must not turn a clean exit into a crash
                log.exception("could not stop pool child %d", child.pid)


STRATEGIES: dict[str, type[Strategy]] = {
    "thread": ThreadStrategy,
    "process": ProcessStrategy,
    "inline": InlineStrategy,
}

# hybrid and auto (worker/composite.py) build on the classes above and add themselves to
# STRATEGIES; importing them here makes the registry complete whichever module is imported first.
import worker.composite  # noqa: E402, F401
