"""Metrics: the live exposition, a real Prometheus running the documented PromQL, the process tree.

Real processes only: ``python -m worker`` subprocesses with their /metrics port, the session's
``redis-server``, the ``prometheus`` and ``promtool`` binaries. Waits poll with bounded
timeouts; nothing asserts how fast anything is.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from support import metrics as mh
from support.base import free_port, wait_for
from support.rq_jobs import finished_records, json_queue
from support.workers import WorkerProcess, run_worker, start_worker, stop

MiB = 1024 * 1024
STRATEGIES = ("thread", "process", "inline")
FORBIDDEN_LABELS = {"worker", "worker_name", "name", "job", "job_id", "id", "pid", "hostname"}


def start_metrics_worker(
    url: str,
    strategy: str,
    queue: str,
    port: int,
    concurrency: int,
    extra: tuple[str, ...] = (),
    sample_interval: float = 0.25,
) -> WorkerProcess:
    """A long-running worker with /metrics on ``port``, answered once its first sample is in."""
    proc = start_worker(
        url,
        strategy=strategy,
        concurrency=concurrency,
        queues=queue,
        extra_args=("--metrics-port", str(port), *extra),
        env={"WORKER_METRICS_SAMPLE_INTERVAL_SECONDS": str(sample_interval)},
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.describe()}")
        samples = mh.scrape(port)
        return samples is not None and bool(mh.select(samples, "poolq_worker_tree_processes"))

    wait_for(ready, 30, 0.1, what=f"{strategy} worker /metrics on port {port}")
    return proc


def stop_ok(proc: WorkerProcess) -> None:
    code = stop(proc, timeout=60)
    assert code == 0, proc.describe()


def poll_scrape(port: int, predicate: Callable[[mh.Samples], bool], timeout: float, what: str) -> mh.Samples:
    last: list[mh.Samples] = []

    def check() -> bool:
        s = mh.scrape(port)
        if s is None:
            return False
        last[:] = [s]
        return predicate(s)

    wait_for(check, timeout, 0.1, what=what)
    return last[0]


# ------------------------------------------------------------------------------------------------
# 1. the live exposition passes promtool


def test_live_exposition_passes_promtool(redis: redis_lib.Redis, redis_url: str) -> None:
    port = free_port()
    proc = start_metrics_worker(redis_url, "thread", "lint", port, concurrency=2)
    q = json_queue(redis, "lint")
    for _ in range(3):
        q.enqueue("worker.jobs.noop")
    q.enqueue("worker.jobs.cpu", ms=5)
    q.enqueue("worker.jobs.io", seconds=0.01)
    q.enqueue("worker.jobs.fail")
    q.enqueue("os.getcwd")  # not allowlisted: rejected, and labelled function="other"

    samples = poll_scrape(port, lambda s: mh.total(s, "poolq_jobs_ended_total") >= 7, 30, "7 jobs ended in /metrics")
    text = mh.fetch_metrics(port)
    assert text is not None
    lint = subprocess.run([mh.PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, f"promtool check metrics failed:\n{lint.stdout}\n{lint.stderr}\n---\n{text}"

    samples = mh.parse(text)
    for (name, labels), _ in samples.items():
        keys = dict(labels)
        assert name.startswith("poolq_"), name
        assert keys.get("strategy") == "thread", (name, keys)
        assert not FORBIDDEN_LABELS & set(keys), (name, keys)
    ended = mh.select(samples, "poolq_jobs_ended_total")
    by = {(dict(lab)["function"], dict(lab)["status"]): v for lab, v in ended.items()}
    assert by[("worker.jobs.noop", "finished")] == 3, by
    assert by[("worker.jobs.fail", "failed")] == 1, by
    assert by[("other", "rejected")] == 1, by
    assert not any(f == "os.getcwd" for f, _ in by), by
    info = mh.select(samples, "poolq_worker_info")
    assert len(info) == 1
    info_labels = dict(next(iter(info)))
    assert {"strategy", "concurrency", "available_cpus", "version", "python"} == set(info_labels), info_labels
    assert info_labels["concurrency"] == "2"
    assert mh.total(samples, "poolq_pool_size") == 2
    assert mh.total(samples, "poolq_available_cpus") >= 1
    events = {dict(lab)["event"] for lab in mh.select(samples, "poolq_worker_events_total")}
    assert {"route_changed", "left_to_recovery", "malformed_job", "redis_error"} <= events, events  # 0 from the start
    assert mh.total(samples, "poolq_job_run_seconds_count", function="worker.jobs.noop") == 3
    assert mh.total(samples, "poolq_job_wait_seconds_count", function="worker.jobs.noop") == 3
    assert mh.total(samples, "poolq_job_total_seconds_count", function="worker.jobs.noop") == 3
    # Queue sizes come from the sampler (Redis), not from the scrape: wait for one that saw them.
    samples = poll_scrape(
        port,
        lambda s: mh.total(s, "poolq_queue_jobs", queue="lint", state="finished") == 5,
        30,
        "the sampler to see 5 finished jobs in the registry",
    )
    assert mh.total(samples, "poolq_queue_jobs", queue="lint", state="failed") == 2  # fail + rejected
    stop_ok(proc)


def test_metrics_port_in_use_fails_at_start(redis: redis_lib.Redis, redis_url: str) -> None:
    port = free_port()
    first = start_metrics_worker(redis_url, "inline", "busy-port", port, concurrency=1)
    run = run_worker(redis_url, "inline", 1, "busy-port", extra_args=("--metrics-port", str(port)), timeout=30)
    assert run.returncode == 1, run.describe()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in run.stderr, run.describe()
    stop_ok(first)


# ------------------------------------------------------------------------------------------------
# 2. a real Prometheus runs every query of docs/metrics.md


class Feeder:
    """Keeps each queue stocked with a mix of jobs, so every worker stays busy while Prometheus scrapes."""

    MIX: tuple[tuple[str, dict[str, Any]], ...] = (
        ("worker.jobs.io", {"seconds": 0.05}),
        ("worker.jobs.cpu", {"ms": 5}),
        ("worker.jobs.noop", {}),
        ("worker.jobs.fail", {}),
    )

    def __init__(self, url: str, queues: tuple[str, ...], low_water: int = 12) -> None:
        self.conn = redis_lib.Redis.from_url(url)
        self.queues = [json_queue(self.conn, q) for q in queues]
        self.low_water = low_water
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, name="feeder", daemon=True)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for q in self.queues:
                    while q.count < self.low_water:
                        for func, kwargs in self.MIX:
                            q.enqueue(func, kwargs=kwargs, result_ttl=60)
                self.stop.wait(0.2)
        except BaseException as e:  # reported by the test
            self.error = e

    def __enter__(self) -> Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.conn.close()


@pytest.fixture
def strategy_workers(redis: redis_lib.Redis, redis_url: str) -> Iterator[dict[str, tuple[WorkerProcess, int]]]:
    """A worker of each strategy on a queue named after it, plus a second thread replica on the
    same queue as the first (for the no-double-counting check); each with its own metrics port."""
    specs = {
        "thread": ("thread", "thread", 4),
        "thread-replica": ("thread", "thread", 2),
        "process": ("process", "process", 2),
        "inline": ("inline", "inline", 1),
    }
    workers: dict[str, tuple[WorkerProcess, int]] = {}
    for key, (strategy, queue, concurrency) in specs.items():
        port = free_port()
        workers[key] = (start_metrics_worker(redis_url, strategy, queue, port, concurrency), port)
    yield workers
    # conftest's autouse fixture kills whatever the test did not stop


@pytest.mark.timeout(240)
def test_documented_promql_against_real_prometheus(
    redis: redis_lib.Redis,
    redis_url: str,
    strategy_workers: dict[str, tuple[WorkerProcess, int]],
    tmp_path: Path,
) -> None:
    queries = mh.documented_queries()
    assert len(queries) >= 10, "docs/metrics.md lost its PromQL blocks"
    for q in queries:
        assert q.labels, f"docs/metrics.md line {q.line}: promql block without labels=: {q.promql}"
    # Jobs scheduled far ahead stay in the scheduled registry: a stable figure both thread replicas export.
    sched = json_queue(redis, "thread")
    for _ in range(5):
        sched.enqueue_in(timedelta(hours=1), "worker.jobs.noop")

    targets = [f"127.0.0.1:{port}" for _, port in strategy_workers.values()]
    expect = {"strategy": set(STRATEGIES), "queue": set(STRATEGIES)}
    with mh.prometheus(tmp_path, targets) as prom, Feeder(redis_url, STRATEGIES) as feeder:
        wait_for(
            lambda: len(prom.targets_up()) == len(targets) and set(prom.targets_up().values()) == {"up"},
            60,
            0.5,
            what="prometheus to scrape every worker",
        )
        problems: dict[int, str | None] = {}

        def all_queries_answer() -> bool:
            for q in queries:
                problems[q.line] = mh.check_result(q, prom.query(q.promql), expect)
            return not any(problems.values())

        try:
            wait_for(all_queries_answer, 120, 1.0, what="every documented query to return its series")
        except AssertionError:
            detail = "\n".join(
                f"docs/metrics.md:{q.line}: {problems.get(q.line)}\n    {q.promql}"
                for q in queries
                if problems.get(q.line)
            )
            logs = "\n".join(p.describe()[-1500:] for p, _ in strategy_workers.values() if p.poll() is not None)
            raise AssertionError(f"documented PromQL did not return what the doc says:\n{detail}\n{logs}") from None
        assert feeder.error is None, feeder.error

        # No double counting: two replicas export the same scheduled figure; the documented max keeps it.
        replicas = prom.query('count by (queue, state) (poolq_queue_jobs{queue="thread", state="scheduled"})')
        assert [float(r["value"][1]) for r in replicas] == [2.0], replicas
        exact = prom.query('max by (queue, state) (poolq_queue_jobs{queue="thread", state="scheduled"})')
        assert [float(r["value"][1]) for r in exact] == [5.0], exact

        # Every series Prometheus holds from the workers carries a strategy label.
        unlabelled = prom.query('count by (__name__) ({job="poolq-worker", __name__=~"poolq_.*", strategy=""})')
        assert unlabelled == [], unlabelled

    for proc, _ in strategy_workers.values():
        stop_ok(proc)


# ------------------------------------------------------------------------------------------------
# 3. pool children are counted in the tree's memory and process count


def test_tree_memory_counts_pool_children(redis: redis_lib.Redis, redis_url: str) -> None:
    port = free_port()
    proc = start_metrics_worker(redis_url, "process", "alloc", port, concurrency=2, sample_interval=0.2)

    def pss(s: mh.Samples, role: str | None = None) -> float:
        labels = {"kind": "pss"} if role is None else {"kind": "pss", "role": role}
        return mh.total(s, "poolq_worker_tree_memory_bytes", **labels)

    def procs(s: mh.Samples, role: str) -> float:
        return mh.total(s, "poolq_worker_tree_processes", role=role)

    idle = poll_scrape(port, lambda s: procs(s, "pool") == 2, 30, "two pool children in the tree")
    assert procs(idle, "main") == 1, idle
    # Baseline: the highest idle figure over a second (children may still be settling).
    baseline_total, baseline_pool = pss(idle), pss(idle, "pool")
    for _ in range(5):
        time.sleep(0.2)
        s = mh.scrape(port)
        assert s is not None
        baseline_total, baseline_pool = max(baseline_total, pss(s)), max(baseline_pool, pss(s, "pool"))

    q = json_queue(redis, "alloc")
    jobs = [q.enqueue("worker.jobs.alloc", mb=64, seconds=4) for _ in range(2)]
    peak = poll_scrape(
        port,
        lambda s: pss(s) >= baseline_total + 100 * MiB and pss(s, "pool") >= baseline_pool + 100 * MiB,
        30,
        f"tree PSS to rise by 100 MiB over {baseline_total / MiB:.0f} MiB while 2 children hold 64 MiB each",
    )
    assert mh.total(peak, "poolq_jobs_in_progress") >= 1, "the peak was seen after the jobs ended"
    assert procs(peak, "main") + procs(peak, "pool") == 3, peak  # the worker and its 2 children
    assert procs(peak, "helper") in (1, 2), peak  # the forkserver (and multiprocessing's resource tracker)
    peak_pss = pss(peak)

    poll_scrape(
        port,
        lambda s: mh.total(s, "poolq_jobs_ended_total", status="finished") == 2,
        30,
        "both alloc jobs to finish",
    )
    after = poll_scrape(
        port,
        lambda s: pss(s) <= peak_pss - 100 * MiB,
        30,
        f"tree PSS to fall by 100 MiB from {peak_pss / MiB:.0f} MiB once the jobs released their memory",
    )
    assert procs(after, "main") + procs(after, "pool") == 3, after
    finished_records(redis, jobs)
    stop_ok(proc)


# ------------------------------------------------------------------------------------------------
# 4. counters never go down while pool children are recycled


def test_counters_monotonic_across_child_recycling(redis: redis_lib.Redis, redis_url: str) -> None:
    port = free_port()
    proc = start_metrics_worker(
        redis_url, "process", "recycle", port, concurrency=2, extra=("--max-jobs-per-child", "1"), sample_interval=0.2
    )
    q = json_queue(redis, "recycle")
    jobs = [q.enqueue("worker.jobs.cpu", ms=300) for _ in range(20)]

    history: list[mh.Samples] = []

    def counters(s: mh.Samples) -> mh.Samples:
        return {
            k: v
            for k, v in s.items()
            if k[0]
            in ("poolq_worker_tree_cpu_seconds_total", "poolq_jobs_ended_total", "poolq_pool_children_replaced_total")
        }

    def done() -> bool:
        s = mh.scrape(port)
        if s is None:
            return False
        history.append(counters(s))
        return mh.total(s, "poolq_jobs_ended_total", status="finished") == 20

    wait_for(done, 90, 0.1, what="20 cpu jobs to finish")
    for _ in range(5):  # a few more samples after the last child was replaced
        time.sleep(0.25)
        s = mh.scrape(port)
        assert s is not None
        history.append(counters(s))

    assert len(history) >= 10, len(history)
    for prev, cur in itertools.pairwise(history):
        for key, value in prev.items():
            assert key in cur, f"series {key} disappeared"
            assert cur[key] >= value, f"{key[0]}{dict(key[1])} went down: {value} -> {cur[key]}"
    final = history[-1]
    assert mh.total(final, "poolq_pool_children_replaced_total", reason="max_jobs") == 20, final
    # 20 jobs x ~0.3 s of CPU ran in children that no longer exist: their CPU is still counted.
    cpu = mh.total(final, "poolq_worker_tree_cpu_seconds_total")
    assert cpu >= 0.7 * 20 * 0.3, f"tree CPU {cpu:.2f} s misses the recycled children's CPU"
    finished_records(redis, jobs)
    stop_ok(proc)
