"""What a process-pool child runs: the standard library only, so a child stays small.

A child is forked from the multiprocessing forkserver, which preloads the modules named in
``StrategyConfig.preload``; whatever the child imports after the fork is private to it. This
module, the function it runs, and the way it finds a job's function import nothing beyond the
standard library (no rq, no redis-py: the child never talks to Redis), so a child costs the
job module's memory and its own heap, not a second copy of the worker's imports.
"""

from __future__ import annotations

import builtins
import collections.abc
import importlib
import os
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import multiprocessing.connection


def import_attribute(name: str) -> Any:
    """``module.attr``, ``module.Class.method`` or a builtin's name, as RQ's ``import_attribute``.

    The longest importable module prefix is imported, the rest looked up with ``getattr``.
    """
    parts = name.split(".")
    if len(parts) == 1:
        if hasattr(builtins, name):
            return getattr(builtins, name)
        raise ValueError(f"invalid attribute name: {name}")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and not module_name.startswith(e.name):
                raise  # the module exists but imports something that does not
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            raise AttributeError(f"module {module_name!r} has no attribute {'.'.join(parts[i:])!r}") from None
        return obj
    raise ValueError(f"cannot import {name!r}: no module found")


_thread_files = threading.local()


def schedstat() -> tuple[float, float] | None:
    """(on-CPU, waiting-for-a-CPU) seconds of the calling thread, from /proc/thread-self/schedstat.

    The file is opened once per thread and re-read with ``pread`` (a few microseconds a job).
    """
    fd = getattr(_thread_files, "schedstat", None)
    if fd == -1:
        return None
    try:
        if fd is None:
            fd = _thread_files.schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        on_cpu, waiting = os.pread(fd, 128, 0).split()[:2]
        return int(on_cpu) / 1e9, int(waiting) / 1e9
    except (OSError, ValueError):
        _thread_files.schedstat = -1  # not available here: do not retry for every job
        return None


def runqueue_wait(before: tuple[float, float] | None) -> float:
    """Seconds the calling thread was runnable but had no CPU since ``before`` (0 if unknown)."""
    after = schedstat()
    return max(0.0, after[1] - before[1]) if before is not None and after is not None else 0.0


def child_main(conn: multiprocessing.connection.Connection, measure_runqueue: bool = False) -> None:
    """A pool child: runs (function name, args, kwargs) messages until told to stop.

    The child never talks to Redis: the parent owns the job's lifecycle, so a child that
    crashes or is killed cannot leave a half-written job behind. Replies ``("ok", value,
    cpu_seconds)``; with ``measure_runqueue`` (auto's children) also the seconds the job waited
    for a core, which on a busy machine would make a CPU-bound job look less CPU-bound than it is.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when jobs stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    funcs: dict[str, Any] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        func_name, args, kwargs = msg
        t0, s0 = time.process_time(), schedstat() if measure_runqueue else None
        try:
            func = funcs.get(func_name)
            if func is None:
                func = funcs[func_name] = import_attribute(func_name)
            value = func(*args, **kwargs)
            if isinstance(value, collections.abc.Coroutine):  # as asyncio.iscoroutine, without asyncio
                import asyncio

                value = asyncio.run(value)
            reply: tuple[Any, ...] = ("ok", value, time.process_time() - t0)
            if measure_runqueue:
                reply += (runqueue_wait(s0),)
        except BaseException as e:  # report everything, including SystemExit from the job
            reply = ("err", type(e).__name__, str(e), traceback.format_exc())
        try:
            conn.send(reply)
        except Exception as e:  # the return value could not be pickled
            conn.send(
                (
                    "err",
                    type(e).__name__,
                    f"job result could not be sent from the pool child: {e}",
                    traceback.format_exc(),
                )
            )
