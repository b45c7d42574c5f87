"""The one ``redis-server`` the tests start: a real process on a free loopback port.

The session's server (tests/conftest.py ``redis_server``), extra servers (``make_redis_server``)
and outage tests' servers are all this class: ``stop()`` (SIGTERM), ``kill()`` (SIGKILL, a crash),
``restart()`` on the same port and data directory. ``appendonly=True`` turns AOF on; ``fsync``
says how often it reaches the disk (``always``: an acknowledged write survives ``kill()``).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis as redis_lib

from support.base import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, its files in ``workdir``.

    ``appendonly=True`` turns AOF on, by default with ``appendfsync always``, so an acknowledged
    write survives ``kill()`` (SIGKILL) and comes back on ``restart()``; ``fsync="everysec"``
    is Redis's own default (up to a second of writes lost to a kill).
    """

    def __init__(
        self, workdir: Path, *, appendonly: bool = False, fsync: str = "always", port: int | None = None
    ) -> None:
        if not Path(REDIS_SERVER).exists():
            raise RuntimeError(
                f"redis-server not found ({REDIS_SERVER}); install it (apt-get install redis-server) to run the tests"
            )
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.fsync = fsync
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
            cmd += ["--appendonly", "yes", "--appendfsync", self.fsync]
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

    def start(self, timeout: float = 15.0) -> RedisServer:
        if self.running:
            return self
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
                        return self
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
