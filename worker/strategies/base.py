"""The Strategy interface: what the dequeue loop and the job lifecycle may ask of a strategy.

The dequeue loop (``worker/pool_worker.py``) never asks which strategy it has. It asks for
``capacity`` and :meth:`Strategy.dequeue_batch`, may be held back by :meth:`Strategy.admit`,
hands units of lifecycle work to :meth:`Strategy.submit`, and the lifecycle calls
:meth:`Strategy.perform` at the one point where the job's function runs. Everything that
differs between threads, processes and inline execution is behind these methods:

- where the function runs (a slot thread, a pool child process, the worker's main thread);
- how an overdue job is stopped (:meth:`Strategy.abandon`: kill the child; SIGALRM in the main
  thread; nothing for a thread, which cannot be killed: it is abandoned and replaced);
- what a second signal does (:meth:`Strategy.cold_stop`, in the signal handler) and what stops
  every running job (:meth:`Strategy.kill_running`, in the drain);
- which pids belong to the pool (for the memory and CPU of the process tree).

A strategy is one module of this package and one line of the registry in ``__init__``.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from worker import defaults
from worker.events import ChildReplaced, Event, RunawayThread

if TYPE_CHECKING:
    from rq.job import Job

    from worker.hooks import Hooks
    from worker.strategies.slots import Slot, SlotThreads, Work

log = logging.getLogger("worker.strategies")


@dataclass
class StrategyConfig:
    available_cpus: int
    concurrency: int | None  # None: size from the CPUs
    threads_per_cpu: int
    max_jobs_per_child: int = 0
    max_child_memory_mb: float = 0.0
    processes: int | None = None  # hybrid and auto: child processes (None: one per available CPU)
    threads_per_process: int | None = None  # hybrid: threads in each child (None: threads_per_cpu)
    # Imported once in the forkserver, so a new or recycled child starts warm. A pool child
    # imports nothing else (worker/poolchild.py): no rq or redis-py in the children.
    preload: tuple[str, ...] = ("worker.poolchild", "worker.jobs")
    # WORKER_ALLOWED_FUNCTIONS, for the pool children: they resolve the jobs' functions under it
    # (the parent checks the name only and imports nothing of a job it sends to a child).
    allowed_functions: tuple[str, ...] = defaults.ALLOWED_FUNCTIONS


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

    def dequeue_batch(self, limit: int) -> int:
        """How many jobs one dequeue may take at most (the loop's own ``limit`` and the capacity).

        A strategy that holds the loop back in :meth:`admit` (auto) takes one job at a time.
        """
        return min(limit, self.capacity)

    def admit(self, timeout: float) -> bool:
        """May the dequeue loop take another job now? Blocks up to ``timeout`` (auto: not while a
        dequeued job still waits for its sub-pool, so jobs are not hoarded)."""
        return True

    @abstractmethod
    def submit(self, work: Work) -> None:
        """Run ``work`` (the lifecycle of one job) in a free slot. The caller guarantees a slot is free."""

    @abstractmethod
    def perform(self, job: Job, timeout: float) -> Any:
        """Run the job's function where this strategy runs code; raise on failure or timeout."""

    def current_token(self) -> object:
        """An opaque handle on the slot running the calling thread, for :meth:`abandon`."""
        return threading.get_ident()

    def abandon(self, slot_token: object) -> bool:
        """The job in ``slot_token`` is overdue: stop it, or give up on its slot.

        Returns True when the job was stopped and its slot will record the timeout itself;
        False when the caller must fail the job (the code could not be stopped).
        """
        return False

    def cold_stop(self) -> None:
        """A second signal, called in the signal handler (the main thread): interrupt a job that
        runs in this thread (inline raises :class:`~worker.errors.ColdShutdown`). Jobs elsewhere
        are stopped by :meth:`kill_running` once the drain has claimed them."""

    def kill_running(self) -> None:
        """Cold stop: stop every running job now, where the strategy can."""

    def pool_of(self, job: Job) -> str:
        """The pool that ran ``job``: the ``pool`` label of its metrics (a sub-pool for auto)."""
        return self.name

    @abstractmethod
    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        """Stop the pool; with ``wait``, let running work end first (up to ``timeout``)."""

    def child_pids(self) -> list[int]:
        """Pids of the pool's child processes (none for in-process strategies)."""
        return []

    # ------------------------------------------------------------------ shared by the strategies

    def _emit(self, event: Event) -> None:
        if self.hooks is not None:
            self.hooks.emit(None, event)

    def _replaced(self, reason: str) -> None:
        """Count and report one replaced pool child."""
        self.children_replaced += 1
        self._emit(ChildReplaced(reason))

    def _runaway(self, threads: SlotThreads[Any], slot: Slot[Any], what: str) -> None:
        """A thread job overran its timeout: a thread cannot be killed, so its job has been failed
        by the caller, the thread goes on until its function returns and is then dropped, and a
        fresh thread takes its slot (the pool keeps its size)."""
        threads.retire(slot)
        self.runaway_threads += 1
        self._emit(RunawayThread())
        log.warning(
            "%sa thread job overran its timeout and cannot be killed; a replacement thread was started "
            "(%d runaway so far)",
            what,
            self.runaway_threads,
        )
