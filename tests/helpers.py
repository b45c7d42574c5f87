"""Helpers for tests that run real worker processes against a real redis-server.

Also imported *by the worker* (as ``tests.helpers``) for the few job functions the tests need
beyond the built-in workloads: those functions are outside the default allowlist on purpose.

Every process started here is remembered; :func:`cleanup_processes` (called by an autouse
fixture after each test) kills whatever is left, with its whole process group, so a failing
test never leaves a worker or a pool child behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RQ_CLI = str(Path(PYTHON).parent / "rq")

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# job functions run by the worker (never by the default allowlist)


def touch_sentinel(path: str) -> str:
    """Creates ``path``: if the file exists, the function ran."""
    Path(path).write_text(f"ran in pid {os.getpid()}\n")
    return path


def count_and_fail(redis_url: str, key: str, message: str = "counted failure") -> None:
    """Counts one execution in Redis, then raises: how many times did a retried job run?"""
    conn = redis.Redis.from_url(redis_url)
    try:
        conn.incr(key)
    finally:
        conn.close()
    raise RuntimeError(message)


# ---------------------------------------------------------------------------------------------
# waiting, ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


# ---------------------------------------------------------------------------------------------
# processes

_SPAWNED: list[subprocess.Popen[Any]] = []
_LOGS: list[Path] = []


def worker_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker subprocess: no inherited REDIS_URL / WORKER_* settings, the
    repository on PYTHONPATH (so ``tests.helpers`` functions resolve, in pool children too)."""
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


def kill_group(pgid: int) -> None:
    """SIGKILL to a whole process group (worker, forkserver, pool children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


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


# ---------------------------------------------------------------------------------------------
# jobs, with stock RQ and the JSON serializer


def json_queue(conn: redis.Redis, name: str = "default") -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


def enqueue_many(conn: redis.Redis, func: str, n: int, queue: str = "default", **kwargs: Any) -> list[Job]:
    """``n`` jobs of ``func`` with the same keyword arguments."""
    q = json_queue(conn, queue)
    return [q.enqueue(func, **kwargs) for _ in range(n)]


def fetch(conn: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=conn, serializer=JSONSerializer)


def finished_records(conn: redis.Redis, jobs: Iterable[Job], context: str = "") -> list[dict[str, Any]]:
    """The return values of ``jobs``, each of which must have finished."""
    records = []
    for job in jobs:
        j = fetch(conn, job.id)
        status = j.get_status()
        detail = ""
        if status != "finished":
            res = j.latest_result()
            detail = res.exc_string if res is not None and res.exc_string else ""
        assert status == "finished", f"job {j.id} ({j.func_name}) is {status}: {detail}\n{context}"
        value = j.return_value()
        assert isinstance(value, dict), f"job {j.id} returned {value!r}"
        records.append(value)
    return records


def overlap(records: Iterable[Mapping[str, Any]]) -> int:
    """The largest number of jobs that ran at the same time, from their own started/ended
    timestamps. A job that ended at the instant another started does not overlap it."""
    events: list[tuple[float, int]] = []
    for r in records:
        started, ended = float(r["started"]), float(r["ended"])
        assert ended >= started, f"record ends before it starts: {r}"
        events.append((started, 1))
        events.append((ended, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # at equal times, ends (-1) before starts (+1)
    running = most = 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    return most


def worker_hash(conn: redis.Redis, name: str) -> dict[str, str]:
    """The worker's own hash (``rq:worker:<name>``), decoded."""
    raw = conn.hgetall(f"rq:worker:{name}")
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
