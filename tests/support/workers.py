"""Worker processes for the tests: ``python -m worker`` run to the end, started, signalled, stopped.

Every process started here is remembered; :func:`cleanup_processes` (called by an autouse
fixture after each test) kills whatever is left, with its whole process group, so a failing
test never leaves a worker or a pool child behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import redis

from producer.processes import kill_group  # SIGKILL to a whole process group (worker, forkserver, children)
from support.base import PYTHON, REPO_ROOT, wait_for

# Worker arguments that allow the tests' own job functions (tests/jobs.py) beside the built-in ones.
ALLOWED = "worker.jobs.*,tests.jobs.*"
ALLOW_ARGS = ("--allowed-functions", ALLOWED)

_SPAWNED: list[subprocess.Popen[Any]] = []
_LOGS: list[Path] = []


def worker_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker subprocess: no inherited REDIS_URL / WORKER_* settings, the
    repository on PYTHONPATH (so ``tests.jobs`` functions resolve, in pool children too)."""
    base = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("WORKER_")}
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    base["PYTHONUNBUFFERED"] = "1"
    if env:
        base.update(env)
    return base


def worker_cmd(url: str | None, *args: str, python: Sequence[str] = (PYTHON,)) -> list[str]:
    """``python -m worker`` against ``url`` (None: leave the URL to the environment), metrics off.

    Later flags win in argparse, so ``args`` may override ``--metrics-port``.
    """
    cmd = [*python, "-m", "worker", "--metrics-port", "0"]
    if url is not None:
        cmd += ["--redis-url", url]
    return [*cmd, *args]


def new_name(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _queues_arg(queues: str | Sequence[str]) -> str:
    return queues if isinstance(queues, str) else ",".join(queues)


def _pool_args(strategy: str | None, concurrency: int | str | None, queues: str | Sequence[str] | None) -> list[str]:
    args: list[str] = []
    if strategy is not None:
        args += ["--strategy", strategy]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    if queues is not None:
        args += ["--queues", _queues_arg(queues)]
    return args


class WorkerRun(subprocess.CompletedProcess[str]):
    """A finished worker: exit code and output, plus its pid and worker name."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str, pid: int, name: str) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.pid = pid
        self.name = name

    def describe(self) -> str:
        return f"worker {self.name} (pid {self.pid}) exited {self.returncode}; stderr:\n{self.stderr[-6000:]}"


class WorkerTimeout(AssertionError):
    """A burst worker did not exit in time (it was killed; its output is in the message)."""


def run_worker(
    url: str | None,
    strategy: str | None = "thread",
    concurrency: int | str | None = 2,
    queues: str | Sequence[str] | None = "default",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    name: str | None = None,
    burst: bool = True,
    prefix: Sequence[str] = (),
) -> WorkerRun:
    """Runs ``python -m worker --burst`` to completion and returns its exit code and output.

    ``prefix`` wraps the interpreter (e.g. ``("taskset", "-c", "0")``). On timeout the whole
    process group is killed and :class:`WorkerTimeout` carries what the worker printed.
    """
    name = name or new_name()
    args = [*_pool_args(strategy, concurrency, queues), "--name", name]
    if burst:
        args.append("--burst")
    cmd = worker_cmd(url, *args, *extra_args, python=(*prefix, PYTHON))
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=worker_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _SPAWNED.append(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, err = proc.communicate()
        raise WorkerTimeout(
            f"worker {name} did not exit within {timeout:g} s and was killed; stderr:\n{err[-6000:]}"
        ) from None
    return WorkerRun(cmd, proc.returncode, out, err, proc.pid, name)


def assert_ok(run: WorkerRun) -> WorkerRun:
    """The worker exited 0 (job tracebacks in its log are fine: failing jobs are logged)."""
    assert run.returncode == 0, run.describe()
    return run


class WorkerProcess(subprocess.Popen[bytes]):
    """A background worker; its stdout and stderr go to one log file (no pipe to fill up)."""

    name: str
    log_path: Path

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def describe(self) -> str:
        return f"worker {self.name} (pid {self.pid}, exit {self.poll()}); output:\n{self.output()[-6000:]}"


def start_worker(
    url: str | None,
    strategy: str | None = "thread",
    concurrency: int | str | None = 2,
    queues: str | Sequence[str] | None = "default",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    prefix: Sequence[str] = (),
) -> WorkerProcess:
    """Starts a long-running worker in its own session (its own process group)."""
    name = name or new_name()
    args = [*_pool_args(strategy, concurrency, queues), "--name", name]
    cmd = worker_cmd(url, *args, *extra_args, python=(*prefix, PYTHON))
    fd, log_name = tempfile.mkstemp(prefix=f"poolq-{name}-", suffix=".log")
    log_path = Path(log_name)
    _LOGS.append(log_path)
    try:
        proc = WorkerProcess(
            cmd,
            cwd=REPO_ROOT,
            env=worker_env(env),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        os.close(fd)
    proc.name = name
    proc.log_path = log_path
    _SPAWNED.append(proc)
    return proc


def wait_registered(conn: redis.Redis, proc: WorkerProcess, timeout: float = 30.0) -> None:
    """Waits until the worker registered itself in Redis (``rq:workers``), or fails with its output."""

    def registered() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited before registering: {proc.describe()}")
        return bool(conn.sismember("rq:workers", f"rq:worker:{proc.name}"))

    wait_for(registered, timeout, what=f"worker {proc.name} to register")


def signal_later(pid: int, sig: int, delay: float) -> threading.Thread:
    """Sends ``sig`` to ``pid`` after ``delay`` seconds from a helper thread (as RQ's tests do
    with ``kill_worker`` in a helper process), while the test goes on with something else."""

    def send() -> None:
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    t = threading.Thread(target=send, name=f"signal-{pid}", daemon=True)
    t.start()
    return t


def stop(
    proc: subprocess.Popen[Any],
    sig: int = signal.SIGTERM,
    *,
    second: int | None = None,
    interval: float = 0.5,
    timeout: float = 60.0,
) -> int:
    """Signals the worker process (not its group: what ``docker stop`` or systemd do) and waits
    for it to exit; ``second`` sends another signal ``interval`` s later (a cold stop). Returns
    the exit code; on ``timeout`` kills the group and fails with the worker's output."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    if second is not None:
        signal_later(proc.pid, second, interval)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.wait()
        detail = proc.describe() if isinstance(proc, WorkerProcess) else f"pid {proc.pid}"
        raise AssertionError(
            f"worker did not exit within {timeout:g} s of {signal.Signals(sig).name}: {detail}"
        ) from None


def descendants(pid: int) -> set[int]:
    """Pids of all live descendants of ``pid`` (pool children sit under the forkserver)."""
    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``: what a worker left behind."""
    found = []
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.pid) == pgid:
                found.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def cleanup_processes() -> list[int]:
    """Kills every worker started by these helpers that is still running, and whatever is left
    in its process group; returns the pids that were still running."""
    alive = []
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            alive.append(proc.pid)
        kill_group(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream is not None:
                stream.close()
    while _LOGS:
        with contextlib.suppress(OSError):
            _LOGS.pop().unlink()
    return alive


def worker_hash(conn: redis.Redis, name: str) -> dict[str, str]:
    """The worker's own hash (``rq:worker:<name>``), decoded."""
    raw = conn.hgetall(f"rq:worker:{name}")
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}


def settings_env(**settings: Any) -> dict[str, str]:
    """``WORKER_*`` variables from keyword arguments: ``shutdown_timeout=3`` -> ``WORKER_SHUTDOWN_TIMEOUT=3``."""
    return {f"WORKER_{k.upper()}": str(v) for k, v in settings.items()}


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return bool(group_members(pgid))


def kill9_group(proc: Any) -> float:
    """SIGKILL to the worker's whole process group (worker, forkserver, pool children), like a
    power loss of its container; returns the time of the kill (``time.time()``)."""
    t = time.time()
    kill_group(proc.pid)
    proc.wait(10)
    wait_for(lambda: not group_members(proc.pid), 10, what="the killed worker's group to be gone")
    return t


def merged_env(*parts: Mapping[str, str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for p in parts:
        if p:
            env.update(p)
    return env


def log_lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def run_cli(
    args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 30.0, module: str = "worker"
) -> subprocess.CompletedProcess[str]:
    """``python -m worker ARGS`` (or ``module``) with a clean environment plus ``env`` (no --redis-url added)."""
    return subprocess.run(
        [PYTHON, "-m", module, *args],
        cwd=REPO_ROOT,
        env=worker_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(res: subprocess.CompletedProcess[str], *mentions: str) -> str:
    """Exit code 2, no traceback, one line on stderr naming each of ``mentions``; returns that line."""
    detail = f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert res.returncode == 2, detail
    assert "Traceback" not in res.stderr, detail
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, detail
    for m in mentions:
        assert m.lower() in lines[0].lower(), detail
    return lines[0]


def pid_gone(pid: int) -> bool:
    """The process is gone (or a zombie nobody reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
