"""``auto``: a thread pool and a process pool in one worker, each job where its function runs best.

A thread pool (jobs run in the lifecycle slot thread itself, in the worker process) and a
process pool (one job per child, as the process strategy). Each job is routed in
:meth:`AutoStrategy.perform` by :class:`~worker.strategies.routing.Router` (``routing.py``: the
hints, the measurements, the rule). This module places each job and runs it.

**Waiting for a full sub-pool.** The dequeue loop holds one semaphore of ``capacity`` =
threads + processes lifecycle slots, and a job's class is only known once it is dequeued. A
job whose sub-pool is full waits for it in its lifecycle slot. That cannot deadlock: a
sub-pool slot is held only by a job that is running, and a running job needs nothing else to
finish (or to be stopped at its timeout). It must not prefetch either (jobs held in memory
while the other sub-pool idles, that another replica could have run): the dequeue loop asks
:meth:`AutoStrategy.admit` (``places.Places``) before each dequeue, which holds it while a job
waits for a full sub-pool, and while ``ADMIT_AHEAD`` jobs are *in transit* (dequeued, not yet placed:
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

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from worker.allowlist import allowlist_for
from worker.events import RouteChanged
from worker.hints import CPU, POOL_OF_CLASS
from worker.poolchild import runqueue_wait, schedstat
from worker.strategies.base import Strategy, StrategyConfig
from worker.strategies.children import PoolChild, call_child, recycle_reason, spawn_context, unpack_reply
from worker.strategies.places import AutoSlot, ChildSlot, Places
from worker.strategies.routing import Profile, Router, process_cpu_reader, thread_cpu_reader
from worker.strategies.slots import Slot, SlotThreads, Work

if TYPE_CHECKING:
    from rq.job import Job

    from worker.hooks import Hooks

log = logging.getLogger("worker.strategies")

# Set on the Job object (not saved to Redis) by perform(): the sub-pool that ran it.
POOL_ATTRIBUTE = "poolq_pool"


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


def _measured(reply: tuple[Any, ...]) -> tuple[Any, float, float]:
    """(value, CPU seconds, seconds it waited for a core) of a measuring child's ok reply."""
    return reply[1], float(reply[2]), float(reply[3]) if len(reply) > 3 else 0.0


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
        self.ctx = spawn_context(config)
        self.slots = SlotThreads(self.capacity, "poolq-auto", AutoSlot)
        self.router = Router(self._class_changed, allowlist_for(config.allowed_functions))
        self.places = Places(self.n_threads, self.router)
        self.cond = self.places.cond
        self.routed: dict[str, int] = {"thread": 0, "process": 0}
        self._warm: set[tuple[int, str]] = set()  # (pid, function) that ran once: later runs are measured

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        with self.cond:
            self.places.children = [ChildSlot(i, self._new_child()) for i in range(self.n_processes)]
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
        self._emit(RouteChanged(func_name, POOL_OF_CLASS[new]))

    def _new_child(self) -> PoolChild:
        return PoolChild(self.ctx, self.config.allowed_functions, measure_runqueue=True)

    def submit(self, work: Work) -> None:
        self.places.submitted()

        def run() -> None:
            slot = self.slots.current()
            if slot is not None:
                slot.state.unplaced = True
            try:
                work()
            finally:  # a job that never reached perform() (rejected, Redis trouble) is "placed" too
                if slot is None or slot.state.take_unplaced():
                    self.places.placed()

        self.slots.submit(run)

    def current_token(self) -> object:
        return self.slots.current()

    def dequeue_batch(self, limit: int) -> int:
        return 1  # admit() decides before each job: a batch would be held unplaced

    def admit(self, timeout: float) -> bool:
        return self.places.admit(timeout)

    def pool_of(self, job: Job) -> str:
        return str(getattr(job, POOL_ATTRIBUTE, self.name))

    def _replace(self, cs: ChildSlot, reason: str) -> None:
        with cs.lock:
            cs.child.kill()
            if self.places.stopping:
                return  # no replacement while stopping (a cold stop killed it)
            cs.child = self._new_child()
        self._replaced(reason)

    # ------------------------------------------------------------------ running it

    def perform(self, job: Job, timeout: float) -> Any:
        slot = self.slots.current_slot("AutoStrategy.perform")
        deadline = time.monotonic() + timeout
        route = self.router.route(job)
        cs = self.places.acquire(slot.state, job, route, deadline, timeout)
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

    def _perform_in_thread(self, job: Job, slot: Slot[AutoSlot]) -> Any:
        slot.state.thread_token = True
        slot.state.in_thread = True
        t0_cpu, t0_wall, s0 = time.thread_time(), time.perf_counter(), schedstat()
        func_name = str(job.func_name)
        rid = self.router.run_started(func_name, thread_cpu_reader()) if self.router.is_new(func_name) else None
        ok = False
        try:
            value = job.perform()
            ok = True
            return value
        finally:
            cpu = time.thread_time() - t0_cpu
            wall = time.perf_counter() - t0_wall - runqueue_wait(s0)
            slot.state.in_thread = False
            self.places.release_thread(slot.state)
            self.router.run_ended(func_name, rid)
            if ok:
                self._observe(os.getpid(), func_name, "thread", cpu, wall)
            probing, slot.state.thread_probe = slot.state.thread_probe, None
            if probing is not None:
                self.router.end_thread_probe(probing)

    def _perform_in_child(self, job: Job, slot: Slot[AutoSlot], cs: ChildSlot, deadline: float, timeout: float) -> Any:
        slot.state.child = cs
        func_name = str(job.func_name)
        rid: int | None = None
        try:
            child = cs.child
            if not child.alive():
                self._replace(cs, "crashed")
                child = cs.child
            if self.router.is_new(func_name):
                rid = self.router.run_started(func_name, process_cpu_reader(child.pid))
            t0 = time.perf_counter()
            remaining = max(0.001, deadline - time.monotonic())
            reply = call_child(child, job, remaining, timeout, lambda reason: self._replace(cs, reason))
            wall = time.perf_counter() - t0
            self._after_job(cs)
            value, cpu, waited = _measured(unpack_reply(job, reply))
            self.router.run_ended(func_name, rid)
            rid = None
            self._observe(child.pid, func_name, "process", cpu, wall - waited)
            return value
        finally:
            self.router.run_ended(func_name, rid)
            slot.state.child = None
            self.places.release_child(cs)

    def _after_job(self, cs: ChildSlot) -> None:
        child = cs.child
        reason = recycle_reason(child.pid, child.jobs_done, self.config, "auto pool child")
        if reason is not None:
            with cs.lock:
                child.stop()
                cs.child = self._new_child()
            self._replaced(reason)

    def abandon(self, slot_token: object) -> bool:
        if not isinstance(slot_token, Slot) or not isinstance(slot_token.state, AutoSlot):
            return False
        state = slot_token.state
        cs = state.child
        if cs is not None:
            # perform() normally kills an overdue child itself; this is the fallback.
            cs.child.terminate("timed_out")
            return True
        if state.in_thread and not slot_token.retired:
            # As the thread strategy; its place in the thread pool goes to the fresh thread too.
            self.places.release_thread(state)
            self._runaway(self.slots, slot_token, "auto: ")
        return False

    def kill_running(self) -> None:
        for child in self.places.stop():
            if child.alive():
                child.terminate("cold_stop")

    def child_pids(self) -> list[int]:
        with self.cond:
            return [cs.child.pid for cs in self.places.children if cs.child.pid]

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        self.places.stop()
        self.slots.shutdown(wait, timeout)
        for cs in self.places.children:
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
