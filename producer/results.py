"""An experiment's results as typed records, and their one file format (``results.json``).

Why typed: the runner, the report, the charts and the planner all read the same numbers; as
records a renamed or misspelt column is a mypy error, not an empty cell in a report.

The JSON is what it has always been: every record is one flat object whose keys are the
field names (a cell's :class:`Figures` and :class:`ContainerCell` are spread into the cell's
object, not nested), NaN is written as null. Reading is lenient: a key that is missing gets the
field's default, an unknown key is ignored, so results written by older versions load.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.errors import BadInput
from producer.records import NESTED, flat, pick, strict_json


@dataclass
class Figures:
    """The numbers of one cell run that its summary row holds the median of (over repeats)."""

    throughput_jobs_s: float | None = None
    pct_of_limit: float | None = None
    limit_jobs_s: float | None = None
    wait_p50_s: float | None = None
    wait_p95_s: float | None = None
    wait_p99_s: float | None = None
    wait_mean_s: float | None = None
    run_p50_s: float | None = None
    run_p95_s: float | None = None
    run_p99_s: float | None = None
    run_mean_s: float | None = None
    run_cv2: float | None = None
    e2e_p50_s: float | None = None
    e2e_p95_s: float | None = None
    e2e_p99_s: float | None = None
    peak_pss_mib: float | None = None
    peak_rss_mib: float | None = None
    idle_pss_mib: float | None = None
    idle_rss_mib: float | None = None
    peak_uss_mib: float | None = None
    idle_uss_mib: float | None = None
    cpu_s_per_1k_jobs: float | None = None
    cores_busy: float | None = None
    job_cpu_ms_median: float | None = None
    makespan_s: float | None = None
    producer_cores: float | None = None
    redis_cores: float | None = None
    other_cores: float | None = None


@dataclass
class ContainerFigures:
    """A container cell's own numbers that its summary row holds the median of."""

    jobs_per_s_per_cpu: float | None = None
    container_mem_idle_mib: float | None = None
    container_mem_peak_mib: float | None = None
    container_mem_usage_peak_mib: float | None = None
    container_mem_max_usage_mib: float | None = None
    container_mem_limit_mib: float | None = None
    container_throttled_s: float | None = None
    healthy_after_s: float | None = None
    worker_tree_cpu_s: float | None = None


@dataclass
class ContainerCell:
    """What a cell run in a worker container (``--docker``) adds: its limits and the engine's stats."""

    cpu_limit: float
    memory_limit_mib: float
    image: str = ""
    container: str = ""
    pool_size: int | None = None
    registered_concurrency: int | None = None
    available_cpus_after: int | None = None
    oom_killed: bool | None = None
    container_throttled_periods: float | None = None
    container_pids_peak: float | None = None
    container_stats_samples: int | None = None
    figures: ContainerFigures = field(default_factory=ContainerFigures, metadata=NESTED)


@dataclass
class Cell:
    """One run of one cell: a strategy and size, a workload, a repeat (a row of results.csv)."""

    mode: str  # local | running-workers | docker
    strategy: str
    concurrency_arg: str
    workload: str
    repeat: int
    count: int
    spec: str
    queue: str
    key: str = ""  # also the cell column of jobs.csv
    concurrency: int | None = None  # slots the worker(s) ran with
    available_cpus: int | None = None
    replicas: int = 1
    other_cores_before: float | None = None
    enqueue_s: float | None = None
    metrics_urls: list[str] | None = None
    log: str | None = None
    worker_exit: int | None = None
    # RQ's timestamps (producer.measure.summarize)
    jobs: int = 0
    finished: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    first_enqueued_at: float | None = None
    first_started_at: float | None = None
    last_ended_at: float | None = None
    wait_max_s: float | None = None
    run_max_s: float | None = None
    e2e_mean_s: float | None = None
    e2e_max_s: float | None = None
    # the worker's process tree
    peak_processes: int | None = None
    memory_samples: int | None = None
    cpu_s: float | None = None
    # what the jobs returned, and what was wrong
    distinct_pids: int = 0
    distinct_threads: int = 0
    results_sampled: int = 0
    limit_basis: str = ""
    failure_examples: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    figures: Figures = field(default_factory=Figures, metadata=NESTED)
    container: ContainerCell | None = field(default=None, metadata=NESTED)

    @property
    def cpu_limit(self) -> float | None:
        return self.container.cpu_limit if self.container else None

    def to_json(self) -> dict[str, Any]:
        out = {**flat(self), **flat(self.figures)}
        if self.container is not None:
            out.update(flat(self.container), **flat(self.container.figures))
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        container = None
        if d.get("cpu_limit") is not None:
            container = pick(ContainerCell, d, figures=pick(ContainerFigures, d))
        return pick(cls, d, figures=pick(Figures, d), container=container)


@dataclass
class ContainerRow:
    """A summary row's container limits, what the worker made of them, and the medians."""

    cpu_limit: float
    memory_limit_mib: float | None = None
    detected_cpus: list[int | None] = field(default_factory=list)
    pool_sizes: list[int | None] = field(default_factory=list)
    figures: ContainerFigures = field(default_factory=ContainerFigures, metadata=NESTED)


@dataclass
class SummaryRow:
    """One configuration (strategy, slots, workload, CPU limit) over its repeats: medians."""

    strategy: str
    concurrency: int
    workload: str
    mode: str = ""
    spec: str = ""
    count: int = 0
    available_cpus: int | None = None
    replicas: int = 1
    runs: int = 1
    runs_ok: int = 1
    throughput_min: float | None = None
    throughput_max: float | None = None
    failed: int = 0
    problems: list[str] = field(default_factory=list)
    limit_basis: str = ""
    concurrency_arg: str | None = None
    figures: Figures = field(default_factory=Figures, metadata=NESTED)
    container: ContainerRow | None = field(default=None, metadata=NESTED)

    @property
    def cpu_limit(self) -> float | None:
        return self.container.cpu_limit if self.container else None

    @property
    def label(self) -> str:
        """``thread x4`` as the charts name it (``@1cpu`` for a container's limit)."""
        cpu = self.cpu_limit
        return f"{self.strategy}x{self.concurrency}" + (f"@{cpu:g}cpu" if cpu is not None else "")

    def to_json(self) -> dict[str, Any]:
        out = flat(self)
        if self.container is not None:
            out.update(flat(self.container), **flat(self.container.figures))
        out.update(flat(self.figures))
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SummaryRow:
        container = None
        if d.get("cpu_limit") is not None:
            container = pick(ContainerRow, d, figures=pick(ContainerFigures, d))
        return pick(cls, d, figures=pick(Figures, d), container=container)


@dataclass
class StartupRun:
    """A fresh worker with one probe job per slot queued before it starts (``--local``)."""

    strategy: str
    concurrency: int
    repeat: int
    probe_job: str = ""
    first_job_started_s: float | None = None
    all_slots_busy_s: float | None = None
    idle_pss_mib: float | None = None
    idle_uss_mib: float | None = None
    idle_rss_mib: float | None = None
    processes: int = 0
    ok: bool = False


@dataclass
class PoolStart:
    """N bare threads or processes until all run code (:mod:`producer.startup`), median of runs."""

    kind: str
    n: int
    runs: int
    ready_s: float
    joined_s: float
    ready_s_all: list[float] = field(default_factory=list)


@dataclass
class TimeoutRun:
    """A job that overran its timeout on a one-slot worker, then a noop (``--local``)."""

    strategy: str
    job: str
    job_timeout_s: int
    status: str
    reason: str = ""
    failed_after_s: float | None = None
    next_job_started_after_s: float | None = None
    cpu_burned_until_s: float | None = None
    cpu_timeline: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Calibration:
    """One job run alone in the producer: the single-core CPU and wall time "% of limit" uses."""

    cpu_s: float
    wall_s: float
    runs: int = 0


@dataclass
class DockerMeta:
    """The engine and limits of a container experiment."""

    engine: str = "?"
    engine_cpus: int = 0
    engine_memory_mib: float = 0.0
    cgroup_version: str = "?"
    api_version: str = "?"
    image: str = ""
    cpu_limits: list[float] = field(default_factory=list)
    memory_limit_mib: float | None = None
    network: str = ""
    redis_image: str | None = None


@dataclass
class Meta:
    """Where, when and how the experiment ran."""

    started: str = ""
    elapsed_s: float = 0.0
    mode: str = ""
    host: str = ""
    python: str = ""
    rq: str = ""
    redis_server: str = "?"
    redis_url: str = ""
    poolq: str = ""
    available_cpus: int | None = None
    cpu_count: int | None = None
    strategies: list[str] = field(default_factory=list)
    workloads: list[str] = field(default_factory=list)
    specs: dict[str, str] = field(default_factory=dict)
    spec_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    concurrency: dict[str, list[str]] = field(default_factory=dict)
    repeats: int = 1
    sample_interval_s: float = 0.1
    argv: list[str] = field(default_factory=list)
    interrupted: bool = False
    run_id: str = ""
    docker: DockerMeta | None = field(default=None, metadata=NESTED)

    def to_json(self) -> dict[str, Any]:
        out = flat(self)
        if self.docker is not None:
            out["docker"] = dataclasses.asdict(self.docker)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Meta:
        docker = pick(DockerMeta, d["docker"]) if isinstance(d.get("docker"), dict) else None
        return pick(cls, d, docker=docker)


@dataclass
class Results:
    """Everything one ``experiment`` measured: what ``results.json`` holds."""

    meta: Meta = field(default_factory=Meta)
    calibration: dict[str, Calibration] = field(default_factory=dict)
    summary: list[SummaryRow] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    startup: list[StartupRun] = field(default_factory=list)
    pool_start: list[PoolStart] = field(default_factory=list)
    timeouts: list[TimeoutRun] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The file's object, NaN as None."""
        data: dict[str, Any] = strict_json(
            {
                "meta": self.meta.to_json(),
                "calibration": {w: dataclasses.asdict(c) for w, c in self.calibration.items()},
                "summary": [r.to_json() for r in self.summary],
                "cells": [c.to_json() for c in self.cells],
                "startup": [dataclasses.asdict(s) for s in self.startup],
                "pool_start": [dataclasses.asdict(p) for p in self.pool_start],
                "timeouts": [dataclasses.asdict(t) for t in self.timeouts],
            }
        )
        return data

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Results:
        """Raises KeyError/TypeError/ValueError on an object that is not an experiment's results."""
        return cls(
            meta=Meta.from_json(d.get("meta") or {}),
            calibration={w: pick(Calibration, c) for w, c in (d.get("calibration") or {}).items()},
            summary=[SummaryRow.from_json(r) for r in d["summary"]],
            cells=[Cell.from_json(c) for c in d.get("cells") or []],
            startup=[pick(StartupRun, s) for s in d.get("startup") or []],
            pool_start=[pick(PoolStart, p) for p in d.get("pool_start") or []],
            timeouts=[pick(TimeoutRun, t) for t in d.get("timeouts") or []],
        )


def load_results(path: Path) -> Results:
    """``results.json`` of an experiment directory (or the file itself); BadInput when it is not one."""
    file = path / "results.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise BadInput(f"--results {path}: no results.json there (run python -m producer experiment first)") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"--results {path}: cannot read {file}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("summary"), list):
        raise BadInput(f"--results {path}: {file} is not an experiment's results.json")
    try:
        return Results.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        why = f"{type(e).__name__}: {e}"[:200]
        raise BadInput(f"--results {path}: {file} is not an experiment's results.json ({why})") from None
