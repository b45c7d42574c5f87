"""Real services for the tests: ``redis-server`` processes on free loopback ports.

- ``redis_server`` (session): one server, no persistence, shared by the whole run.
- ``redis_url`` / ``redis``: its URL, and a client whose database is flushed before and after
  each test.
- ``make_redis_server`` (function): starts more servers, e.g. with AOF on for outage tests
  (``stop()``, ``kill()``, ``restart()`` on the same port and data directory).

Worker processes started through ``helpers`` are killed after every test (autouse).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import helpers
import pytest
import redis as redis_lib
from helpers import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, its files in ``workdir``.

    ``appendonly=True`` turns AOF on with ``appendfsync always``, so an acknowledged write
    survives ``kill()`` (SIGKILL) and comes back on ``restart()``.
    """

    def __init__(self, workdir: Path, *, appendonly: bool = False, port: int | None = None) -> None:
        if not Path(REDIS_SERVER).exists():
            raise RuntimeError(
                f"redis-server not found ({REDIS_SERVER}); install it (apt-get install redis-server) to run the tests"
            )
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.workdir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--save", "",
        ]  # fmt: skip
        if self.appendonly:
            cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            cmd += ["--appendonly", "no"]
        return cmd

    def client(self, **kwargs: object) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.url, **kwargs)  # type: ignore[arg-type]

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"redis-server on port {self.port} exited with {code}:\n{self.log_tail()}")
            try:
                with self.client(socket_connect_timeout=0.5, socket_timeout=0.5) as c:
                    if c.ping():
                        return
            except redis_lib.exceptions.RedisError:
                pass
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING:\n{self.log_tail()}")
            time.sleep(0.05)

    def _signal_and_wait(self, sig: int, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful shutdown (SIGTERM: redis flushes its AOF)."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Dies at once (SIGKILL), like a crash or power loss."""
        self._signal_and_wait(signal.SIGKILL, 15.0)

    def restart(self, timeout: float = 15.0) -> None:
        """Stops (if running) and starts again on the same port with the same data directory."""
        self.stop()
        self.start(timeout)

    def __repr__(self) -> str:
        return f"RedisServer({self.url}, appendonly={self.appendonly}, running={self.running})"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RedisServer]]:
    """Starts extra servers (AOF on by default); all are stopped when the test ends."""
    servers: list[RedisServer] = []

    def make(appendonly: bool = True, start: bool = True) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis-extra"), appendonly=appendonly)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if not redis_server.running:  # a test may have stopped it; bring it back for the others
        redis_server.start()
    return redis_server.url


@pytest.fixture(name="redis")
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    """A client of the session's redis-server; the database is empty at start and flushed at end."""
    conn = redis_lib.Redis.from_url(redis_url)
    conn.flushall()
    yield conn
    helpers.cleanup_processes()  # no worker may write after the flush
    with contextlib.suppress(redis_lib.exceptions.RedisError):
        conn.flushall()
    conn.close()


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """Kills every worker a test started (and its process group), pass or fail."""
    yield
    helpers.cleanup_processes()
