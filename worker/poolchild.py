"""What a pool child runs: the standard library only, so a child stays small.

A child is forked from the multiprocessing forkserver, which preloads the modules named in
``StrategyConfig.preload``; whatever the child imports after the fork is private to it. This
module, the functions it runs (:func:`child_main`: one job at a time, for the process and auto
strategies; :func:`threaded_child_main`: several at once, for hybrid), and the way it finds a
job's function (``worker.allowlist``) import nothing beyond the standard library (no rq, no
redis-py: the child never talks to Redis), so a child costs the job module's memory and its own
heap, not a second copy of the worker's imports.

That is why this module sits beside ``worker/allowlist.py`` and not in ``worker/strategies/``:
importing anything in that package runs its ``__init__``, which imports the strategies and rq.
The parent's side of the conversation (spawn, send, receive, exit reasons) is
``worker/strategies/children.py``.
"""

from __future__ import annotations

import collections.abc
import os
import queue as queue_mod
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from worker.allowlist import Allowlist
from worker.errors import FunctionNotAllowed

if TYPE_CHECKING:
    import multiprocessing.connection


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


def resolve_reply(allowlist: Allowlist, func_name: str) -> tuple[Any, tuple[Any, ...] | None]:
    """(the function, None), or (None, the reply that says why it cannot run).

    Replies: ``("refused", message)`` when the allowlist refuses the name or what it resolves to
    (the parent fails the job with ``FunctionNotAllowed``); ``("unresolved", type, message,
    traceback)`` when it does not exist or its module fails to import (a job that never ran:
    the parent labels its metrics ``other``, not by the name a producer made up).
    """
    try:
        return allowlist.resolve(func_name), None
    except FunctionNotAllowed as e:
        return None, ("refused", str(e))
    except BaseException as e:  # ImportError, AttributeError, an error at import time
        return None, ("unresolved", type(e).__name__, str(e), traceback.format_exc())


def child_main(
    conn: multiprocessing.connection.Connection, patterns: Sequence[str], measure_runqueue: bool = False
) -> None:
    """A pool child: runs (function name, args, kwargs) messages until told to stop.

    The child never talks to Redis: the parent owns the job's lifecycle, so a child that
    crashes or is killed cannot leave a half-written job behind. The function is resolved here,
    under the allowlist ``patterns`` (worker/allowlist.py: the parent only checked the name and
    imports nothing of the job), replying as :func:`resolve_reply` says when it cannot run.
    Replies ``("ok", value, cpu_seconds)`` or ``("err", type, message, traceback)`` when the
    function ran; with ``measure_runqueue`` (auto's children) "ok" also carries the seconds the
    job waited for a core, which on a busy machine would make a CPU-bound job look less
    CPU-bound than it is.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when jobs stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    allowlist = Allowlist(patterns)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        func_name, args, kwargs = msg
        t0, s0 = time.process_time(), schedstat() if measure_runqueue else None
        func, refusal = resolve_reply(allowlist, func_name)
        if refusal is not None:
            conn.send(refusal)
            continue
        try:
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


def threaded_child_main(conn: multiprocessing.connection.Connection, threads: int, patterns: Sequence[str]) -> None:
    """A hybrid pool child: ``threads`` threads run ``(call_id, func, args, kwargs)`` messages.

    Replies are ``(call_id, "ok", value, cpu_seconds, wall_seconds)`` or
    ``(call_id, "err", type_name, message, traceback)``, or when the function cannot run
    ``(call_id, "refused", message)`` / ``(call_id, "unresolved", ...)``: it is resolved here under
    the allowlist ``patterns``, as in :func:`child_main` (:func:`resolve_reply`). Like that child it
    never talks to Redis. ``None`` asks it to finish the running calls and exit.
    """
    allowlist = Allowlist(patterns)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when jobs stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    calls: queue_mod.SimpleQueue[tuple[int, str, list[Any], dict[str, Any]] | None] = queue_mod.SimpleQueue()
    send_lock = threading.Lock()

    def send(reply: tuple[Any, ...]) -> None:
        with send_lock:
            try:
                conn.send(reply)
            except (OSError, ValueError):  # the parent is gone
                os._exit(0)
            except Exception as e:  # the return value could not be pickled
                conn.send(
                    (
                        reply[0],
                        "err",
                        type(e).__name__,
                        f"job result could not be sent from the pool child: {e}",
                        traceback.format_exc(),
                    )
                )

    def run() -> None:
        while True:
            item = calls.get()
            if item is None:
                return
            call_id, func_name, args, kwargs = item
            t0_cpu, t0_wall = time.thread_time(), time.perf_counter()
            func, refusal = resolve_reply(allowlist, func_name)
            if refusal is not None:
                send((call_id, *refusal))
                continue
            try:
                value = func(*args, **kwargs)
                if isinstance(value, collections.abc.Coroutine):  # as asyncio.iscoroutine, without asyncio
                    import asyncio

                    value = asyncio.run(value)
                reply: tuple[Any, ...] = (
                    call_id,
                    "ok",
                    value,
                    time.thread_time() - t0_cpu,
                    time.perf_counter() - t0_wall,
                )
            except BaseException as e:  # report everything, including SystemExit from the job
                reply = (call_id, "err", type(e).__name__, str(e), traceback.format_exc())
            send(reply)

    workers = [threading.Thread(target=run, name=f"poolq-hybrid-job-{i}", daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone: nobody wants the results
            os._exit(0)
        if msg is None:
            break
        calls.put(msg)
    for _ in workers:
        calls.put(None)
    for t in workers:
        t.join()
