"""``hybrid``: ``P`` child processes x ``T`` threads each.

``P`` pool children (forkserver), each running ``T`` threads (``poolchild.threaded_child_main``).
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
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.errors import ChildCrashed, RemoteJobError, RequeueJob
from worker.strategies.base import Strategy, StrategyConfig, Work
from worker.strategies.children import (
    Call,
    ChildDied,
    Death,
    Overdue,
    PoolChild,
    ThreadedChild,
    call_message,
    describe_exit,
    over_memory,
    spawn_context,
    timeout_error,
    unpack_reply,
)
from worker.strategies.slots import Slot, SlotThreads

if TYPE_CHECKING:
    from rq.job import Job

    from worker.hooks import Hooks

log = logging.getLogger("worker.strategies")


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


@dataclass
class HybridSlot:
    """What a hybrid lifecycle slot is waiting for: a call in a child, or a crash suspect's re-run."""

    call: Call | None = None
    solo: PoolChild | None = None


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
        self.ctx = spawn_context(config)
        self.slots = SlotThreads(self.capacity, "poolq-hybrid", HybridSlot)
        self.cond = threading.Condition()
        self.children: list[ThreadedChild | None] = [None] * self.processes
        self.retiring: list[ThreadedChild] = []
        self.solos: dict[int, PoolChild] = {}
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
                child.send_stop()
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
        self._replaced(reason)

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
                    self._replaced(reason)
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
        child.sigkill()
        return others

    # ------------------------------------------------------------------ the strategy interface

    def submit(self, work: Work) -> None:
        self.slots.submit(work)

    def current_token(self) -> object:
        return self.slots.current()

    def pool_of(self, job: Job) -> str:
        return self.name

    def perform(self, job: Job, timeout: float) -> Any:
        slot = self.slots.current_slot("HybridStrategy.perform")
        deadline = time.monotonic() + timeout
        call = self._dispatch(job)
        slot.state.call = call
        try:
            if not call.event.wait(timeout):
                others = self._kill_overdue(call)
                if others is not None:
                    raise timeout_error(
                        timeout,
                        f"pool child {call.child.pid} was killed"
                        + (f" ({others} job(s) running beside it re-queued)" if others > 0 else ""),
                    )
                call.event.wait(10)
        finally:
            slot.state.call = None
        reply = call.reply
        if reply is None:
            return self._after_death(job, call, slot, deadline, timeout)
        self._after_reply(call.child)
        return unpack_reply(job, reply[1:])[1]

    def _after_reply(self, child: ThreadedChild) -> None:
        if child.state != "live":
            return
        if over_memory(child.pid, self.config, "hybrid pool child", "replacing it once its running jobs end"):
            stop_now = False
            with self.cond:
                self._retire(child, "memory")
                if child.state == "retiring" and not child.inflight:
                    child.state = "stopping"
                    stop_now = True
            if stop_now:
                child.send_stop()

    def _after_death(self, job: Job, call: Call, slot: Slot[HybridSlot], deadline: float, timeout: float) -> Any:
        child = call.child
        death = child.death or Death(child.pid, child.process.exitcode, 1)
        if call.id in child.overdue or time.monotonic() >= deadline:
            raise timeout_error(timeout, f"pool child {death.pid} was killed")
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

    def _isolate(self, job: Job, slot: Slot[HybridSlot], deadline: float, timeout: float, death: Death) -> Any:
        """Re-run a crash suspect alone in a one-job child: the culprit crashes again, the others finish."""
        first = f"pool child {death.pid} died ({describe_exit(death.exitcode)}) with {death.in_flight} jobs in flight"
        log.info("hybrid: %s; re-running job %s alone in a fresh child to find the culprit", first, job.id)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise timeout_error(timeout, first)
        with self.cond:
            if self.closing:
                raise RequeueJob(f"{first}; the worker is stopping, so the job was re-queued")
            solo = PoolChild(self.ctx, self.config.allowed_functions, measure_runqueue=True)
            self.solos[solo.pid] = solo
        slot.state.solo = solo
        try:
            return unpack_reply(job, solo.call(job, remaining))[1]
        except Overdue:
            solo.kill()
            raise timeout_error(timeout, f"{first}; its re-run alone in pool child {solo.pid} was killed") from None
        except ChildDied as d:
            if d.reason == "timed_out":
                raise timeout_error(timeout, f"its re-run alone in pool child {d.pid} was killed") from None
            if d.reason == "cold_stop":
                raise d.error(timeout) from None
            raise ChildCrashed(
                f"pool child {d.pid} died while running the job alone: {describe_exit(d.exitcode)} "
                f"(re-run in isolation after {first})"
            ) from None
        finally:
            slot.state.solo = None
            with self.cond:
                self.solos.pop(solo.pid, None)
            if solo.alive():
                solo.stop()
            else:
                solo.kill()

    def abandon(self, slot_token: object) -> bool:
        # perform() kills an overdue child itself; this is the monitor's fallback.
        if not isinstance(slot_token, Slot) or not isinstance(slot_token.state, HybridSlot):
            return False
        call, solo = slot_token.state.call, slot_token.state.solo
        if call is not None:
            self._kill_overdue(call)
            return True
        if solo is not None:
            solo.terminate("timed_out")
            return True
        return False

    def kill_running(self) -> None:
        with self.cond:
            self.closing = True
            children = self._live_children()
            for c in children:
                if c.kill_reason is None:
                    c.kill_reason = "cold_stop"
            solos = list(self.solos.values())
        for c in children:
            c.sigkill()
        for solo in solos:
            solo.terminate("cold_stop")

    def _live_children(self) -> list[ThreadedChild]:
        """The children not known dead, retiring ones included (caller holds ``cond``)."""
        return [c for c in (*self.children, *self.retiring) if c is not None and c.state != "dead"]

    def child_pids(self) -> list[int]:
        with self.cond:
            return [c.pid for c in self._live_children() if c.pid] + [p for p in self.solos if p]

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        with self.cond:
            self.closing = True
        self.slots.shutdown(wait, timeout)
        with self.cond:
            children = self._live_children()
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
