"""``hybrid``: ``P`` child processes x ``T`` threads each.

``P`` pool children (forkserver), each running ``T`` threads (``poolchild.threaded_child_main``).
A lifecycle slot sends the call to the least busy child and waits for its reply, which a
reader thread per child delivers (``threaded_pool.py``). CPU-bound work gets ``P`` cores,
I/O-bound work ``P x T`` slots. The guarantees of the process strategy, adapted to children that run several jobs:

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

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.errors import ChildCrashed, RequeueJob
from worker.strategies.base import Strategy, StrategyConfig
from worker.strategies.children import (
    ChildDied,
    Overdue,
    PoolChild,
    describe_exit,
    spawn_context,
    timeout_error,
    unpack_reply,
)
from worker.strategies.slots import Slot, SlotThreads, Work
from worker.strategies.threaded_pool import Call, Death, ThreadedPool

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
        self.pool = ThreadedPool(self.ctx, config, self.processes, self.threads_per_process, self._replaced)
        self.cond = self.pool.cond
        self.solos: dict[int, PoolChild] = {}  # crash suspects re-run alone, by pid

    def start(self) -> None:
        self.pool.start()
        self.slots.start()
        log.info(
            "hybrid pool: %d processes x %d threads = %d jobs at once (pids %s)",
            self.processes,
            self.threads_per_process,
            self.capacity,
            ", ".join(str(p) for p in self.child_pids()),
        )

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
        call = self.pool.dispatch(job)
        slot.state.call = call
        try:
            if not call.event.wait(timeout):
                others = self.pool.kill_overdue(call)
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
        self.pool.retire_if_over_memory(call.child)
        return unpack_reply(job, reply[1:])[1]

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
        if child.kill_reason == "cold_stop" or self.pool.closing:
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
            if self.pool.closing:
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
            self.pool.kill_overdue(call)
            return True
        if solo is not None:
            solo.terminate("timed_out")
            return True
        return False

    def kill_running(self) -> None:
        self.pool.kill_all()
        with self.cond:
            solos = list(self.solos.values())
        for solo in solos:
            solo.terminate("cold_stop")

    def child_pids(self) -> list[int]:
        with self.cond:
            return [c.pid for c in self.pool.live() if c.pid] + [p for p in self.solos if p]

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        with self.cond:
            self.pool.closing = True
        self.slots.shutdown(wait, timeout)
        self.pool.close(wait, timeout)
