"""Processes the producer starts itself with ``--local``: a private redis-server and workers.

Every process is started in its own session (its own process group) and stopped by its pid
(SIGTERM, then SIGKILL of its group after a timeout), so a worker's forkserver and pool
children never outlive the cell that started them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import redis

from producer.errors import BadInput


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        conn: redis.Redis[bytes] = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(conn.ping())
        finally:
            conn.close()
    except (redis.exceptions.RedisError, OSError, ValueError):
        return False


class LocalRedis:
    """A redis-server on a free loopback port, no persistence, in a temporary directory."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(self.binary).exists():
            raise BadInput("REDIS_URL is unreachable and redis-server is not installed (apt-get install redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="poolq-producer-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not reachable(self.url, 0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BadInput(f"could not start redis-server ({self.binary}); see {self.dir / 'redis.log'}")
            time.sleep(0.05)
        conn: redis.Redis[bytes] = redis.Redis.from_url(self.url)
        self.version = str(conn.info("server").get("redis_version", "?"))
        conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                kill_group(self.proc.pid)
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalWorker:
    """``python -m worker`` started by the producer, long-running (stopped with SIGTERM)."""

    def __init__(
        self,
        redis_url: str,
        strategy: str,
        concurrency: str,
        queue: str,
        name: str,
        log_dir: Path | None = None,
        extra_args: list[str] | None = None,
        burst: bool = False,
    ) -> None:
        self.name = name
        self.queue = queue
        self.cmd = [
            sys.executable, "-m", "worker",
            "--strategy", strategy,
            "--concurrency", concurrency,
            "--queues", queue,
            "--name", name,
            "--metrics-port", "0",
            "--log-level", "WARNING",
            *(extra_args or []),
        ]  # fmt: skip
        if burst:
            self.cmd.append("--burst")
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("WORKER_")}
        env["PYTHONUNBUFFERED"] = "1"
        # In the environment, not on the command line: any user of the host can read a command line
        # (ps), and the URL may carry a password.
        env["REDIS_URL"] = redis_url
        self.log_path = (log_dir or Path(tempfile.gettempdir())) / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started_wall = time.time()
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def wait_registered(self, conn: redis.Redis[bytes], timeout: float = 60.0) -> dict[str, str]:
        """Waits until the worker is in ``rq:workers``; returns its hash (``poolq_concurrency``...)."""
        key = f"rq:worker:{self.name}"
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}: {self.output()}")
            if conn.sismember("rq:workers", key):
                raw = conn.hgetall(key)
                return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not register within {timeout:g} s: {self.output()}")
            time.sleep(0.02)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (warm stop), then SIGKILL to the group; returns the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                kill_group(self.pid)
                self.proc.wait(10)
        kill_group(self.pid)  # the forkserver or anything else left in the group
        self._log.close()
        return int(self.proc.returncode)

    def __enter__(self) -> LocalWorker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
