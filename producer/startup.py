"""Direct measurement of start-up cost: N threads vs N processes, each until it runs code.

``python -m producer.startup --kind thread|forkserver|spawn|fork --n N`` runs in a fresh
interpreter (so a forkserver is started from scratch, as in a fresh worker) and prints one
JSON line: the seconds from "create N" to "all N have run their first line of code", and the
seconds until all N are joined again. ``forkserver`` preloads ``worker.jobs`` as the worker's
process pool does. The experiment runs this a few times per kind and reports the median.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
from typing import Any, Protocol

KINDS = ("thread", "forkserver", "spawn", "fork")


def _ready(q: Any, i: int) -> None:
    """The first line of code a new thread or process runs: it says so."""
    q.put(i)


def _context(kind: str) -> SpawnContext | ForkContext | ForkServerContext:
    """The start method's context; forkserver preloads ``worker.jobs`` as the worker's pool does."""
    if kind == "forkserver":
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["worker.jobs"])
        return ctx
    if kind == "fork":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


class _Runner(Protocol):
    def start(self) -> None: ...

    def join(self) -> None: ...


def measure(kind: str, n: int) -> dict[str, float]:
    if kind == "thread":
        import queue

        tq: queue.SimpleQueue[int] = queue.SimpleQueue()
        t0 = time.perf_counter()
        return _ready_and_joined(t0, [threading.Thread(target=_ready, args=(tq, i)) for i in range(n)], tq.get)
    ctx = _context(kind)
    pq = ctx.SimpleQueue()
    t0 = time.perf_counter()
    return _ready_and_joined(t0, [ctx.Process(target=_ready, args=(pq, i)) for i in range(n)], pq.get)


def _ready_and_joined(t0: float, runners: Sequence[_Runner], ready: Callable[[], object]) -> dict[str, float]:
    """Starts the threads or processes, waits for each one's first line, joins them: seconds since ``t0``."""
    for r in runners:
        r.start()
    for _ in runners:
        ready()
    ready_s = time.perf_counter() - t0
    for r in runners:
        r.join()
    return {"ready_s": ready_s, "joined_s": time.perf_counter() - t0}


def run_fresh(kind: str, n: int, runs: int = 3, timeout: float = 120.0) -> dict[str, Any]:
    """Median over ``runs`` fresh interpreters of :func:`measure`."""
    readies, joins = [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-m", "producer.startup", "--kind", kind, "--n", str(n)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        data = json.loads(out.stdout.strip().splitlines()[-1])
        readies.append(float(data["ready_s"]))
        joins.append(float(data["joined_s"]))
    return {
        "kind": kind,
        "n": n,
        "runs": runs,
        "ready_s": statistics.median(readies),
        "joined_s": statistics.median(joins),
        "ready_s_all": readies,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m producer.startup", description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=KINDS, required=True)
    ap.add_argument("--n", type=int, default=2)
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be >= 1")
    print(json.dumps(measure(args.kind, args.n)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
