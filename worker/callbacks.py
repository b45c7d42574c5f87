"""RQ job callbacks (``on_success``, ``on_failure``, ``on_stopped``) with a timeout that works in any thread.

RQ runs a callback inside ``death_penalty_class(timeout)``, by default SIGALRM, which only works
in the main thread: in a poolq slot thread it raised ``ValueError: signal only works in main
thread`` and every job with a callback failed without the callback running. RQ's own
``TimerDeathPenalty`` is not a way out: it replaces ``JobTimeoutException.__init__`` for the
whole process (every later timeout message, e.g. "pool child 123 was killed", becomes its own),
and a timer that fires as the callback returns raises into whatever the thread does next.

So the worker's ``death_penalty_class`` is :class:`CallbackDeadline`, which arms nothing, and
each callback RQ's code calls is wrapped (:func:`bounded`): it runs in a helper thread while the
caller waits up to the callback's timeout. Past it the caller gets ``JobTimeoutException`` (what
RQ gives) and the helper thread is asked to stop with an asynchronous exception, delivered at its
next Python bytecode (code blocked in C returns first); it is then abandoned, like an overdue
thread job. RQ decides everything else: when each callback runs, that a raising success callback
fails the job (and runs the failure callback), that a raising failure callback replaces the
recorded error.
"""

from __future__ import annotations

import contextvars
import ctypes
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

from rq.defaults import CALLBACK_TIMEOUT
from rq.timeouts import BaseDeathPenalty, JobTimeoutException

log = logging.getLogger("worker.callbacks")


class CallbackAbandoned(BaseException):
    """Raised asynchronously in a callback's thread once its caller stopped waiting for it."""


class CallbackDeadline(BaseDeathPenalty):
    """The worker's ``death_penalty_class``: a no-op, because :func:`bounded` enforces the timeout
    (RQ only uses the worker's death penalty class around callbacks)."""

    def setup_death_penalty(self) -> None:
        pass

    def cancel_death_penalty(self) -> None:
        pass


def timeout_of(value: object) -> float:
    """A callback's timeout in seconds: the job's own when it is a positive number, else RQ's default."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float(CALLBACK_TIMEOUT)
    return seconds if seconds > 0 else float(CALLBACK_TIMEOUT)


def call_with_timeout(func: Callable[..., Any], args: tuple[Any, ...], timeout: float, what: str) -> Any:
    """``func(*args)`` in a helper thread; its result, its exception, or ``JobTimeoutException``."""
    done = threading.Event()
    outcome: list[Any] = []
    context = contextvars.copy_context()

    def run() -> None:
        try:
            try:
                outcome.append((True, context.run(func, *args)))
            except CallbackAbandoned:
                raise
            except BaseException as e:  # handed to the caller, which re-raises it
                outcome.append((False, e))
            finally:
                done.set()
        except CallbackAbandoned:  # wherever it lands, once the caller gave up on this thread
            log.warning("%s callback stopped after its timeout", what)

    thread = threading.Thread(target=run, name=f"poolq-{what}-callback", daemon=True)
    thread.start()
    if not done.wait(timeout):
        _interrupt(thread)
        log.warning("%s callback overran its timeout (%g s): its thread was abandoned", what, timeout)
        raise JobTimeoutException(f"{what} callback exceeded its timeout ({timeout:g} seconds)")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _interrupt(thread: threading.Thread) -> None:
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(CallbackAbandoned))


def bounded(func: Callable[..., Any], timeout: object, what: str) -> Callable[..., Any]:
    """``func`` as RQ's callback runner calls it, run under ``timeout`` (see the module docstring)."""
    seconds = timeout_of(timeout)
    coroutine = inspect.iscoroutinefunction(func)

    def callback(*args: Any) -> Any:
        if coroutine:  # RQ's own check, which the wrapper would hide from it
            raise TypeError(f"Coroutine {what} callbacks are not supported")
        return call_with_timeout(func, args, seconds, what)

    callback.__qualname__ = f"bounded({getattr(func, '__qualname__', what)})"
    return callback
