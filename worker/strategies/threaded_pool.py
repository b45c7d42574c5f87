"""hybrid's pool children: ``P`` processes of ``T`` threads each, and the calls in flight in them.

:class:`ThreadedPool` decides which child takes a call (the least busy live one), delivers the
replies (a reader thread per child), retires a child that reached its job or memory budget (no
new calls; it exits once its calls end, its replacement starts at once), and replaces a child
that died, waking the lifecycle slots whose calls died with it (``Call.reply`` stays None).
What a death means for those jobs (a timeout, a re-queue, a re-run alone) is the strategy's
(``hybrid.py``). What runs in each child is ``poolchild.threaded_child_main``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker.errors import ChildCrashed, RemoteJobError, RequeueJob
from worker.poolchild import threaded_child_main
from worker.strategies.base import StrategyConfig
from worker.strategies.children import Child, call_message, describe_exit, over_memory

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext

    from rq.job import Job

log = logging.getLogger("worker.strategies")


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


class ThreadedChild(Child):
    """A hybrid pool child (``poolchild.threaded_child_main``), its calls in flight and the thread
    that reads its replies (``reader``, the strategy's)."""

    def __init__(
        self,
        ctx: ForkServerContext,
        threads: int,
        reader: Callable[[ThreadedChild], None],
        patterns: tuple[str, ...],
    ) -> None:
        super().__init__(ctx, threaded_child_main, (threads, patterns))
        self.threads = threads
        self.send_lock = threading.Lock()
        self.inflight: dict[int, Call] = {}
        self.state = "live"  # live -> retiring (no new calls) -> stopping -> dead
        self.broken = False  # a send failed: the child is dying, its reader thread will replace it
        self.overdue: set[int] = set()
        self.dispatched = 0  # calls sent to it (WORKER_MAX_JOBS_PER_CHILD counts these)
        self.death: Death | None = None
        self.reader = threading.Thread(target=reader, args=(self,), name=f"poolq-hybrid-reader-{self.pid}", daemon=True)
        self.reader.start()

    def send_stop(self) -> None:
        """Ask it to exit once its running calls end (it may be gone already)."""
        with self.send_lock, contextlib.suppress(OSError, ValueError):
            self.conn.send(None)


class ThreadedPool:
    """The ``processes`` threaded children of a hybrid pool (thread-safe, under ``cond``)."""

    def __init__(
        self,
        ctx: ForkServerContext,
        config: StrategyConfig,
        processes: int,
        threads: int,
        on_replaced: Callable[[str], None],
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.threads = threads
        self.on_replaced = on_replaced
        self.cond = threading.Condition()
        self.children: list[ThreadedChild | None] = [None] * processes
        self.retiring: list[ThreadedChild] = []
        self.closing = False
        self._ids = itertools.count(1)

    def start(self) -> None:
        with self.cond:
            for i in range(len(self.children)):
                self.children[i] = self._spawn()

    def live(self) -> list[ThreadedChild]:
        """The children not known dead, retiring ones included (caller holds ``cond``)."""
        return [c for c in (*self.children, *self.retiring) if c is not None and c.state != "dead"]

    def _spawn(self) -> ThreadedChild:
        return ThreadedChild(self.ctx, self.threads, self._read, self.config.allowed_functions)

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

    def dispatch(self, job: Job) -> Call:
        """Send ``job`` to the least busy live child; raises RequeueJob while stopping."""
        msg_args = call_message(job)
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
                    self.retire(child, "max_jobs")
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
                child.send_stop()
        self._exited(child)

    def retire(self, child: ThreadedChild, reason: str) -> None:
        """Stop giving ``child`` work, start its replacement; it stops once its calls end (holds cond)."""
        if child.state != "live":
            return
        child.state = "retiring"
        self.retiring.append(child)
        for i, c in enumerate(self.children):
            if c is child:
                self.children[i] = None if self.closing else self._spawn()
        self.on_replaced(reason)

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
                    self.on_replaced(reason)
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

    def kill_overdue(self, call: Call) -> int | None:
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
        child.sigkill()
        return others

    def retire_if_over_memory(self, child: ThreadedChild) -> None:
        """After a reply: a live child over WORKER_MAX_CHILD_MEMORY_MB is retired."""
        if child.state != "live":
            return
        if over_memory(child.pid, self.config, "hybrid pool child", "replacing it once its running jobs end"):
            stop_now = False
            with self.cond:
                self.retire(child, "memory")
                if child.state == "retiring" and not child.inflight:
                    child.state = "stopping"
                    stop_now = True
            if stop_now:
                child.send_stop()

    def kill_all(self) -> None:
        """Cold stop: no new calls; every child killed (its calls are re-queued by their slots)."""
        with self.cond:
            self.closing = True
            children = self.live()
            for c in children:
                if c.kill_reason is None:
                    c.kill_reason = "cold_stop"
        for c in children:
            c.sigkill()

    def close(self, wait: bool, timeout: float | None) -> None:
        """Stop every child: let it finish its calls (``wait``) or kill it; reap them all."""
        with self.cond:
            self.closing = True
            children = self.live()
            for c in children:
                c.state = "stopping"
        for c in children:
            if wait:
                c.send_stop()
            else:
                c.sigkill()
        deadline = time.monotonic() + (timeout if timeout is not None else 5.0)
        for c in children:
            c.process.join(max(0.0, deadline - time.monotonic()))
            if c.process.is_alive():
                c.sigkill()
                c.process.join(2)
            c.reader.join(2)
