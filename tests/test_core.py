"""Worker core (issue 2): real ``python -m worker`` processes, real redis-server, stock RQ.

Jobs are enqueued and read back only through RQ's public API (``Queue.enqueue``,
``Job.fetch``, ``FailedJobRegistry``, ``Worker``), so these tests also prove that stock
tooling reads a poolq worker like any other RQ worker. Concurrency is proved from the jobs'
own start/end records, never from wall-clock durations.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import Any

import pytest
from redis import Redis
from rq import Retry, Worker
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.results import Result
from support.base import RQ_CLI, wait_for
from support.rq_jobs import enqueue_many, fetch, finished_records, json_queue, overlap
from support.workers import (
    assert_ok,
    descendants,
    group_members,
    run_worker,
    start_worker,
    stop,
    wait_registered,
    worker_hash,
)

STRATEGIES = ["thread", "process", "inline", "hybrid", "auto"]
# hybrid: one child running the jobs on its threads (with 2 CPUs and concurrency 2 it would
# otherwise be 2 children x 1 thread: the process strategy again).
POOL_ARGS: dict[str, tuple[str, ...]] = {"hybrid": ("--processes", "1")}
ALLOW_TESTS = ("--allowed-functions", "worker.jobs.*,tests.jobs.*")
# Slack for comparing RQ's microsecond timestamps with the jobs' own time.time() records.
EPS = 1e-3


def _failure_text(conn: Redis, job_id: str) -> str:
    res = fetch(conn, job_id).latest_result()
    assert res is not None, f"job {job_id} has no result"
    return res.exc_string or ""


# ------------------------------------------------------------------------------ running jobs


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_stock_rq_jobs_run_and_read_back(redis: Redis, redis_url: str, strategy: str) -> None:
    """Every built-in workload, enqueued with stock RQ (JSON), finishes and reads back with stock RQ."""
    q = json_queue(redis)
    specs: list[tuple[str, dict[str, Any]]] = [
        ("worker.jobs.noop", {}),
        ("worker.jobs.cpu", {"ms": 20}),
        ("worker.jobs.cpu", {"iterations": 1000}),
        ("worker.jobs.io", {"seconds": 0.05}),
        ("worker.jobs.io", {"seconds": 0.05, "mode": "socket"}),
        ("worker.jobs.mixed", {"cpu_ms": 5, "io_seconds": 0.01}),
        ("worker.jobs.alloc", {"mb": 4, "seconds": 0.01}),
    ]
    jobs = [q.enqueue(func, **kwargs) for func, kwargs in specs]
    assert all(j.get_status() == "queued" for j in jobs)

    run = assert_ok(run_worker(redis_url, strategy, 2, extra_args=POOL_ARGS.get(strategy, ())))

    records = finished_records(redis, jobs, run.describe())
    for job, value in zip(jobs, records, strict=True):
        j = fetch(redis, job.id)
        latest = j.latest_result()
        assert latest is not None
        assert latest.type == Result.Type.SUCCESSFUL
        assert latest.return_value == value
        assert j.worker_name == run.name
        assert j.enqueued_at is not None and j.started_at is not None and j.ended_at is not None
        assert j.enqueued_at <= j.started_at <= j.ended_at
        if "started" in value:  # the job ran between the lifecycle's own timestamps
            assert j.started_at.timestamp() - EPS <= value["started"] <= value["ended"]
            assert value["ended"] <= j.ended_at.timestamp() + EPS
    # the arguments reached the functions
    assert records[2]["iterations"] == 1000
    assert records[4]["mode"] == "socket"
    assert records[6]["bytes"] == 4 * 1024 * 1024

    assert q.count == 0
    assert q.started_job_registry.count == 0
    assert FailedJobRegistry(queue=q).get_job_ids() == []
    assert set(q.finished_job_registry.get_job_ids()) == {j.id for j in jobs}
    # a burst worker leaves no process behind (pool children, forkserver)
    wait_for(lambda: not group_members(run.pid), 15, what=f"processes of worker {run.pid} to exit")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_raising_job_lands_in_failed_registry_with_traceback(redis: Redis, redis_url: str, strategy: str) -> None:
    message = f"boom-{uuid.uuid4().hex}"
    q = json_queue(redis)
    bad = q.enqueue("worker.jobs.fail", message=message)
    good = q.enqueue("worker.jobs.noop")

    run = assert_ok(run_worker(redis_url, strategy, 2, extra_args=POOL_ARGS.get(strategy, ())))

    j = fetch(redis, bad.id)
    assert j.get_status() == "failed", run.describe()
    assert bad.id in FailedJobRegistry(queue=q).get_job_ids()
    latest = j.latest_result()
    assert latest is not None and latest.type == Result.Type.FAILED
    text = latest.exc_string or ""
    assert "RuntimeError" in text and message in text, text
    assert "in fail" in text, f"the job's own frame is missing from the traceback:\n{text}"
    assert j.started_at is not None and j.ended_at is not None
    assert j.worker_name == run.name
    # the failure did not stop the worker
    assert fetch(redis, good.id).get_status() == "finished", run.describe()
    assert q.started_job_registry.count == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_retry_reruns_a_failing_job(redis: Redis, redis_url: str, strategy: str) -> None:
    """``Retry(max=2)``: three executions in all (counted by the job itself), then failed."""
    q = json_queue(redis)
    key = f"test:executions:{uuid.uuid4().hex}"
    counted = q.enqueue("tests.jobs.count_and_fail", redis_url, key, "counted", retry=Retry(max=2))
    builtin = q.enqueue("worker.jobs.fail", message="retried builtin", retry=Retry(max=2))

    run = assert_ok(run_worker(redis_url, strategy, 2, extra_args=(*ALLOW_TESTS, *POOL_ARGS.get(strategy, ()))))

    assert redis.get(key) == b"3", run.describe()
    failed = FailedJobRegistry(queue=q).get_job_ids()
    for job, message in ((counted, "counted"), (builtin, "retried builtin")):
        j = fetch(redis, job.id)
        assert j.get_status() == "failed"
        assert j.retries_left == 0
        assert job.id in failed
        assert message in _failure_text(redis, job.id)
    # every execution counted as a failure on the worker: 2 jobs x 3 runs
    assert worker_hash(redis, run.name)["failed_job_count"] == "6"


def test_retry_interval_schedules_the_rerun(redis: Redis, redis_url: str) -> None:
    """``Retry(max=1, interval=2)``: after the first failure the job waits in the scheduled
    registry, then the worker's scheduler re-queues it and it runs a second time."""
    q = json_queue(redis)
    key = f"test:executions:{uuid.uuid4().hex}"
    job = q.enqueue("tests.jobs.count_and_fail", redis_url, key, retry=Retry(max=1, interval=2))
    proc = start_worker(redis_url, "thread", 2, extra_args=ALLOW_TESTS)
    wait_registered(redis, proc)

    wait_for(
        lambda: redis.get(key) == b"1" and job.id in q.scheduled_job_registry.get_job_ids(),
        20,
        what="the first failure to schedule a retry",
    )
    assert fetch(redis, job.id).get_status() == "scheduled"
    wait_for(lambda: fetch(redis, job.id).get_status() == "failed", 30, what="the retry to run and fail")
    assert redis.get(key) == b"2"
    assert fetch(redis, job.id).retries_left == 0
    assert stop(proc) == 0, proc.describe()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_dependent_runs_after_its_parent(redis: Redis, redis_url: str, strategy: str) -> None:
    q = json_queue(redis)
    parent = q.enqueue("worker.jobs.io", seconds=0.3)
    child = q.enqueue("worker.jobs.cpu", ms=5, depends_on=parent)
    bad_parent = q.enqueue("worker.jobs.fail")
    orphan = q.enqueue("worker.jobs.noop", depends_on=bad_parent)
    assert child.get_status() == "deferred"

    run = assert_ok(run_worker(redis_url, strategy, 4, extra_args=POOL_ARGS.get(strategy, ())))

    p, c = finished_records(redis, [parent, child], run.describe())
    assert c["started"] >= p["ended"], (p, c)
    pj, cj = fetch(redis, parent.id), fetch(redis, child.id)
    assert pj.ended_at is not None and cj.started_at is not None
    assert cj.started_at >= pj.ended_at
    # a dependent of a failed parent is never released (RQ's default)
    assert fetch(redis, bad_parent.id).get_status() == "failed"
    assert fetch(redis, orphan.id).get_status() == "deferred"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_function_outside_the_allowlist_never_runs(redis: Redis, redis_url: str, strategy: str, tmp_path: Any) -> None:
    sentinel = tmp_path / "ran"
    q = json_queue(redis)
    rejected = q.enqueue("tests.jobs.touch_sentinel", str(sentinel))
    getcwd = q.enqueue("os.getcwd")
    after = q.enqueue("worker.jobs.noop")

    run = assert_ok(run_worker(redis_url, strategy, 2, extra_args=POOL_ARGS.get(strategy, ())))

    failed = FailedJobRegistry(queue=q).get_job_ids()
    for job, func in ((rejected, "tests.jobs.touch_sentinel"), (getcwd, "os.getcwd")):
        assert fetch(redis, job.id).get_status() == "failed", run.describe()
        assert job.id in failed
        text = _failure_text(redis, job.id)
        assert "not allowed" in text and func in text, text
    assert not sentinel.exists(), "a non-allowlisted function ran"
    assert fetch(redis, after.id).get_status() == "finished"

    # control: the same function, once allowed, does run (so the check above can fail)
    allowed = q.enqueue("tests.jobs.touch_sentinel", str(sentinel))
    run2 = assert_ok(run_worker(redis_url, strategy, 2, extra_args=(*ALLOW_TESTS, *POOL_ARGS.get(strategy, ()))))
    assert fetch(redis, allowed.id).get_status() == "finished", run2.describe()
    assert fetch(redis, allowed.id).return_value() == str(sentinel)
    assert sentinel.exists()


# ------------------------------------------------------------------------------ where jobs run


def test_process_strategy_runs_jobs_in_pool_children(redis: Redis, redis_url: str) -> None:
    jobs = enqueue_many(redis, "worker.jobs.io", 6, seconds=0.3)
    proc = start_worker(redis_url, "process", 2)
    wait_registered(redis, proc)
    wait_for(
        lambda: all(fetch(redis, j.id).get_status() in ("finished", "failed") for j in jobs),
        60,
        what="the jobs to end",
    )
    records = finished_records(redis, jobs, proc.describe())
    pids = {r["pid"] for r in records}
    children = descendants(proc.pid)

    assert proc.pid not in pids
    assert len(pids) == 2, pids
    assert pids <= children, f"job pids {pids} are not children of worker {proc.pid} ({children})"
    assert overlap(records) == 2

    assert stop(proc) == 0, proc.describe()
    wait_for(lambda: not group_members(proc.pid), 15, what="pool children to exit with the worker")


def test_thread_strategy_runs_jobs_in_worker_pid_on_several_threads(redis: Redis, redis_url: str) -> None:
    jobs = enqueue_many(redis, "worker.jobs.io", 8, seconds=0.2)
    run = assert_ok(run_worker(redis_url, "thread", 4))
    records = finished_records(redis, jobs, run.describe())
    assert {r["pid"] for r in records} == {run.pid}
    assert len({r["thread"] for r in records}) > 1


def test_inline_strategy_runs_one_job_at_a_time_in_worker_pid(redis: Redis, redis_url: str) -> None:
    jobs = enqueue_many(redis, "worker.jobs.io", 4, seconds=0.1)
    run = assert_ok(run_worker(redis_url, "inline", "auto"))
    records = finished_records(redis, jobs, run.describe())
    assert {r["pid"] for r in records} == {run.pid}
    assert overlap(records) == 1
    assert len({r["thread"] for r in records}) == 1


@pytest.mark.parametrize(
    ("strategy", "n", "c"),
    [("thread", 12, 4), ("process", 12, 4), ("thread", 3, 4), ("hybrid", 12, 4), ("auto", 12, 4)],
)
def test_concurrency_is_bounded_and_used(redis: Redis, redis_url: str, strategy: str, n: int, c: int) -> None:
    """N io jobs, concurrency C: never more than C at once, and min(N, C) did run at once.

    hybrid: C = 2 children x 2 threads. auto: C = 2 children + 2 threads, the two sub-pools of one
    worker; the jobs are hinted half CPU-bound, half I/O-bound so that both are full at once (an
    unhinted function runs in one sub-pool, or spills into the other only when that one is full).
    """
    extra: tuple[str, ...] = ("--processes", "2") if strategy in ("hybrid", "auto") else ()
    if strategy == "auto":
        q = json_queue(redis)
        jobs = [q.enqueue("worker.jobs.io", seconds=0.3, meta={"poolq_hint": ("cpu", "io")[i % 2]}) for i in range(n)]
    else:
        jobs = enqueue_many(redis, "worker.jobs.io", n, seconds=0.3)
    run = assert_ok(run_worker(redis_url, strategy, c, extra_args=extra))
    records = finished_records(redis, jobs, run.describe())
    most = overlap(records)
    assert most <= c
    assert most == min(n, c)
    if strategy == "auto":  # both sub-pools ran jobs: children and the worker's own threads
        assert {r["pid"] == run.pid for r in records} == {True, False}, records


# ------------------------------------------------------------------------------ worker identity


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_worker_hash_counts_jobs_and_registers_death(redis: Redis, redis_url: str, strategy: str) -> None:
    q = json_queue(redis)
    for _ in range(3):
        q.enqueue("worker.jobs.noop")
    for _ in range(2):
        q.enqueue("worker.jobs.cpu", ms=10)
    for _ in range(2):
        q.enqueue("worker.jobs.fail")

    run = assert_ok(run_worker(redis_url, strategy, 2, extra_args=POOL_ARGS.get(strategy, ())))

    h = worker_hash(redis, run.name)
    assert h.get("successful_job_count") == "5", h
    assert h.get("failed_job_count") == "2", h
    assert float(h.get("total_working_time", "0")) > 0, h
    assert h.get("pid") == str(run.pid)
    assert "birth" in h and "death" in h, h
    assert not redis.sismember("rq:workers", f"rq:worker:{run.name}")


def _worker_with_executions(conn: Redis, name: str, n: int) -> Worker | None:
    w = Worker.find_by_key(f"rq:worker:{name}", connection=conn)
    if w is not None and w.current_execution_count == n:
        return w
    return None


def test_rq_info_lists_one_worker_busy_with_many_executions(redis: Redis, redis_url: str) -> None:
    q = json_queue(redis)
    jobs = enqueue_many(redis, "worker.jobs.io", 5, seconds=2.0)
    proc = start_worker(redis_url, "thread", 3)
    wait_registered(redis, proc)
    w = wait_for(lambda: _worker_with_executions(redis, proc.name, 3), 30, what="3 executions")

    # one identity, many executions (RQ 3's rq:worker:<name>:executions)
    assert [x.name for x in Worker.all(connection=redis)] == [proc.name]
    assert w.pid == proc.pid
    running = {e.job_id for e in w.get_current_executions(refresh=True)}
    assert len(running) == 3 and running <= {j.id for j in jobs}
    # no prefetch: what is not running is still in the queue
    assert q.count == 2
    assert q.started_job_registry.count == 3

    info = subprocess.run([RQ_CLI, "info", "--url", redis_url], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    lines = [line for line in info.stdout.splitlines() if proc.name in line]
    assert lines, info.stdout
    assert "busy" in lines[0], info.stdout
    assert "1 workers" in info.stdout

    assert stop(proc) == 0, proc.describe()
    # warm stop: running jobs finished, nothing left half-done
    statuses = [fetch(redis, j.id).get_status() for j in jobs]
    assert set(statuses) <= {"finished", "queued"}, statuses
    assert statuses.count("finished") >= 3
    assert q.started_job_registry.count == 0
    assert not redis.sismember("rq:workers", f"rq:worker:{proc.name}")


# ------------------------------------------------------------------------------ TTLs


def test_result_ttl_is_honoured(redis: Redis, redis_url: str) -> None:
    q = json_queue(redis)
    short = q.enqueue("worker.jobs.noop", result_ttl=1)
    kept = q.enqueue("worker.jobs.noop")
    assert_ok(run_worker(redis_url, "thread", 2))
    time.sleep(2.5)  # past the 1 s result_ttl: not a measurement, just waiting for Redis to expire it
    assert not Job.exists(short.id, connection=redis)
    assert redis.exists(Result.get_key(short.id)) == 0
    k = fetch(redis, kept.id)
    assert k.get_status() == "finished"
    assert k.return_value() is not None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_result_ttl_zero_keeps_nothing(redis: Redis, redis_url: str, strategy: str) -> None:
    q = json_queue(redis)
    gone = q.enqueue("worker.jobs.noop", result_ttl=0)
    kept = q.enqueue("worker.jobs.noop")
    run = assert_ok(run_worker(redis_url, strategy, 2, extra_args=POOL_ARGS.get(strategy, ())))
    assert fetch(redis, kept.id).get_status() == "finished", run.describe()
    assert not Job.exists(gone.id, connection=redis), redis.hgetall(gone.key)
    assert gone.id not in q.finished_job_registry.get_job_ids()


def test_failure_ttl_sets_the_failed_registry_expiry(redis: Redis, redis_url: str) -> None:
    q = json_queue(redis)
    short = q.enqueue("worker.jobs.fail", failure_ttl=300)
    default = q.enqueue("worker.jobs.fail")
    before = time.time()
    assert_ok(run_worker(redis_url, "thread", 2))
    after = time.time()
    registry = FailedJobRegistry(queue=q)
    score = redis.zscore(registry.key, short.id)
    assert score is not None
    assert int(before) + 300 <= score <= after + 300 + 1
    default_score = redis.zscore(registry.key, default.id)
    assert default_score is not None and default_score >= int(before) + DEFAULT_FAILURE_TTL
    assert 0 < redis.ttl(short.key) <= 300
