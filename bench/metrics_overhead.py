"""What the metrics cost: noop throughput with metrics on vs off, and the time of one scrape.

    python -m bench.metrics_overhead                 # 3 runs each of 5,000 noop jobs, 20 scrapes
    python -m bench.metrics_overhead --jobs 20000 --runs 5

1. Throughput: the ``thread`` strategy (``--concurrency auto``) drains N noop jobs in burst mode,
   with ``--metrics-port 0`` (off) and with a metrics port (on), alternating off/on, ``--runs``
   times each. jobs/s = N / (max ``ended_at`` - min ``started_at``), from RQ's own job hashes, so
   worker start-up and shutdown are outside it. Reported: the median per setting and the cost
   (1 - on/off).
   The hook's own cost per job (``Metrics.on_job_end`` called in a loop) is printed too: it
   does not depend on the machine's load the way the end-to-end throughput does.
2. Scrape time: a ``process`` worker with concurrency 2 whose 2 children run cpu jobs; once both
   slots are busy, ``--scrapes`` GETs of /metrics (urllib, a new connection each); the median
   and max wall time, plus the worker's own ``poolq_metrics_sample_duration_seconds`` (the cost
   of one background process-tree sample, which scrapes do not pay).

Everything runs against a private ``redis-server`` on a free loopback port. The machine may be
shared: the load average at each run's start is printed; repeat when it is high.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import redis
from rq import Queue
from rq.serializers import JSONSerializer
from rq.utils import utcparse

from producer.processes import LocalRedis, free_port

REPO = Path(__file__).resolve().parent.parent
QUEUE = "bench-metrics"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """The producer's private redis-server (free loopback port, no persistence), stopped after."""
    server = LocalRedis()
    try:
        yield server.url
    finally:
        server.stop()


def worker_cmd(url: str, strategy: str, metrics_port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "worker",
        "--strategy", strategy,
        "--queues", QUEUE,
        "--redis-url", url,
        "--metrics-port", str(metrics_port),
        "--log-level", "WARNING",
        *extra,
    ]  # fmt: skip


def enqueue(conn: redis.Redis[bytes], func: str, n: int, **kwargs: object) -> Queue:
    q = Queue(QUEUE, connection=conn, serializer=JSONSerializer)
    batch = 1000
    for i in range(0, n, batch):
        q.enqueue_many([Queue.prepare_data(func, kwargs=kwargs, result_ttl=3600) for _ in range(min(batch, n - i))])
    return q


def jobs_per_second(conn: redis.Redis[bytes], job_ids: list[str]) -> float:
    starts: list[float] = []
    ends: list[float] = []
    with conn.pipeline(transaction=False) as p:
        for jid in job_ids:
            p.hmget(f"rq:job:{jid}", "started_at", "ended_at", "status")
        rows = p.execute()
    for started, ended, status in rows:
        if status != b"finished" or not started or not ended:
            raise RuntimeError(f"a job did not finish (status {status!r})")
        starts.append(utcparse(started.decode()).timestamp())
        ends.append(utcparse(ended.decode()).timestamp())
    return len(job_ids) / (max(ends) - min(starts))


def throughput_run(url: str, n: int, metrics: bool) -> float:
    conn = redis.Redis.from_url(url)
    conn.flushall()
    q = enqueue(conn, "worker.jobs.noop", n)
    ids = [j.decode() for j in conn.lrange(q.key, 0, -1)]
    assert len(ids) == n
    port = free_port() if metrics else 0
    proc = subprocess.run(
        [*worker_cmd(url, "thread", port, "--burst")], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker exited {proc.returncode}: {proc.stderr[-2000:]}")
    rate = jobs_per_second(conn, ids)
    conn.close()
    return rate


def scrape_times(url: str, scrapes: int) -> tuple[list[float], float, int]:
    conn = redis.Redis.from_url(url)
    conn.flushall()
    enqueue(conn, "worker.jobs.cpu", 200, ms=200)
    port = free_port()
    proc = subprocess.Popen(
        worker_cmd(url, "process", port, "--concurrency", "2"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while True:  # both children busy
            with contextlib.suppress(OSError):
                body = urllib.request.urlopen(endpoint, timeout=5).read().decode()
                if 'poolq_jobs_in_progress{strategy="process"} 2.0' in body:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the process pool never got busy")
            time.sleep(0.1)
        times = []
        size = 0
        for _ in range(scrapes):
            t0 = time.perf_counter()
            body = urllib.request.urlopen(endpoint, timeout=5).read().decode()
            times.append(time.perf_counter() - t0)
            size = len(body)
            time.sleep(0.05)
        sample = 0.0
        for line in body.splitlines():
            if line.startswith("poolq_metrics_sample_duration_seconds{"):
                sample = float(line.rsplit(" ", 1)[1])
        return times, sample, size
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        conn.close()


def hook_cost(calls: int = 200_000) -> float:
    """Seconds per ``Metrics.on_job_end`` call (counter + 3 histograms), in this process."""
    from rq.job import Job

    from worker.events import JobEnded
    from worker.metrics import Metrics

    m = Metrics("thread", 16, 2, [QUEUE])
    job = Job.create("worker.jobs.noop", connection=redis.Redis(), serializer=JSONSerializer)
    end = m.on_job_end
    event = JobEnded(job, QUEUE, "finished", 0.001, 0.01, 0.011, "thread")
    end(None, event)
    t0 = time.perf_counter()
    for _ in range(calls):
        end(None, event)
    return (time.perf_counter() - t0) / calls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=5000, help="noop jobs per throughput run (default 5000)")
    ap.add_argument("--runs", type=int, default=3, help="throughput runs per setting (default 3)")
    ap.add_argument("--scrapes", type=int, default=20, help="scrapes of a busy process pool (default 20)")
    args = ap.parse_args(argv)

    per_call = hook_cost()
    with redis_server() as url:
        rates: dict[bool, list[float]] = {False: [], True: []}
        for i in range(args.runs):
            for metrics in (False, True):
                load = os.getloadavg()[0]
                rate = throughput_run(url, args.jobs, metrics)
                rates[metrics].append(rate)
                print(
                    f"run {i + 1} metrics {'on ' if metrics else 'off'}: {rate:8.0f} jobs/s (load {load:.2f})",
                    file=sys.stderr,
                )
        off, on = statistics.median(rates[False]), statistics.median(rates[True])
        times, sample, size = scrape_times(url, args.scrapes)

    print(f"noop throughput, thread strategy, {args.jobs} jobs, median of {args.runs}:")
    print(f"  metrics off: {off:8.0f} jobs/s  (runs: {', '.join(f'{r:.0f}' for r in rates[False])})")
    print(f"  metrics on:  {on:8.0f} jobs/s  (runs: {', '.join(f'{r:.0f}' for r in rates[True])})")
    print(f"  cost: {100 * (1 - on / off):+.1f}%")
    print(f"  on_job_end hook alone: {1e6 * per_call:.2f} us per job (in-process, one thread)")
    print(f"/metrics scrape, process pool of 2 busy with cpu jobs, {len(times)} scrapes ({size} bytes):")
    print(f"  median {1000 * statistics.median(times):.2f} ms, max {1000 * max(times):.2f} ms")
    print(f"  background tree sample (not paid by scrapes): {1000 * sample:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
