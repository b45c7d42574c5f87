"""The pieces around a job's callbacks and webhooks, without a worker: the thread-safe callback
timeout (worker/callbacks.py) and the webhook host check (worker/webhooks.py). The worker-level
behaviour, every strategy, is in tests/test_security_jobs.py."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from rq.timeouts import JobTimeoutException

from worker.callbacks import bounded, timeout_of
from worker.webhooks import WebhookHosts, parse_entry

# ------------------------------------------------------------------------------ callback timeouts


def in_thread(fn: Any) -> Any:
    """``fn()`` in a thread that is not the main thread (where SIGALRM cannot be used)."""
    box: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as e:
            box.append((False, e))

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def test_a_callback_runs_off_the_main_thread_and_gives_back_its_value_or_its_error() -> None:
    assert in_thread(lambda: bounded(lambda *a: ("ran", a), 5, "success")(1, 2)) == ("ran", (1, 2))

    def raising(*_: Any) -> None:
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        in_thread(lambda: bounded(raising, 5, "failure")())


def test_an_overdue_callback_raises_a_timeout_in_its_caller_and_is_stopped() -> None:
    """The caller gets JobTimeoutException at the timeout; a callback running Python code is
    then stopped (its counter stops moving); JobTimeoutException's messages stay as written."""
    counter = [0]

    def spin(*_: Any) -> None:
        while True:
            counter[0] += 1

    with pytest.raises(JobTimeoutException, match="success callback exceeded its timeout"):
        in_thread(lambda: bounded(spin, 0.2, "success")())
    time.sleep(0.2)
    seen = counter[0]
    time.sleep(0.3)
    assert counter[0] == seen, "the abandoned callback still runs"
    assert str(JobTimeoutException("pool child 1 was killed")) == "pool child 1 was killed"


def test_coroutine_callbacks_are_refused_as_rq_refuses_them() -> None:
    async def later(*_: Any) -> None:
        await asyncio.sleep(0)

    with pytest.raises(TypeError, match="Coroutine success callbacks are not supported"):
        bounded(later, 5, "success")()


@pytest.mark.parametrize(("value", "seconds"), [(5, 5.0), ("7", 7.0), (None, 60.0), (0, 60.0), (-3, 60.0), ("x", 60.0)])
def test_a_callback_timeout_from_the_job_hash_is_its_own_when_positive_else_rqs_default(
    value: object, seconds: float
) -> None:
    assert timeout_of(value) == seconds


# ------------------------------------------------------------------------------ webhook hosts


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/hook", True),
        ("http://127.0.0.1/hook", False),  # another port
        ("https://hooks.example.com/a?b=c", True),  # the default port of https
        ("http://hooks.example.com/a", True),  # and of http
        ("https://HOOKS.Example.COM./a", True),  # case and a trailing dot
        ("https://hooks.example.com:8443/a", False),
        ("http://[::1]:9000/x", True),
        ("http://user@hooks.example.com/", False),  # user info
        ("http://evil.example\\@hooks.example.com/", False),  # urllib would connect to the left part
        ("http://hooks.example.com.evil.example/", False),
        ("ftp://hooks.example.com/", False),
        ("http://169.254.169.254/latest/meta-data/", False),
        ("not a url", False),
        (None, False),
        (["http://127.0.0.1:8080/"], False),
    ],
)
def test_a_webhook_is_allowed_only_to_a_listed_host_and_port(url: object, allowed: bool) -> None:
    hosts = WebhookHosts(["127.0.0.1:8080", "hooks.example.com", "[::1]:9000"])
    assert hosts.allows(url) is allowed


def test_no_host_is_allowed_by_default() -> None:
    assert not WebhookHosts().allows("http://127.0.0.1:8080/hook")
    assert not WebhookHosts([""]).allows("http://127.0.0.1:8080/hook")


@pytest.mark.parametrize("entry", ["a b", "host/path", "host:0", "host:65536", "host:x", "user@host", ":80", "[::1"])
def test_a_malformed_host_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_entry(entry)
