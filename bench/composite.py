"""Hybrid and auto against the pure strategies, and throughput per number of worker replicas.

    python -m bench.composite                       # both parts, 3 repeats (~15 min on 2 CPUs)
    python -m bench.composite --part strategies --workloads mixed50,mixedfn
    python -m bench.composite --part replicas
    python -m bench.composite --quick               # smoke run: small counts, 1 repeat

Method (as bench/sizing.py and bench/run.py): a private ``redis-server``; for every cell FLUSHALL,
enqueue every job up front with stock RQ (pipelined, JSON serializer), start the worker(s) with
``--burst``, wait for them to exit, read every job back with stock RQ. Throughput = finished jobs
/ (last ``ended_at`` - first ``started_at``), from RQ's own job timestamps (worker start-up is
not counted); latency = ``ended_at - enqueued_at`` (with every job enqueued up front it is
mostly queue wait: p95 ~ 95% of the makespan). Median (min-max) of the repeats. Where the jobs
ran comes from their return values (pid: the worker's own = a thread, another = a pool child).

Workloads: ``cpu`` (a pure-Python loop of ~20 ms of one core, iterations calibrated once here so
every strategy runs the same work), ``io`` (sleep 50 ms), ``mixed50`` (cpu and io jobs
alternating, half each), ``mixedfn`` (``worker.jobs.mixed``: 10 ms of CPU then 20 ms of sleep in
one function), ``noop``.

Replicas: 1, 2 and 4 workers on one queue, each pinned to one CPU with ``taskset`` (replica i on
CPU i mod the machine's CPUs), like pods with a 1-CPU limit: each sizes itself to 1 CPU
(process: 1 child; thread: 8 threads). On a 2-CPU machine CPU-bound work can only double.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from bench.procs import RedisServer, log
from bench.table import med
from producer.stats import percentile

REPO = Path(__file__).resolve().parent.parent
QUEUE = "bench"
CPU_MS = 20.0
IO_SECONDS = 0.05


def cpu_iterations() -> int:
    from worker.jobs import iterations_per_ms

    return int(CPU_MS * iterations_per_ms())


@dataclass(frozen=True)
class Workload:
    name: str
    count: int
    quick: int

    def jobs(self, n: int, iterations: int) -> list[tuple[str, dict[str, Any]]]:
        cpu = ("worker.jobs.cpu", {"iterations": iterations})
        io = ("worker.jobs.io", {"seconds": IO_SECONDS})
        if self.name == "cpu":
            return [cpu] * n
        if self.name == "io":
            return [io] * n
        if self.name == "mixed50":
            return [cpu if i % 2 == 0 else io for i in range(n)]
        if self.name == "mixedfn":
            return [("worker.jobs.mixed", {"cpu_ms": 10.0, "io_seconds": 0.02})] * n
        if self.name == "noop":
            return [("worker.jobs.noop", {})] * n
        raise ValueError(self.name)


WORKLOADS = {
    w.name: w
    for w in (
        Workload("cpu", 300, 40),
        Workload("io", 600, 100),
        Workload("mixed50", 500, 60),
        Workload("mixedfn", 300, 40),
        Workload("noop", 2000, 200),
    )
}
STRATEGIES = ("thread", "process", "hybrid", "auto")


def enqueue(client: redis.Redis[bytes], jobs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    q = Queue(QUEUE, connection=client, serializer=JSONSerializer)
    ids: list[str] = []
    for start in range(0, len(jobs), 500):
        datas = [Queue.prepare_data(f, kwargs=dict(kw), result_ttl=3600) for f, kw in jobs[start : start + 500]]
        with client.pipeline() as pipe:
            ids += [j.id for j in q.enqueue_many(datas, pipeline=pipe)]
            pipe.execute()
    return ids


def run_cell(
    server: RedisServer,
    strategy: str,
    wl: Workload,
    count: int,
    iterations: int,
    replicas: int,
    pin: bool,
    logdir: Path,
    tag: str,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    client = server.client
    client.flushall()
    ids = enqueue(client, wl.jobs(count, iterations))
    load = os.getloadavg()[0]
    ncpu = len(os.sched_getaffinity(0))
    procs = []
    for i in range(replicas):
        prefix = ["taskset", "-c", str(i % ncpu)] if pin else []
        cmd = [*prefix, sys.executable, "-m", "worker", "--strategy", strategy, "--burst", "--queues", QUEUE,
               "--redis-url", server.url, "--metrics-port", "0", "--name", f"bench-{tag}-{i}", *extra]  # fmt: skip
        out = open(logdir / f"{tag}-{i}.log", "wb")  # noqa: SIM115 - closed below
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
        procs.append((subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env), out))
    pids = {p.pid for p, _ in procs}
    cpu = CpuSampler(sorted(pids))
    cpu.start()
    try:
        for p, out in procs:
            p.wait(timeout=900)
            out.close()
    finally:
        cpu.stop()
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
    jobs = [j for j in Job.fetch_many(ids, connection=client, serializer=JSONSerializer) if j is not None]
    done = [j for j in jobs if j.get_status(refresh=False) == "finished" and j.started_at and j.ended_at]
    starts, ends, lat = [], [], []
    for j in done:
        if j.started_at and j.ended_at and j.enqueued_at:
            starts.append(j.started_at.timestamp())
            ends.append(j.ended_at.timestamp())
            lat.append(j.ended_at.timestamp() - j.enqueued_at.timestamp())
    makespan = max(ends) - min(starts) if done else math.nan
    cpu_s, cpu_jobs = cpu.per_job(ends)
    in_worker = {"cpu": [0, 0], "io": [0, 0], "other": [0, 0]}  # kind -> [in a worker pid, in a child]
    for j in done:
        value = j.return_value()
        kind = "cpu" if j.func_name == "worker.jobs.cpu" else "io" if j.func_name == "worker.jobs.io" else "other"
        if isinstance(value, dict) and "pid" in value:
            in_worker[kind][0 if value["pid"] in pids else 1] += 1
    return {
        "strategy": strategy,
        "workload": wl.name,
        "replicas": replicas,
        "count": count,
        "finished": len(done),
        "jobs_per_s": len(done) / makespan if done and makespan > 0 else math.nan,
        "p50_s": percentile(lat, 50, "nearest-rank"),
        "p95_s": percentile(lat, 95, "nearest-rank"),
        "cpu_s": cpu_s,
        "cpu_s_per_job": cpu_s / cpu_jobs if cpu_jobs else math.nan,
        "loadavg": load,
        "ran_in_worker_vs_child": in_worker,
        "exit_codes": [p.returncode for p, _ in procs],
    }


class CpuSampler:
    """CPU seconds of the replicas' process trees (workers, forkservers, pool children), sampled.

    Cumulative user + system time of every live process plus what each has reaped, summed over
    the trees every 50 ms and held monotonic. CPU per job is taken over a window that lies
    inside the sampling (first to last reading with jobs ending in between), so neither the
    interpreters' start-up nor the tail after the last reading skews it.
    """

    def __init__(self, pids: Sequence[int], interval: float = 0.05) -> None:
        import psutil

        self.roots = [psutil.Process(p) for p in pids]
        self.interval = interval
        self.readings: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def _sample(self) -> None:
        import psutil

        total = 0.0
        for root in self.roots:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                try:
                    t = p.cpu_times()
                except psutil.Error:
                    continue
                total += t.user + t.system + t.children_user + t.children_system
        last = self.readings[-1][1] if self.readings else 0.0
        self.readings.append((time.time(), max(last, total)))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def per_job(self, ends: Sequence[float]) -> tuple[float, int]:
        """(CPU seconds, jobs ended) between the first reading after the first job ended and the
        last reading before the last job ended."""
        if not ends:
            return math.nan, 0
        inside = [r for r in self.readings if min(ends) <= r[0] <= max(ends)]
        if len(inside) < 2:
            return math.nan, 0
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return c1 - c0, sum(1 for e in ends if t0 < e <= t1)


def planner_prediction(one_replica_jobs_s: float, cpu_s_per_job: float, shared_cpus: int) -> list[float]:
    """What ``producer plan --shared-cpus`` predicts for 1, 2 and 4 replicas from the 1-replica cell.

    The planner's own code (``Option.rate_with``): k x the one-replica rate, capped at the shared
    CPUs / CPU seconds per job. The table puts it beside what the replicas really did.
    """
    from producer.capacity import Option

    opt = Option(strategy="", slots=1, mu=one_replica_jobs_s, replica_rate=one_replica_jobs_s, cpu_per_replica=1.0,
                 mem_per_replica_mib=math.nan, cs2=None, run_mean_s=None, measured_cpus=1, runs=1, count=0,
                 problems=[], cpu_s_per_job=cpu_s_per_job)  # fmt: skip
    return [opt.rate_with(k, shared_cpus) for k in (1, 2, 4)]


def fmt_rate(vals: list[float]) -> str:
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return "—"
    return f"{statistics.median(vals):.0f} ({min(vals):.0f}-{max(vals):.0f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.composite", description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("strategies", "replicas", "both"), default="both")
    ap.add_argument("--workloads", default="cpu,io,mixed50,mixedfn")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--pairs", default="cpu:process,io:thread,cpu:hybrid,io:hybrid",
        help="replicas part: workload:strategy pairs (default: %(default)s)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "composite")
    args = ap.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    args.out.mkdir(parents=True, exist_ok=True)
    logdir = args.out / "logs"
    logdir.mkdir(exist_ok=True)
    iterations = cpu_iterations()
    log(f"cpu jobs: {iterations} iterations (~{CPU_MS:g} ms of one core here)")
    server = RedisServer()
    cells: list[dict[str, Any]] = []
    report: list[str] = []
    try:
        if args.part in ("strategies", "both"):
            names = [w for w in args.workloads.split(",") if w]
            strategies = [s for s in args.strategies.split(",") if s]
            for r in range(repeats):
                for w in names:
                    wl = WORKLOADS[w]
                    for s in strategies:  # interleaved: drift of the machine's load hits every strategy
                        c = run_cell(server, s, wl, wl.quick if args.quick else wl.count, iterations, 1, False,
                                     logdir, f"r{r}-{w}-{s}")  # fmt: skip
                        c["repeat"] = r
                        cells.append(c)
                        log(f"[r{r}] {w:8} {s:8} {c['jobs_per_s']:7.1f} jobs/s  p95 {c['p95_s']:.2f} s  "
                            f"load {c['loadavg']:.2f}  where {c['ran_in_worker_vs_child']}")  # fmt: skip
            report.append("| workload | " + " | ".join(f"{s} jobs/s (p95 s)" for s in strategies) + " |")
            report.append("|---|" + "---|" * len(strategies))
            for w in names:
                row = [w]
                for s in strategies:
                    cs = [c for c in cells if c["workload"] == w and c["strategy"] == s and c["replicas"] == 1]
                    row.append(f"{fmt_rate([c['jobs_per_s'] for c in cs])} ({med([c['p95_s'] for c in cs]):.2f})")
                report.append("| " + " | ".join(row) + " |")
        if args.part in ("replicas", "both"):
            pairs = [(w, s) for w, _, s in (p.partition(":") for p in args.pairs.split(",") if p)]
            counts = {"cpu": 240, "io": 1200}
            for r in range(repeats):
                for w, s in pairs:
                    for n in (1, 2, 4):
                        wl = WORKLOADS[w]
                        count = 60 if args.quick else counts[w] * (1 if n == 1 else n // 2 + 1)
                        c = run_cell(server, s, wl, count, iterations, n, True, logdir, f"r{r}-rep{n}-{w}-{s}")
                        c["repeat"] = r
                        c["part"] = "replicas"
                        cells.append(c)
                        log(f"[r{r}] {w:4} {s:8} x{n} {c['jobs_per_s']:7.1f} jobs/s  "
                            f"{c['cpu_s_per_job'] * 1000:.1f} ms CPU/job  load {c['loadavg']:.2f}")  # fmt: skip
            ncpu = len(os.sched_getaffinity(0))
            report.append("")
            report.append(
                "| workload | strategy (1 CPU per replica) | CPU ms per job | 1 replica | 2 replicas | 4 replicas "
                f"| planner on {ncpu} shared CPUs (1 / 2 / 4) |"
            )
            report.append("|---|---|---|---|---|---|---|")
            for w, s in pairs:
                one = [c for c in cells if c.get("part") == "replicas" and c["workload"] == w
                       and c["strategy"] == s and c["replicas"] == 1]  # fmt: skip
                cpu_ms = med([c["cpu_s_per_job"] * 1000 for c in one])
                row = [w, s, f"{cpu_ms:.1f}"]
                for n in (1, 2, 4):
                    cs = [c for c in cells if c.get("part") == "replicas" and c["workload"] == w
                          and c["strategy"] == s and c["replicas"] == n]  # fmt: skip
                    row.append(fmt_rate([c["jobs_per_s"] for c in cs]))
                row.append(" / ".join(f"{v:.0f}" for v in planner_prediction(med([c["jobs_per_s"] for c in one]),
                                                                              cpu_ms / 1000, ncpu)))  # fmt: skip
                report.append("| " + " | ".join(row) + " |")
    finally:
        server.stop()
        (args.out / "cells.json").write_text(json.dumps(cells, indent=1, default=str))
    text = "\n".join(report)
    (args.out / "report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
