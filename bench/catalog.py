"""What the benchmark runs: the workloads (jobs per cell), the poolq strategies with their
concurrency, RQ's own workers as baselines, and how each runner is started.

``DEFAULT_CONCURRENCY`` is the table bench/README.md documents; ``auto`` resolves the way the
worker resolves it (``worker.cpus`` and ``worker.defaults.THREADS_PER_CPU``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
QUEUE = "bench"
SERIALIZER_PATH = "rq.serializers.JSONSerializer"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Workload:
    name: str
    func: str
    kwargs: dict[str, Any]
    count: int  # default number of jobs per cell
    quick_count: int  # number of jobs per cell with --quick
    describe: str


CPU_MS = 20.0
IO_SECONDS = 0.05
MIXED_CPU_MS, MIXED_IO_SECONDS = 10.0, 0.02
ALLOC_MB, ALLOC_SECONDS = 16.0, 0.05

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("noop", "worker.jobs.noop", {}, 2000, 200, "noop(): queue overhead only"),
        # kwargs["iterations"] is filled in at start: CPU_MS of one core, calibrated once in the
        # bench process, so every worker and the plain loop run exactly the same work.
        Workload("cpu", "worker.jobs.cpu", {}, 300, 30, f"cpu(iterations=~{CPU_MS:g} ms of one core)"),
        Workload(
            "io",
            "worker.jobs.io",
            {"seconds": IO_SECONDS, "mode": "sleep"},
            500,
            64,
            f"io(seconds={IO_SECONDS:g}, mode='sleep')",
        ),
        Workload(
            "mixed",
            "worker.jobs.mixed",
            {"cpu_ms": MIXED_CPU_MS, "io_seconds": MIXED_IO_SECONDS},
            300,
            30,
            f"mixed(cpu_ms={MIXED_CPU_MS:g}, io_seconds={MIXED_IO_SECONDS:g})",
        ),
        Workload(
            "alloc",
            "worker.jobs.alloc",
            {"mb": ALLOC_MB, "seconds": ALLOC_SECONDS},
            40,
            8,
            f"alloc(mb={ALLOC_MB:g}, seconds={ALLOC_SECONDS:g})",
        ),
    )
}

# Concurrency passed to `python -m worker --concurrency`, per strategy and workload ("*": every
# other workload). "auto" lets the worker size itself from the CPUs it may use; the table shows
# the figure that resolves to (computed like the worker does: worker.cpus + worker.defaults).
# Override with --concurrency, e.g. `--concurrency thread=32,thread:io=128,process=4`.
DEFAULT_CONCURRENCY: dict[str, dict[str, str]] = {
    #  strategy     io     everything else
    "thread": {"io": "64", "*": "auto"},
    "process": {"*": "auto"},
    "inline": {"*": "1"},
}
STRATEGIES = tuple(DEFAULT_CONCURRENCY)


@dataclass(frozen=True)
class Baseline:
    key: str
    label: str
    concurrency: int
    args: tuple[str, ...]  # after the `rq` executable; --serializer/--url/queue are appended


BASELINES: dict[str, Baseline] = {
    b.key: b
    for b in (
        Baseline("rq-fork", "rq worker (fork per job)", 1, ("worker", "--burst")),
        Baseline("rq-simple", "rq SimpleWorker", 1, ("worker", "--burst", "-w", "rq.worker.SimpleWorker")),
        Baseline(
            "rq-pool",
            "rq worker-pool -n 2 (Simple)",
            2,
            ("worker-pool", "--burst", "-n", "2", "-w", "rq.worker.SimpleWorker"),
        ),
    )
}


def available_cpus() -> int:
    try:
        from worker.cpus import detect_cpus

        return int(detect_cpus().available)
    except Exception:
        try:
            return len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return os.cpu_count() or 1


def threads_per_cpu() -> int:
    try:
        from worker import defaults

        return int(defaults.THREADS_PER_CPU)
    except Exception:
        return 8


def resolve_concurrency(strategy: str, value: str) -> int:
    if value != "auto":
        return int(value)
    cpus = available_cpus()
    return cpus * threads_per_cpu() if strategy == "thread" else cpus


def worker_cmd(url: str, strategy: str, concurrency: str) -> list[str]:
    """The command line of one burst poolq worker on the bench queue (no metrics endpoint)."""
    return [
        sys.executable,
        "-m",
        "worker",
        "--strategy",
        strategy,
        "--concurrency",
        concurrency,
        "--queues",
        QUEUE,
        "--burst",
        "--redis-url",
        url,
        "--metrics-port",
        "0",
    ]


@dataclass(frozen=True)
class Runner:
    key: str  # "thread" / "process" / "inline" / "rq-fork" / "rq-simple" / "rq-pool"
    label: str
    baseline: Baseline | None = None

    def concurrency(self, workload: str, overrides: dict[str, str]) -> tuple[str, int]:
        """(value passed to the worker, resolved number of concurrent jobs)."""
        if self.baseline is not None:
            return str(self.baseline.concurrency), self.baseline.concurrency
        value = (
            overrides.get(f"{self.key}:{workload}")
            or overrides.get(self.key)
            or DEFAULT_CONCURRENCY[self.key].get(workload)
            or DEFAULT_CONCURRENCY[self.key]["*"]
        )
        return value, resolve_concurrency(self.key, value)

    def command(self, url: str, concurrency: str, rq_bin: str) -> list[str]:
        if self.baseline is not None:
            return [rq_bin, *self.baseline.args, "--serializer", SERIALIZER_PATH, "--url", url, QUEUE]
        return worker_cmd(url, self.key, concurrency)


def make_runners(strategies: list[str], baselines: list[str]) -> list[Runner]:
    runners = [Runner(s, f"poolq {s}") for s in strategies]
    runners += [Runner(b, BASELINES[b].label, BASELINES[b]) for b in baselines]
    return runners
