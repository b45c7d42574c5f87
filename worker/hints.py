"""Hints for the ``auto`` strategy: ``@cpu_bound`` / ``@io_bound`` on a job function, or
``job.meta["poolq_hint"]``.

Standard library only, like ``worker/poolchild.py``: a user's job module that uses the
decorators is imported in every pool child, and must not pull rq or redis-py in with it.
``worker.composite`` re-exports this API under the name the README documents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

CPU = "cpu"
IO = "io"
HINT_META_KEY = "poolq_hint"
HINT_ATTRIBUTE = "poolq_hint"
_HINT_VALUES = {"cpu": CPU, "process": CPU, "io": IO, "thread": IO}
# The sub-pool of auto that runs each class.
POOL_OF_CLASS = {CPU: "process", IO: "thread"}

F = TypeVar("F", bound=Callable[..., Any])


def cpu_bound(func: F) -> F:
    """Declares ``func`` CPU-bound: the ``auto`` strategy runs it in a process child, unmeasured."""
    setattr(func, HINT_ATTRIBUTE, CPU)
    return func


def io_bound(func: F) -> F:
    """Declares ``func`` I/O-bound: the ``auto`` strategy runs it in a thread of the worker."""
    setattr(func, HINT_ATTRIBUTE, IO)
    return func


def parse_hint(value: object) -> str | None:
    """``"cpu"``/``"process"`` -> cpu, ``"io"``/``"thread"`` -> io, anything else -> None."""
    if isinstance(value, str):
        return _HINT_VALUES.get(value.strip().lower())
    return None
