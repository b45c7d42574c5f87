"""The backend interface: where a cell's worker runs and how its resources are read.

The runner (:mod:`producer.experiment`) and the cell procedure (:mod:`producer.cell`) only
ever talk to a :class:`Backend` and the :class:`WorkerRun` it returns for each cell; they
never ask which backend they have. Three implement it:

- :mod:`producer.backends.local`: ``python -m worker`` processes started here (``--local``),
  measured from their process trees;
- :mod:`producer.backends.running`: workers already running (compose), one queue per
  strategy, measured from their Prometheus metrics;
- :mod:`producer.backends.docker`: a fresh worker container per cell under a CPU and memory
  limit (``--docker``), measured by the engine's stats and the worker's metrics.

A new backend is one module with a subclass of each, and one line in
:func:`producer.backends.select`. See docs/architecture.md.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from producer.context import Context
from producer.results import Cell, Meta, Results
from producer.sampling import HostLoad, local_redis_process
from worker.redact import redact_url


@dataclass(frozen=True)
class Size:
    """One column of the matrix for a strategy: the ``--concurrency`` value, and a container's
    CPU limit when cells run in containers."""

    strategy: str
    concurrency: str
    cpu_limit: float | None = None


def record_host_load(cell: Cell, load: HostLoad | None) -> None:
    """The cores the producer, Redis and other programs used during the cell."""
    if load is not None:
        cell.figures.producer_cores = load.producer_cores
        cell.figures.redis_cores = load.redis_cores
        cell.figures.other_cores = load.other_cores


class WorkerRun(abc.ABC):
    """The worker(s) of one cell, from start to stop. The cell procedure calls, in this order:
    :meth:`ready`, (warm-up jobs when :attr:`warms_up`), :meth:`begin`, the burst, :meth:`end`,
    and always :meth:`stop`."""

    warms_up = True  # one noop job per slot before the burst (a fresh worker's first jobs are slow)

    @abc.abstractmethod
    def ready(self, cell: Cell) -> None:
        """Wait until the worker takes jobs; set ``cell.concurrency`` (its slots) and what it reported."""

    def output(self) -> str:
        """The end of the worker's log, for an error message."""
        return ""

    def begin(self, cell: Cell) -> None:
        """Idle readings, then start sampling (the burst follows at once)."""

    def end(self, cell: Cell) -> None:
        """Final readings after every job ended: memory, CPU, other load into ``cell``."""

    def stop(self, cell: Cell, clean: bool) -> None:
        """Stop the worker (``clean``: the cell ran through; else an error or Ctrl-C); its exit into ``cell``."""


class Backend(abc.ABC):
    """Where an experiment's workers run. One instance per ``experiment`` run."""

    mode = ""  # results.json: meta.mode and every cell's mode
    description = ""  # for the log line: "local workers"
    waits_for_quiet = True  # --quiet-below applies before each cell
    interrupt_on_sigterm = False  # SIGTERM is Ctrl-C: what the backend started is removed

    def preflight(self) -> None:
        """Refuse (BadInput) what would fail later, before anything starts."""

    @abc.abstractmethod
    def start(self, run_id: str, log_dir: Path) -> str:
        """Start what the cells need (Redis, a network); returns the Redis URL the producer uses."""

    def close(self) -> None:
        """Stop or remove everything :meth:`start` and the cells started; always called."""

    def redis_process(self, conn: redis.Redis[bytes]) -> psutil.Process | None:
        """The redis-server process when it runs on this machine (its CPU seconds are accounted)."""
        return local_redis_process(conn)

    def redis_described(self, url: str) -> str:
        """meta.redis_url: which Redis the workers used (its password redacted: results are shared)."""
        return redact_url(url)

    @abc.abstractmethod
    def sizes(self, ctx: Context, strategy: str, workload: str) -> list[Size]:
        """The cells of one strategy and workload (one repeat)."""

    @abc.abstractmethod
    def queue(self, ctx: Context, size: Size, workload: str, repeat: int) -> str:
        """The queue a cell's jobs go to (and its workers consume)."""

    @abc.abstractmethod
    def worker(self, ctx: Context, size: Size, cell: Cell) -> WorkerRun:
        """Start (or find) the cell's worker(s); ``cell`` holds what the cell is so far."""

    def before_repeat(self, ctx: Context, repeat: int, results: Results) -> None:
        """Measurements of its own before a repeat's cells (start-up runs)."""

    def after_matrix(self, ctx: Context, results: Results) -> None:
        """Measurements of its own after every cell (timeouts, bare pool start-up)."""

    def describe(self, meta: Meta) -> None:
        """Add the backend's own facts to the results' meta."""
