"""What the reliability and chaos tests need beyond ``tests/helpers.py``.

- :class:`RedisServer`: a real ``redis-server`` on a free loopback port, with AOF on when asked,
  that a test may SIGKILL and restart on the same port and directory (a Redis outage);
- job inspection with stock RQ (status, timestamps, failure text) and execution counting from
  the files ``tests.jobs.record`` appends to;
- worker arguments that allow ``tests.jobs.*``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.utils import utcparse

try:  # tests/ as a package (tests/__init__.py) or as a rootdir-relative directory
    from tests import helpers
except ImportError:  # pragma: no cover - depends on how pytest imported the test modules
    import helpers  # type: ignore[no-redef]

ALLOWED = "worker.jobs.*,tests.jobs.*"
ALLOW_ARGS = ("--allowed-functions", ALLOWED)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A ``redis-server`` the test owns: start, SIGKILL, restart on the same port and data directory."""

    def __init__(self, *, aof: bool = False, port: int | None = None, directory: str | None = None) -> None:
        self.aof = aof
        self.port = port or free_port()
        self._own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="poolq-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(self.dir) / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis[bytes]:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def start(self, timeout: float = 20.0) -> RedisServer:
        cmd = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
            "--appendonly",
            "yes" if self.aof else "no",
        ]
        if self.aof:
            cmd += ["--appendfsync", "everysec"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
        client = self.client(socket_connect_timeout=1, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    # After a restart with AOF, Redis answers LOADING until the file is replayed.
                    if client.ping():
                        return self
                except redis.exceptions.RedisError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start: {self.log()[-2000:]}")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync (what a crash or an OOM kill does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()

    def stop(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------------
# jobs


def fetch(conn: redis.Redis[bytes], job_id: str) -> Job:
    return Job.fetch(job_id, connection=conn, serializer=JSONSerializer)


@dataclass
class Outcome:
    """A job's end as stock RQ reads it."""

    id: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    exc_string: str
    result_created_at: datetime | None
    return_value: Any

    @property
    def run_seconds(self) -> float | None:
        """From the job's start to the moment its outcome was recorded."""
        end = self.result_created_at or self.ended_at
        if self.started_at is None or end is None:
            return None
        return (end - self.started_at).total_seconds()


def _date(raw: bytes | None) -> datetime | None:
    if not raw:
        return None
    try:
        return utcparse(raw.decode())
    except ValueError:
        return None


def outcome(conn: redis.Redis[bytes], job_id: str) -> Outcome:
    """The job's status, timestamps and latest result, read with stock RQ. Works for hashes that
    ``Job.fetch`` refuses (a bad ``created_at``, no ``data``): the fields are read one by one and
    the latest result through a stub job, as RQ's own ``Result.fetch_latest`` reads it."""
    raw = conn.hgetall(f"rq:job:{job_id}")
    stub = Job(job_id, connection=conn, serializer=JSONSerializer)
    result = Result.fetch_latest(stub, serializer=JSONSerializer)
    exc = ""
    if result is not None and result.exc_string:
        exc = result.exc_string
    elif raw.get(b"exc_info"):  # a failure recorded without a Result: the hash's exc_info
        try:
            exc = zlib.decompress(raw[b"exc_info"]).decode(errors="replace")
        except zlib.error:
            exc = raw[b"exc_info"].decode(errors="replace")
    value = result.return_value if result is not None and result.type == Result.Type.SUCCESSFUL else None
    return Outcome(
        id=job_id,
        status=raw.get(b"status", b"missing").decode(),
        started_at=_date(raw.get(b"started_at")),
        ended_at=_date(raw.get(b"ended_at")),
        exc_string=exc,
        result_created_at=result.created_at if result is not None else None,
        return_value=value,
    )


def status(conn: redis.Redis[bytes], job_id: str) -> str | None:
    raw = conn.hget(f"rq:job:{job_id}", "status")
    return None if raw is None else raw.decode()


def wait_ended(
    conn: redis.Redis[bytes],
    job_ids: Iterable[str],
    timeout: float,
    proc: Any = None,
    what: str = "jobs to end",
) -> dict[str, str]:
    """Polls until every job is finished or failed; returns their statuses. ``proc`` (a worker)
    must stay alive meanwhile, and its output goes into the failure message."""
    ids = list(job_ids)

    def ended() -> dict[str, str] | None:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited while waiting for {what}: {proc.describe()}")
        statuses = {j: status(conn, j) or "missing" for j in ids}
        return statuses if all(s in ("finished", "failed") for s in statuses.values()) else None

    try:
        return helpers.wait_for(ended, timeout, 0.1, what)
    except AssertionError as e:
        statuses = {j: status(conn, j) for j in ids}
        detail = proc.describe() if proc is not None and hasattr(proc, "describe") else ""
        raise AssertionError(f"{e}; statuses: {Counter(statuses.values())}\n{detail}") from None


def executions(path: str | Path) -> Counter[str]:
    """How many times each token's job began to run, from ``tests.jobs.record``'s file."""
    counts: Counter[str] = Counter()
    with contextlib.suppress(FileNotFoundError):
        for line in Path(path).read_text().splitlines():
            if line.strip():
                counts[line.split()[0]] += 1
    return counts


def worker_env(**settings: Any) -> dict[str, str]:
    """``WORKER_*`` variables from keyword arguments: ``shutdown_timeout=3`` -> ``WORKER_SHUTDOWN_TIMEOUT=3``."""
    return {f"WORKER_{k.upper()}": str(v) for k, v in settings.items()}


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return bool(helpers.group_members(pgid))


def kill9_group(proc: Any) -> float:
    """SIGKILL to the worker's whole process group (worker, forkserver, pool children), like a
    power loss of its container; returns the time of the kill (``time.time()``)."""
    t = time.time()
    helpers.kill_group(proc.pid)
    proc.wait(10)
    helpers.wait_for(lambda: not helpers.group_members(proc.pid), 10, what="the killed worker's group to be gone")
    return t


def log_lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def merged_env(*parts: Mapping[str, str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for p in parts:
        if p:
            env.update(p)
    return env


def metric(port: int, name: str) -> float | None:
    """The sum of a metric's samples on the worker's ``/metrics`` (None: not served or absent)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return None
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    return sum(values) if values else None
