"""Job functions and callbacks for tests/test_security_jobs.py, run *by the worker* as ``tests.security_jobs.*``.

A "myapp.tasks"-style module: it imports ``os`` and ``subprocess`` for its own use, as real task
modules do, so ``tests.security_jobs.*`` must admit its functions and not ``os.system`` or
``subprocess.run`` reached through it. ``run_alias`` is a re-export under another name: refused.
Callbacks record what they saw in Redis (``cb:<job id>:<kind>``) through the job's connection.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from redis import Redis
from rq.job import Job

run_alias = subprocess.run  # re-exported: defined in subprocess, refused by the allowlist
_HERE = (os, subprocess)  # the module uses them, as task modules do


def touch(path: str) -> str:
    """Creates ``path``: the job ran."""
    Path(path).write_text("ran\n")
    return path


def boom(message: str = "boom") -> None:
    raise RuntimeError(message)


def record_success(job: Job, connection: Redis, result: Any) -> None:
    connection.set(f"cb:{job.id}:success", repr(result))


def record_failure(job: Job, connection: Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    connection.set(f"cb:{job.id}:failure", f"{exc_type.__name__}: {exc_value}")


def raise_in_success(job: Job, connection: Redis, result: Any) -> None:
    connection.set(f"cb:{job.id}:success", "raised")
    raise ValueError("the success callback raised")


def slow_success(job: Job, connection: Redis, result: Any) -> None:
    connection.set(f"cb:{job.id}:success", "started")
    time.sleep(4)
    connection.set(f"cb:{job.id}:success", "overran")


class Tasks:
    """``module.Class.method`` names: a static and a class method defined here pass."""

    @staticmethod
    def static_touch(path: str) -> str:
        return touch(path)

    @classmethod
    def class_touch(cls, path: str) -> str:
        return touch(path)
