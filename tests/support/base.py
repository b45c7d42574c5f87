"""What every test helper needs: the repository, the interpreter, a free port, a bounded wait."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from producer.processes import free_port as free_port  # the one free_port: the producer's

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = sys.executable
RQ_CLI = str(Path(PYTHON).parent / "rq")

T = TypeVar("T")


def run_producer(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m producer <args>`` from the repository, to completion; what it printed, its exit code.

    The caller's ``REDIS_URL`` and ``PRODUCER_*`` settings are left out (a test passes what it
    means in ``env``), so a developer's environment cannot change what a test runs.
    """
    full_env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("PRODUCER_")}
    full_env.update(env or {})
    return subprocess.run(
        [PYTHON, "-m", "producer", *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Polls ``predicate`` until it returns something truthy and returns that; fails after ``timeout``.

    The timeout is a bound against hangs, never a measurement: nothing asserts how fast.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate!r}")
        time.sleep(interval)


def one_line(err: str) -> str:
    """The one non-empty line of ``err``; fails when there are more."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    return lines[0]
