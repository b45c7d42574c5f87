"""The parent's side of the pool children: spawn, send, receive, exit reasons, memory guard.

Every strategy that keeps child processes (process, hybrid, auto) talks to them through this
module, so a child's death, a kill and a reply mean the same thing everywhere:

- :class:`Child` spawns a child from the forkserver (``spawn_context``: the job modules
  preloaded, no ``fork`` of a parent that runs threads) and records *why* it was killed
  (:meth:`Child.terminate`), so the thread waiting for its reply can tell a timeout or a cold
  stop from a crash;
- :class:`PoolChild` runs one job at a time (:meth:`PoolChild.call`); hybrid's
  ``threaded_pool.ThreadedChild`` several, with a reader thread that delivers the replies;
- :func:`unpack_reply` maps a child's reply to a value or the job's error, :meth:`ChildDied.error`
  a death to the job's error, :func:`recycle_reason` / :func:`over_memory` decide a replacement.

What runs *in* the child is ``worker/poolchild.py`` (standard library only).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rq.timeouts import JobTimeoutException

from worker.allowlist import mark_resolved
from worker.errors import ChildCrashed, FunctionNotAllowed, RemoteJobError, RemoteTraceback, RequeueJob
from worker.poolchild import child_main
from worker.strategies.base import StrategyConfig

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, ForkServerProcess

    from rq.job import Job

log = logging.getLogger("worker.strategies")


def spawn_context(config: StrategyConfig) -> ForkServerContext:
    """The forkserver context children are started from, with ``config.preload`` imported once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(config.preload))
    return ctx


def timeout_error(timeout: float, detail: str) -> JobTimeoutException:
    return JobTimeoutException(f"Task exceeded maximum timeout value ({timeout:g} seconds); {detail}")


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name} (signal {-exitcode})"
    return f"exited with code {exitcode}"


class Overdue(Exception):
    """No reply within the job's timeout (the caller kills the child)."""


class ChildDied(Exception):
    """The child's pipe closed with the job in flight: killed (``reason``) or crashed (None)."""

    def __init__(self, pid: int, exitcode: int | None, reason: str | None) -> None:
        super().__init__(pid, exitcode, reason)
        self.pid, self.exitcode, self.reason = pid, exitcode, reason

    def error(self, timeout: float) -> Exception:
        """The job's error: a timeout, a re-queue (cold stop) or the crash with its exit status."""
        if self.reason == "timed_out":
            return timeout_error(timeout, f"pool child {self.pid} was killed")
        if self.reason == "cold_stop":
            return RequeueJob(f"cold stop: pool child {self.pid} was killed; the job was re-queued")
        return ChildCrashed(f"pool child {self.pid} died while running the job: {describe_exit(self.exitcode)}")


def unpack_reply(job: Job, reply: tuple[Any, ...]) -> tuple[Any, ...]:
    """A pool child's reply to one call (hybrid's without its call id): the ``"ok"`` tuple, or raise.

    ``"ok"`` and ``"err"`` (the function ran and raised) mean the function resolved in the child
    under the allowlist, which the job's metrics label needs to know; ``"refused"`` raises
    :class:`FunctionNotAllowed` (status ``rejected``); ``"unresolved"`` (no such function, an
    import error) raises :class:`RemoteJobError` with the child's traceback.
    """
    kind = reply[0]
    if kind == "refused":
        raise FunctionNotAllowed(str(reply[1]))
    if kind != "unresolved":
        mark_resolved(job)
    if kind == "ok":
        return reply
    _, type_name, message, tb = reply
    raise RemoteJobError(f"{type_name}: {message}") from RemoteTraceback(tb)


def call_message(job: Job) -> tuple[Any, ...]:
    """What a child is sent for one job: the function's name (resolved there) and its arguments."""
    return (job.func_name, list(job.args), dict(job.kwargs))


def over_memory(pid: int, cfg: StrategyConfig, what: str, then: str = "replacing it") -> bool:
    """Whether child ``pid`` uses more than WORKER_MAX_CHILD_MEMORY_MB (said in the log)."""
    if not cfg.max_child_memory_mb:
        return False
    try:
        import psutil

        rss = psutil.Process(pid).memory_info().rss
    except Exception:
        return False
    if rss <= cfg.max_child_memory_mb * 1024 * 1024:
        return False
    log.warning(
        "%s %d uses %.0f MiB > WORKER_MAX_CHILD_MEMORY_MB=%g: %s", what, pid, rss / 2**20, cfg.max_child_memory_mb, then
    )
    return True


def recycle_reason(pid: int, jobs_done: int, cfg: StrategyConfig, what: str) -> str | None:
    """Why a one-job pool child should be replaced after its job ("max_jobs", "memory"), or None."""
    if cfg.max_jobs_per_child and jobs_done >= cfg.max_jobs_per_child:
        return "max_jobs"
    return "memory" if over_memory(pid, cfg, what) else None


class Child:
    """A child process of a pool and the pipe to it."""

    def __init__(self, ctx: ForkServerContext, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process: ForkServerProcess = ctx.Process(target=target, args=(child_conn, *args), daemon=True)
        self.process.start()
        child_conn.close()
        self.jobs_done = 0
        self.kill_reason: str | None = None  # why it was killed: timed_out, cold_stop

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def alive(self) -> bool:
        return self.process.is_alive()

    def sigkill(self) -> None:
        """SIGKILL, from any thread; whoever waits for its reply sees the pipe close."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def terminate(self, reason: str) -> None:
        """Kill it and say why (``timed_out``, ``cold_stop``): its job's error depends on it."""
        self.kill_reason = reason
        self.sigkill()


class PoolChild(Child):
    """A child that runs one job at a time (``poolchild.child_main``): process and auto.

    With ``measure_runqueue`` (auto) its replies also carry the seconds the job waited for a core.
    """

    def __init__(self, ctx: ForkServerContext, patterns: tuple[str, ...], measure_runqueue: bool = False) -> None:
        super().__init__(ctx, child_main, (patterns, measure_runqueue))

    def wait_reply(self, timeout: float) -> bool:
        """``conn.poll(timeout)`` for any timeout: poll() takes milliseconds as a C int, so a
        wait beyond ~24.8 days (a job with no timeout waits 1e9 s) raised OverflowError after
        the job was sent, and the slot's next job read this job's reply. Waits a day at a time."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if self.conn.poll(max(0.0, min(left, 86400.0))):
                return True
            if left <= 86400.0:
                return False

    def call(self, job: Job, timeout: float) -> tuple[Any, ...]:
        """Run ``job`` in this child and count it: the reply, for :func:`unpack_reply`.

        Raises ``ChildCrashed`` (the child was gone before the job was sent), ``RemoteJobError``
        (the arguments cannot be pickled), :class:`Overdue` (no reply within ``timeout``) or
        :class:`ChildDied` (the pipe closed).
        """
        try:
            self.conn.send(call_message(job))
        except (OSError, ValueError) as e:  # broken pipe: the child died between jobs
            raise ChildCrashed(f"pool child {self.pid} was gone before the job started: {e}") from None
        except Exception as e:  # arguments that cannot be pickled (pickle serializer only)
            raise RemoteJobError(f"job arguments could not be sent to the pool child: {e}") from None
        if not self.wait_reply(timeout):
            raise Overdue(self.pid)
        try:
            reply = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise ChildDied(self.pid, self.process.exitcode, self.kill_reason) from None
        self.jobs_done += 1
        reply_tuple: tuple[Any, ...] = reply
        return reply_tuple

    def kill(self) -> None:
        """Kill and reap the child. Safe to call twice, from two threads (a slot replacing its
        child while a cold stop kills every child)."""
        if self.process.is_alive():
            self.sigkill()
        self.process.join(5)
        with contextlib.suppress(OSError):
            self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(2)
        if self.process.is_alive():
            self.kill()
        with contextlib.suppress(OSError):
            self.conn.close()


def call_child(
    child: PoolChild,
    job: Job,
    wait: float,
    timeout: float,
    replace: Callable[[str], None],
    died_as: str | None = None,
) -> tuple[Any, ...]:
    """``child.call(job, wait)``, with a failed call handled alike by every pool of children.

    The child is replaced (``replace(reason)``) and the job's error raised: a child gone before
    the call (``crashed``), one overdue (``timed_out``: a timeout of ``timeout`` s), one that
    died mid-job (replaced as ``died_as``, else as the reason it was killed for, else
    ``crashed``; the error says why it died).
    """
    try:
        return child.call(job, wait)
    except ChildCrashed:
        replace("crashed")
        raise
    except Overdue:
        replace("timed_out")
        raise timeout_error(timeout, f"pool child {child.pid} was killed") from None
    except ChildDied as d:
        replace(died_as or d.reason or "crashed")
        raise d.error(timeout) from None
