"""Job functions for the reliability and chaos tests, run *by the worker* as ``tests.jobs.*``.

They are outside the default allowlist on purpose: the tests start workers with
``--allowed-functions 'worker.jobs.*,tests.jobs.*'``. Each one misbehaves in one precise way
(blocks SIGALRM, spins, exits, aborts, segfaults, kills itself, leaks, returns something JSON
cannot store) or leaves evidence outside Redis that it ran (``record`` appends a line to a
file, ``touch_sentinel`` creates one), so a test can count executions across processes and
across worker restarts without trusting the worker's own bookkeeping.

Records (``started``/``ended``/``pid``) have the shape of ``worker.jobs`` records, so
``support.rq_jobs.overlap`` works on them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import threading
import time
from pathlib import Path
from typing import Any

# What ``leak`` keeps alive for the life of the process (a pool child, or the worker itself).
_LEAKED: list[bytes] = []


def _record(started: float, **extra: Any) -> dict[str, Any]:
    return {"pid": os.getpid(), "thread": threading.get_ident(), "started": started, "ended": time.time(), **extra}


def _append(path: str, line: str) -> None:
    """One ``write`` on an ``O_APPEND`` descriptor: lines from many processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def record(path: str, token: str, seconds: float = 0.0) -> dict[str, Any]:
    """Appends ``token`` to ``path`` (one line per execution), then waits ``seconds``.

    The line is written when the function starts, so an execution that is killed halfway
    still counts: the file says how many times the job's code began to run.
    """
    started = time.time()
    _append(path, f"{token} {os.getpid()} {started:.6f}\n")
    if seconds:
        time.sleep(seconds)
    return _record(started, token=token)


def sleep_for(seconds: float) -> dict[str, Any]:
    """Sleeps, then returns its record (the job a timeout must kill, when it is long)."""
    started = time.time()
    time.sleep(seconds)
    return _record(started)


def wait_file(path: str, timeout: float = 60.0) -> dict[str, Any]:
    """Runs until the test creates ``path``: a job that is provably running *beside* others,
    without guessing how long they take. Raises after ``timeout`` (a bound, not a measure)."""
    started = time.time()
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout:g} s")
        time.sleep(0.02)
    return _record(started, waited_for=path)


def record_until_file(path: str, token: str, release: str, timeout: float = 60.0) -> dict[str, Any]:
    """``record`` (one line per execution, written at the start) then ``wait_file``: a job that
    runs beside others until the test releases it, and says how many times it began to run."""
    started = time.time()
    _append(path, f"{token} {os.getpid()} {started:.6f}\n")
    rec = wait_file(release, timeout)
    return {**rec, "started": started, "token": token}


def sleep_ignoring_sigalrm(seconds: float) -> dict[str, Any]:
    """Blocks SIGALRM in its thread, then sleeps: RQ's own timeout (an alarm) cannot stop it."""
    started = time.time()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        time.sleep(seconds)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    return _record(started)


def busy_loop(seconds: float) -> dict[str, Any]:
    """A pure-Python loop holding the GIL for ``seconds`` of wall time."""
    started = time.time()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return _record(started, loops=n)


def _no_core() -> None:
    """A crash here must not leave a core file in the worker's working directory."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def exit_code(n: int) -> None:
    """Ends the process at once with status ``n`` (no clean-up, no exception)."""
    os._exit(n)


def abort() -> None:
    """SIGABRT, as a failed C assertion would raise."""
    _no_core()
    os.abort()


def segfault() -> None:
    """SIGSEGV: reads address 0 through ctypes."""
    _no_core()
    ctypes.string_at(0)


def oom_like() -> None:
    """SIGKILL to itself: what the kernel's OOM killer does."""
    os.kill(os.getpid(), signal.SIGKILL)


def leak(mb: float = 50.0) -> dict[str, Any]:
    """Keeps ``mb`` MiB more of resident memory for the life of the process; returns its RSS after."""
    import psutil

    started = time.time()
    _LEAKED.append(b"\x01" * int(mb * 1024 * 1024))  # written, so resident
    rss = psutil.Process().memory_info().rss
    return _record(started, rss=rss, leaked_mb=sum(len(b) for b in _LEAKED) / 2**20)


def unserializable_result(kind: str = "set") -> Any:
    """Returns what the JSON serializer cannot store: a set, an object, or a lambda (not even picklable)."""
    if kind == "set":
        return {1, 2, 3}
    if kind == "object":
        return threading.Event()
    if kind == "lambda":
        return lambda: None
    raise ValueError(f"unknown kind {kind!r}")


def touch_sentinel(path: str) -> str:
    """Creates ``path``: if the file exists, the function ran."""
    Path(path).write_text(f"ran in pid {os.getpid()}\n")
    return path


def record_failure(job: Any, connection: Any, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """An RQ failure callback: records which error it was called with, in ``cb:<job id>:failure``."""
    connection.set(f"cb:{job.id}:failure", f"{exc_type.__name__}: {exc_value}")


def count_and_fail(redis_url: str, key: str, message: str = "counted failure") -> None:
    """Counts one execution in Redis, then raises: how many times did a retried job run?"""
    import redis  # here: the other jobs of this module run in pool children that need no redis-py

    conn = redis.Redis.from_url(redis_url)
    try:
        conn.incr(key)
    finally:
        conn.close()
    raise RuntimeError(message)
