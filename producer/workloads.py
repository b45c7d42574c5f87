"""The built-in workloads the producer enqueues, their parameters and how ``--param`` is read.

Each workload is one function of ``worker/jobs.py``. Parameters are checked here, before
anything is enqueued: a typo must fail on the producer's command line with one line, not as a
thousand failed jobs in the worker.

``--param k=v``: ``v`` is read as JSON when it parses (``3``, ``0.05``, ``"sleep"``), else as a
plain string; ``k=@FILE`` reads the value from a file (JSON, else text). A float parameter that
says it may also takes ``exp:MEAN``: each job gets its own value, drawn from an exponential
distribution with that mean (service times with a long tail, as real network calls have).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.errors import BadInput

MAX_ARGS_BYTES = 1024 * 1024  # 1 MiB of JSON arguments per job


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int, float or str
    minimum: float | None = None  # inclusive
    positive: bool = False  # strictly > 0
    choices: tuple[str, ...] = ()
    random_ok: bool = False  # accepts exp:MEAN
    help: str = ""


@dataclass(frozen=True)
class Workload:
    name: str
    func: str  # dotted path of the job function
    params: tuple[Param, ...]
    describe: str
    experiment_kwargs: dict[str, Any] = field(default_factory=dict)  # what experiments run by default

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params) or "none"
        raise BadInput(f"workload {self.name!r} has no parameter {name!r} (parameters: {known})")


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("noop", "worker.jobs.noop", (), "does nothing: the queue's own overhead"),
        Workload(
            "cpu",
            "worker.jobs.cpu",
            (
                Param("iterations", int, minimum=1, help="loop iterations (exact work)"),
                Param("ms", float, positive=True, help="about this many ms of one core"),
            ),
            "pure-Python loop holding the GIL",
            {"ms": 20.0},
        ),
        Workload(
            "io",
            "worker.jobs.io",
            (
                Param("seconds", float, minimum=0.0, random_ok=True, help="latency to wait"),
                Param("mode", str, choices=("sleep", "socket"), help="sleep, or a loopback socket round trip"),
            ),
            "waits without using CPU",
            {"seconds": 0.05},
        ),
        Workload(
            "mixed",
            "worker.jobs.mixed",
            (
                Param("cpu_ms", float, minimum=0.0, random_ok=True, help="ms of one core first"),
                Param("io_seconds", float, minimum=0.0, random_ok=True, help="then this long waiting"),
            ),
            "some CPU, then some waiting",
            {"cpu_ms": 10.0, "io_seconds": 0.02},
        ),
        Workload(
            "alloc",
            "worker.jobs.alloc",
            (
                Param("mb", float, positive=True, help="MiB to allocate and touch"),
                Param("seconds", float, minimum=0.0, random_ok=True, help="how long to hold it"),
            ),
            "holds N MiB of touched memory for a while",
            {"mb": 32.0, "seconds": 0.2},
        ),
    )
}


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise BadInput(f"unknown workload {name!r} (choose from {', '.join(WORKLOADS)})") from None


@dataclass(frozen=True)
class Exponential:
    """A per-job random value: exponential with this mean."""

    mean: float

    def draw(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean) if self.mean > 0 else 0.0

    def __str__(self) -> str:
        return f"exp:{self.mean:g}"


@dataclass(frozen=True)
class JobSpec:
    """What one job of a workload looks like: function and (checked) keyword arguments."""

    workload: Workload
    kwargs: dict[str, Any]

    @property
    def func(self) -> str:
        return self.workload.func

    @property
    def randomized(self) -> bool:
        return any(isinstance(v, Exponential) for v in self.kwargs.values())

    def materialize(self, rng: random.Random) -> dict[str, Any]:
        """The arguments of one job (random parameters drawn)."""
        if not self.randomized:
            return dict(self.kwargs)
        return {k: (v.draw(rng) if isinstance(v, Exponential) else v) for k, v in self.kwargs.items()}

    def representative(self) -> dict[str, Any]:
        """Arguments of a typical job: random parameters at their mean."""
        return {k: (v.mean if isinstance(v, Exponential) else v) for k, v in self.kwargs.items()}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" if isinstance(v, Exponential) else f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.workload.name}({args})"

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Exponential) else v) for k, v in self.kwargs.items()}


def _read_value(key: str, raw: str) -> Any:
    if raw.startswith("@"):
        path = Path(raw[1:])
        try:
            text = path.read_text()
        except OSError as e:
            raise BadInput(f"--param {key}=@{path}: cannot read the file: {e.strerror or e}") from None
        try:
            return json.loads(text)
        except ValueError:
            return text
    if raw.startswith("exp:"):
        try:
            mean = float(raw[4:])
        except ValueError:
            raise BadInput(f"--param {key}={raw}: exp:MEAN needs a number, e.g. exp:0.05") from None
        if not math.isfinite(mean) or mean <= 0:
            raise BadInput(f"--param {key}={raw}: the mean of exp:MEAN must be a positive number")
        return Exponential(mean)
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_param(item: str) -> tuple[str, Any]:
    """``k=v`` -> (k, value). Raises BadInput for anything malformed."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep:
        raise BadInput(f"malformed --param {_short(item)!r}: expected key=value")
    if not key.isidentifier():
        raise BadInput(f"malformed --param {_short(item)!r}: {_short(key)!r} is not a parameter name")
    if raw == "":
        raise BadInput(f"malformed --param {_short(item)!r}: the value is empty")
    return key, _read_value(key, raw)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _check_value(workload: Workload, p: Param, value: Any) -> Any:
    where = f"--param {p.name}"
    if isinstance(value, str) and value.startswith("exp:") and p.kind is float:
        value = _read_value(p.name, value)
    if isinstance(value, Exponential):
        if not p.random_ok:
            raise BadInput(f"{where}: {workload.name}.{p.name} does not take exp:MEAN (only fixed values)")
        return value
    try:
        size = len(json.dumps(value, allow_nan=False).encode())
    except (TypeError, ValueError) as e:
        raise BadInput(f"{where}: value {_short(repr(value))} is not JSON-serializable ({e})") from None
    if size > MAX_ARGS_BYTES:
        raise BadInput(f"{where}: the value is {size:,} bytes of JSON, over the 1 MiB limit of a job's arguments")
    if p.kind is str:
        if not isinstance(value, str):
            raise BadInput(f"{where}: expected text, got {_short(json.dumps(value))}")
        if p.choices and value not in p.choices:
            raise BadInput(f"{where}: {_short(repr(value))} is not one of {', '.join(p.choices)}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"{where}: expected a number, got {_short(json.dumps(value))}")
    if p.kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise BadInput(f"{where}: expected a whole number, got {_short(repr(value))}")
        value = int(value)
    else:
        value = float(value)
    if p.positive and value <= 0:
        raise BadInput(f"{where}: must be > 0, got {value!r}")
    if p.minimum is not None and value < p.minimum:
        raise BadInput(f"{where}: must be >= {p.minimum:g}, got {value!r}")
    return value


def check_args_size(kwargs: dict[str, Any]) -> int:
    """Bytes of the arguments as JSON; refuses anything over :data:`MAX_ARGS_BYTES`."""
    try:
        size = len(json.dumps(kwargs, allow_nan=False).encode())
    except (TypeError, ValueError) as e:
        raise BadInput(f"job arguments are not JSON-serializable: {e}") from None
    if size > MAX_ARGS_BYTES:
        raise BadInput(f"job arguments are {size:,} bytes of JSON, over the 1 MiB limit ({MAX_ARGS_BYTES:,} bytes)")
    return size


def build_spec(workload_name: str, params: dict[str, Any] | list[str] | None = None) -> JobSpec:
    """A checked :class:`JobSpec` from a workload name and ``--param`` items (or a dict)."""
    workload = get_workload(workload_name)
    items: dict[str, Any] = {}
    if isinstance(params, list):
        for item in params:
            key, value = parse_param(item)
            if key in items:
                raise BadInput(f"--param {key} given twice")
            items[key] = value
    elif params:
        items = dict(params)
    kwargs = {k: _check_value(workload, workload.param(k), v) for k, v in items.items()}
    if workload.name == "cpu" and "iterations" in kwargs and "ms" in kwargs:
        raise BadInput("--param iterations and --param ms exclude each other (cpu takes one of them)")
    spec = JobSpec(workload, kwargs)
    check_args_size(spec.representative())
    return spec


def experiment_spec(workload_name: str, overrides: dict[str, Any] | None = None) -> JobSpec:
    """The spec an experiment runs: the workload's experiment defaults, then ``overrides``."""
    workload = get_workload(workload_name)
    merged = dict(workload.experiment_kwargs)
    for key, value in (overrides or {}).items():
        if workload.name == "cpu" and key in ("iterations", "ms"):
            merged.pop("iterations", None)
            merged.pop("ms", None)
        merged[key] = value
    return build_spec(workload_name, merged)
