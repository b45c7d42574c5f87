"""What ``python -m producer experiment`` is asked to run: the matrix and its flags, checked.

Everything here is syntax, judged before anything starts (no Redis, no engine): a bad flag
gets one line and exit code 2 (:class:`BadInput`). The container flags' floors and the
engine's own checks are in :mod:`producer.containers` (``preflight``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.errors import BadInput
from producer.workloads import WORKLOADS, experiment_spec, parse_param

STRATEGIES = ("thread", "process", "inline", "hybrid", "auto")
DEFAULT_CONCURRENCY = {"thread": ["auto"], "process": ["auto"], "inline": ["1"], "hybrid": ["auto"], "auto": ["auto"]}

DEFAULT_IMAGE = "poolq:local"  # what `docker compose build` tags (compose.yaml)
DEFAULT_REDIS_IMAGE = "redis:7.2.5"  # the compose stack's Redis
DEFAULT_MEMORY = "1g"
MIB = 1024 * 1024
# Below this a worker with its pool is killed by the OOM killer while it starts (an idle
# process worker with two children is ~80 MiB PSS), so the cell would measure nothing.
MIN_MEMORY = 128 * MIB
# A worker needs about a second of CPU to start (interpreter, rq, prometheus-client, the
# pool); at 0.01 CPU (Docker's floor) that is minutes before the first job.
MIN_CPUS = 0.1


# ---------------------------------------------------------------------------------------------
# the matrix


def parse_list(value: str, allowed: Sequence[str], flag: str, noun: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise BadInput(f"--{flag} needs at least one entry (choose from {', '.join(allowed)})")
    bad = [v for v in items if v not in allowed]
    if bad:
        raise BadInput(f"unknown {noun} {bad[0]!r} (choose from {', '.join(allowed)})")
    if len(set(items)) != len(items):
        raise BadInput(f"--{flag} names an entry twice: {value}")
    return items


def parse_counts(value: str, workloads: Sequence[str]) -> dict[str, int]:
    """``300`` (every workload) or ``cpu=200,io=400`` (others: the bare number, else 100)."""
    counts: dict[str, int] = {}
    default: int | None = None
    for item in filter(None, (v.strip() for v in value.split(","))):
        key, sep, raw = item.rpartition("=")
        try:
            n = int(raw)
        except ValueError:
            raise BadInput(f"--count {item!r}: expected a whole number of jobs, or workload=N") from None
        if n <= 0:
            raise BadInput(f"--count must be positive, got {item!r}")
        if not sep:
            default = n
        elif key not in WORKLOADS:
            raise BadInput(f"--count {item!r}: unknown workload {key!r}")
        else:
            counts[key] = n
    for w in workloads:
        counts.setdefault(w, default if default is not None else 100)
    return counts


def _concurrency_value(v: str, where: str) -> str:
    v = v.strip().lower()
    if v == "auto" or (v.isdigit() and 1 <= int(v) <= 4096):
        return v
    raise BadInput(f"--concurrency {where}: {v!r} must be 'auto' or a whole number from 1 to 4096")


def parse_concurrency(value: str | None, strategies: Sequence[str], workloads: Sequence[str]) -> dict[str, list[str]]:
    """Worker sizes per ``strategy`` and ``strategy:workload``.

    ``thread=16,process=auto+8,process:io=16``: entries ``[strategy[:workload]=]v[+v...]``; a
    bare value applies to thread and process. Several values (``+``) give several cells.
    """
    table: dict[str, list[str]] = {s: list(DEFAULT_CONCURRENCY[s]) for s in STRATEGIES}
    for item in filter(None, (v.strip() for v in (value or "").split(","))):
        key, sep, raw = item.rpartition("=")
        values = [_concurrency_value(v, item) for v in raw.split("+")]
        if not sep:
            table["thread"] = values
            table["process"] = values
            continue
        strategy, _, workload = key.partition(":")
        if strategy not in STRATEGIES:
            raise BadInput(f"--concurrency {item!r}: unknown strategy {strategy!r}")
        if workload and workload not in WORKLOADS:
            raise BadInput(f"--concurrency {item!r}: unknown workload {workload!r}")
        if strategy == "inline" and any(v not in ("1", "auto") for v in values):
            raise BadInput("--concurrency: the inline strategy runs one job at a time (concurrency 1)")
        table[key] = values
    return {f"{s}:{w}": table.get(f"{s}:{w}", table[s]) for s in strategies for w in workloads}


def parse_params(items: Sequence[str], workloads: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--param io.seconds=0.1`` -> {"io": {"seconds": 0.1}} (checked against the workload)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, dot, rest = item.partition(".")
        if not dot or "=" not in rest or "=" in target:
            raise BadInput(f"malformed --param {item!r}: expected workload.key=value, e.g. io.seconds=0.1")
        if target not in WORKLOADS:
            raise BadInput(f"--param {item!r}: unknown workload {target!r}")
        key, value = parse_param(rest)
        out.setdefault(target, {})[key] = value
    for w, overrides in out.items():
        experiment_spec(w, overrides)  # checks names, types, size
    return out


def parse_worker_metrics(value: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in filter(None, (v.strip() for v in value.split(","))):
        strategy, sep, urls = item.partition("=")
        if not sep or strategy not in STRATEGIES or not urls:
            raise BadInput(
                f"--worker-metrics {item!r}: expected strategy=URL[+URL...], e.g. thread=http://h:8000/metrics"
            )
        parsed = [u for u in urls.split("+") if u]
        for u in parsed:
            if not u.startswith(("http://", "https://")):
                raise BadInput(f"--worker-metrics {item!r}: {u!r} is not an http(s) URL")
        out[strategy] = parsed
    return out


# ---------------------------------------------------------------------------------------------
# containers (--docker)


def parse_cpus(value: str) -> list[float]:
    """``--cpus 1,2,0.5`` -> [1.0, 2.0, 0.5]: CPU limits, one cell dimension."""
    out: list[float] = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        try:
            cpus = float(item)
        except ValueError:
            raise BadInput(f"--cpus {item!r}: expected a number of CPUs, e.g. --cpus 1,2 or 0.5") from None
        if not math.isfinite(cpus) or cpus < MIN_CPUS:
            raise BadInput(f"--cpus {item!r}: a CPU limit must be at least {MIN_CPUS:g} (a worker needs ~1 s of CPU "
                           "to start)")  # fmt: skip
        if round(cpus, 2) != cpus:
            raise BadInput(f"--cpus {item!r}: at most two decimals (Docker's --cpus granularity is 0.01)")
        if cpus in out:
            raise BadInput(f"--cpus names {item} twice")
        out.append(cpus)
    if not out:
        raise BadInput("--cpus needs at least one CPU limit, e.g. --cpus 1,2")
    return out


_UNITS = {"": 1, "b": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}


def parse_memory(value: str) -> int:
    """``512m`` / ``1g`` / ``1.5g`` / ``268435456`` -> bytes (Docker's units: binary, b/k/m/g)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmg]?)(?:i?b)?\s*", value.lower())
    if not m:
        raise BadInput(f"--memory {value!r}: expected a size such as 512m or 1g (units b, k, m, g)")
    size = int(float(m.group(1)) * _UNITS[m.group(2)])
    if size < MIN_MEMORY:
        raise BadInput(
            f"--memory {value!r} is below the floor of {MIN_MEMORY // MIB} MiB: a worker and its pool would be "
            "OOM-killed while starting"
        )
    return size


def mib(n: float) -> str:
    return f"{n / MIB:,.0f} MiB" if n < 1024 * MIB else f"{n / 1024 / MIB:g} GiB"


@dataclass
class DockerOptions:
    cpus: list[float]
    memory: int
    image: str = DEFAULT_IMAGE
    redis_image: str = DEFAULT_REDIS_IMAGE
    network: str | None = None  # an existing network (with --redis-url): the compose stack's
    redis_url: str | None = None  # Redis as the workers see it on ``network``
    health_timeout: float = 180.0
    stop_timeout: int = 40  # > the worker's WORKER_SHUTDOWN_TIMEOUT (30 s): it drains and exits 0


def docker_options(
    cpus: str | None,
    memory: str | None,
    image: str | None,
    redis_image: str | None,
    network: str | None,
    redis_url: str | None,
    health_timeout: float,
) -> DockerOptions:
    """Checks the flags' syntax (no engine needed): everything that is wrong in the command line."""
    if network and not redis_url:
        raise BadInput("--network needs --redis-url: the Redis on that network, as its containers reach it "
                       "(e.g. --network poolq_default --redis-url redis://redis:6379/0)")  # fmt: skip
    if redis_url and not network:
        raise BadInput("--docker with --redis-url needs --network (the Docker network on which that Redis runs); "
                       "without both the producer starts its own Redis container")  # fmt: skip
    if health_timeout <= 0:
        raise BadInput(f"--health-timeout must be positive, got {health_timeout:g}")
    return DockerOptions(
        cpus=parse_cpus(cpus or "1"),
        memory=parse_memory(memory or DEFAULT_MEMORY),
        image=image or DEFAULT_IMAGE,
        redis_image=redis_image or DEFAULT_REDIS_IMAGE,
        network=network,
        redis_url=redis_url,
        health_timeout=health_timeout,
    )


# ---------------------------------------------------------------------------------------------
# the whole request


@dataclass
class Options:
    strategies: list[str]
    workloads: list[str]
    counts: dict[str, int]
    concurrency: dict[str, list[str]]  # "strategy:workload" -> sizes
    out: Path
    local: bool = True
    repeats: int = 1
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # workload -> overrides
    worker_metrics: dict[str, list[str]] = field(default_factory=dict)
    startup: bool = True
    timeouts: bool = True
    timeout_job_seconds: float = 4.0
    job_timeout: int = 1
    sample_interval: float = 0.1
    cell_timeout: float = 600.0
    metrics_settle: float = 2.5
    quiet_below: float | None = None  # wait for other programs to use fewer cores than this
    quiet_wait: float = 120.0
    redis_url: str = "redis://127.0.0.1:6379/0"
    batch_size: int = 500
    result_ttl: int = 3600
    argv: list[str] = field(default_factory=list)
    docker: DockerOptions | None = None  # every cell in a worker container (--docker)
