"""Built-in workloads: deterministic, parameterized, JSON in and JSON out.

Experiments, benchmarks and tests enqueue these by name (``worker.jobs.cpu``). Each returns
where and how it ran (pid, thread id, wall and CPU time, start/end timestamps) so a test can
prove which strategy ran it and how many ran at once, from the jobs' own records.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

# Iterations of the cpu loop that take about one millisecond of one core on a reference
# machine; ``cpu(ms=...)`` calibrates against this process's actual speed on first use.
_CALIBRATION: dict[str, float] = {}


def _record(t0_wall: float, t0_cpu: float, started: float, **extra: Any) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "started": started,
        "ended": time.time(),
        "elapsed": time.perf_counter() - t0_wall,
        "cpu": time.thread_time() - t0_cpu,
        **extra,
    }


def noop() -> dict[str, Any]:
    """Does nothing: measures the queue's own overhead per job."""
    return {"pid": os.getpid()}


def _spin(iterations: int) -> int:
    acc = 0
    for i in range(iterations):
        acc = (acc + i * i) % 1_000_003
    return acc


def iterations_per_ms() -> float:
    """Loop iterations this interpreter runs per millisecond of one core (measured once)."""
    if "ipms" not in _CALIBRATION:
        n = 200_000
        best = float("inf")
        for _ in range(3):
            t0 = time.thread_time()
            _spin(n)
            best = min(best, time.thread_time() - t0)
        _CALIBRATION["ipms"] = n / max(best * 1000.0, 1e-6)
    return _CALIBRATION["ipms"]


def cpu(iterations: int | None = None, ms: float | None = None) -> dict[str, Any]:
    """A pure-Python loop holding the GIL: ``iterations`` exactly, or about ``ms`` of one core."""
    if iterations is None:
        iterations = int((20.0 if ms is None else ms) * iterations_per_ms())
    started, t0_wall, t0_cpu = time.time(), time.perf_counter(), time.thread_time()
    checksum = _spin(int(iterations))
    return _record(t0_wall, t0_cpu, started, iterations=int(iterations), checksum=checksum)


def _socket_round_trip(seconds: float) -> None:
    """A real loopback round trip: a peer thread answers after ``seconds``."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(16)
            time.sleep(seconds)
            conn.sendall(b"pong")

    peer = threading.Thread(target=answer, daemon=True)
    peer.start()
    with socket.create_connection(server.getsockname(), timeout=seconds + 10) as client:
        client.sendall(b"ping")
        client.recv(16)
    peer.join()
    server.close()


def io(seconds: float = 0.05, mode: str = "sleep") -> dict[str, Any]:
    """Waits ``seconds`` without using CPU: ``mode`` "sleep" or "socket" (a loopback round trip)."""
    started, t0_wall, t0_cpu = time.time(), time.perf_counter(), time.thread_time()
    if mode == "sleep":
        time.sleep(seconds)
    elif mode == "socket":
        _socket_round_trip(seconds)
    else:
        raise ValueError(f"io mode must be 'sleep' or 'socket', not {mode!r}")
    return _record(t0_wall, t0_cpu, started, mode=mode)


def mixed(cpu_ms: float = 10.0, io_seconds: float = 0.02) -> dict[str, Any]:
    """Some CPU then some waiting, like a job that parses then calls a service."""
    iterations = int(cpu_ms * iterations_per_ms())
    started, t0_wall, t0_cpu = time.time(), time.perf_counter(), time.thread_time()
    _spin(iterations)
    time.sleep(io_seconds)
    return _record(t0_wall, t0_cpu, started)


def alloc(mb: float = 64.0, seconds: float = 1.0) -> dict[str, Any]:
    """Holds ``mb`` MiB of touched memory for ``seconds``: memory behaviour per strategy."""
    started, t0_wall, t0_cpu = time.time(), time.perf_counter(), time.thread_time()
    block = bytearray(int(mb * 1024 * 1024))
    for i in range(0, len(block), 4096):  # touch every page so it is resident
        block[i] = 1
    time.sleep(seconds)
    size = len(block)
    del block
    return _record(t0_wall, t0_cpu, started, bytes=size)


def fail(message: str = "job failed on purpose") -> None:
    """Raises: the failure path (FailedJobRegistry, retries, dependents)."""
    raise RuntimeError(message)


BUILTIN = ("noop", "cpu", "io", "mixed", "alloc", "fail")
