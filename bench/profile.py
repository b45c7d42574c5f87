"""Profile one poolq worker draining a backlog, with py-spy, and summarise where the time goes.

    python -m bench.profile                                   # thread strategy, 10,000 noop jobs
    python -m bench.profile --strategy inline --count 5000 --workload noop
    python -m bench.profile --gil                             # only samples holding the GIL

Starts a private redis-server on a free loopback port, enqueues the jobs with stock RQ (as
``bench.run`` does), then runs ``py-spy record --format raw -- python -m worker --burst ...``
and stops Redis. py-spy samples every thread of the worker (100 Hz by default, ``--idle``
off: threads blocked in a system call, e.g. waiting on a socket, are not sampled), so a frame's
share of samples is its share of the worker's on-CPU time. Writes to ``--out``:

- ``profile.txt``: collapsed stacks (flamegraph.pl / speedscope read it);
- ``summary.md``: the top functions by inclusive and by self share of samples, and the
  shares of a few groups (redis-py, RQ's job model, poolq, the interpreter's threading).

Needs py-spy on PATH or in the venv (``pip install py-spy``) and permission to ptrace its
own child (the default when py-spy starts the process itself).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.catalog import QUEUE, WORKLOADS
from bench.cell import enqueue_jobs
from bench.procs import RedisServer

GROUPS = {
    "redis-py (send, parse, connection pool, retry)": ("redis/",),
    "hiredis": ("hiredis",),
    "rq (job model, registries, results)": ("rq/",),
    "poolq worker/": ("worker/",),
    "threading / queue (locks, condition waits)": ("threading.py", "queue.py"),
    "json / zlib / datetime / uuid": ("json/", "zlib", "datetime", "uuid.py", "_strptime"),
}


def _name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (to/file.py)``: one entry per function."""
    func, sep, where = frame.partition(" (")
    if not sep:
        return frame
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{func} ({'/'.join(path.split('/')[-2:])})"


def _thread(first: str) -> str:
    """``thread (123): poolq-thread-7`` -> ``poolq-thread-*``."""
    name = first.split(": ", 1)[-1]
    return re.sub(r"-\d+$", "-*", name)


def summarise(raw: Path, top: int = 25) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    groups: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        first, *frames = stack.split(";")
        threads[_thread(first)] += count
        if not frames:
            continue
        for name in {_name(f) for f in frames}:
            inclusive[name] += count
        self_[_name(frames[-1])] += count
        for group, needles in GROUPS.items():
            if any(nd in f for f in frames for nd in needles):
                groups[group] += count
    if not total:
        return "no samples\n"
    out = [f"{total} samples\n", "| group (inclusive) | % of samples |", "|---|---|"]
    out += [f"| {g} | {100 * n / total:.1f} |" for g, n in groups.most_common()]
    out += ["", "| thread | % of samples |", "|---|---|"]
    out += [f"| {t} | {100 * n / total:.1f} |" for t, n in threads.most_common(8)]
    out += ["", "| function (inclusive) | % of samples |", "|---|---|"]
    out += [f"| `{f}` | {100 * n / total:.1f} |" for f, n in inclusive.most_common(top)]
    out += ["", "| function (self) | % of samples |", "|---|---|"]
    out += [f"| `{f}` | {100 * n / total:.1f} |" for f, n in self_.most_common(top)]
    return "\n".join(out) + "\n"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(found):
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategy", default="thread")
    ap.add_argument("--concurrency", default="auto")
    ap.add_argument("--workload", default="noop", choices=sorted(WORKLOADS))
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--gil", action="store_true", help="only sample threads holding the GIL")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    args = ap.parse_args(argv)
    out = args.out or Path(__file__).parent / "results" / time.strftime("profile-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    wl = WORKLOADS[args.workload]
    if args.workload == "cpu":
        raise SystemExit("cpu needs calibrated iterations: profile noop, io or mixed")
    server = RedisServer(args.redis_server)
    try:
        enqueue_jobs(server.client, wl, args.count)
        raw = out / "profile.txt"
        cmd = [py_spy(), "record", "--format", "raw", "--rate", str(args.rate), "-o", str(raw), "--threads"]
        if args.gil:
            cmd.append("--gil")
        cmd += ["--", sys.executable, "-m", "worker", "--strategy", args.strategy, "--concurrency"]
        cmd += [args.concurrency, "--queues", QUEUE, "--burst", "--redis-url", server.url, "--metrics-port", "0"]
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.monotonic() - t0
        left = server.client.llen(f"rq:queue:{QUEUE}")
        cmds = sum(int(v["calls"]) for v in server.client.info("commandstats").values())
    finally:
        server.stop()
    summary = (
        f"# py-spy: {args.strategy} ({args.concurrency}), {args.count} x {args.workload}, "
        f"{wall:.1f} s wall incl. start-up, {left} left in the queue, "
        f"{cmds / args.count:.1f} Redis cmds/job incl. enqueue, load {os.getloadavg()[0]:.2f}"
        f"{', --gil' if args.gil else ''}\n\n" + summarise(raw)
    )
    (out / "summary.md").write_text(summary)
    print(summary)
    print(f"collapsed stacks: {raw}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
