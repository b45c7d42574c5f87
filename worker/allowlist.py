"""Which functions a worker may run.

A job names its function by dotted path, and resolving the path imports a module: a job
could otherwise name ``os.system``. The check runs on the name, before anything is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from worker.errors import FunctionNotAllowed


def check_allowed(func_name: str | None, patterns: Sequence[str]) -> str:
    """Return ``func_name`` when a glob in ``patterns`` matches it; raise otherwise."""
    if not func_name:
        raise FunctionNotAllowed("job names no function")
    if any(fnmatchcase(func_name, p) for p in patterns):
        return func_name
    raise FunctionNotAllowed(
        f"function {func_name!r} is not allowed by WORKER_ALLOWED_FUNCTIONS={','.join(patterns)!r}; "
        "it was not imported or run"
    )
