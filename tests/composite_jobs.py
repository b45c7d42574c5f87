"""Job functions with declared hints for the ``auto`` strategy tests, run by the worker as
``tests.composite_jobs.*``. Each one is declared the *opposite* of what it does, so a test can
tell a declared hint from a learned class by where the job ran. The functions are defined here,
not imported: the allowlist runs a function only under the name it was defined with."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from tests.jobs import _append, _record  # the records and the evidence file, as the reliability jobs write them
from worker.composite import cpu_bound, io_bound


@cpu_bound
def declared_cpu_but_sleeps(seconds: float = 0.05) -> dict[str, Any]:
    """Waits (I/O-like), declared CPU-bound: auto must run it in a process child anyway."""
    started = time.time()
    time.sleep(seconds)
    return _record(started)


@io_bound
def declared_io_but_spins(ms: float = 30.0) -> dict[str, Any]:
    """Burns CPU, declared I/O-bound: auto must run it in a thread of the worker anyway."""
    started = time.time()
    end = time.thread_time() + ms / 1000.0
    n = 0
    while time.thread_time() < end:
        n += 1
    return _record(started, loops=n)


def record(path: str, token: str, seconds: float = 0.0) -> dict[str, Any]:
    """Appends ``token pid`` to ``path`` when it *starts* (a killed run still counts), then sleeps."""
    started = time.time()
    _append(path, f"{token} {os.getpid()}\n")
    time.sleep(seconds)
    return _record(started, token=token)


def sleep_for(seconds: float) -> dict[str, Any]:
    started = time.time()
    time.sleep(seconds)
    return _record(started)


def segfault() -> None:
    """SIGSEGV (reads address 0), without leaving a core file behind."""
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ctypes.string_at(0)


def exit_code(n: int) -> None:
    """Ends the whole process at once, from whichever thread runs it."""
    os._exit(n)


def loaded_heavy_modules() -> dict[str, Any]:
    """The modules of rq, redis-py and hiredis loaded in the process that runs this job (this
    module imports the hint API, as a user's job module would)."""
    heavy = sorted(m for m in sys.modules if m.partition(".")[0] in ("rq", "redis", "hiredis"))
    return {"pid": os.getpid(), "modules": heavy}
