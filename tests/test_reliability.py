"""Reliability (issue 3): hard timeouts, crash isolation, at-least-once recovery after kill -9,
graceful drain, Redis outages, poison input, injection, the child memory guard.

Everything here is real: conftest's session ``redis-server`` (and, for the outage test, one this
test starts with AOF on, SIGKILLs and restarts), worker subprocesses ``python -m worker`` in their
own process groups, real signals, real SIGKILLs, real crashing children. Jobs are stock RQ jobs
enqueued with the JSON serializer and read back with stock RQ (the job hash, ``Result``,
``FailedJobRegistry``, ``StartedJobRegistry``); ``tests.jobs.record`` counts executions in a
file, outside Redis. Workers run with ``--allowed-functions 'worker.jobs.*,tests.jobs.*'``.

Time appears only as the bounds the issue states (killed within timeout + 5 s, recovered within
30 s, drained within timeout + 2 s, resumed within 5 s of Redis returning), each measured from
the timestamps the worker itself recorded (the job's ``started_at``, its result's ``created_at``)
or around the signal the test sent, and each checked with a generous polling deadline.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import signal
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import psutil
import pytest
from redis import Redis
from rq import Callback, Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from support.base import free_port, wait_for
from support.metrics import metric
from support.redis_server import RedisServer
from support.rq_jobs import executions, outcome, overlap, status, wait_ended
from support.workers import (
    ALLOW_ARGS,
    WorkerProcess,
    descendants,
    group_members,
    kill9_group,
    kill_group,
    log_lines,
    new_name,
    pid_gone,
    run_worker,
    settings_env,
    start_worker,
    stop,
    wait_registered,
)

pytestmark = pytest.mark.timeout(90)

ALLOW = ALLOW_ARGS
# Fast failure detection for the tests that kill workers on purpose (not the defaults test).
FAST_RECOVERY = settings_env(worker_ttl_seconds=3, heartbeat_interval_seconds=1, recovery_interval_seconds=0.5)


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def server(redis_url: str, redis_server: Any) -> Any:
    """conftest's session ``redis-server`` (``.url``, ``.client()``), running."""
    return redis_server


@pytest.fixture
def conn(redis: Redis[bytes]) -> Redis[bytes]:
    """conftest's client of that server, flushed before and after the test (worker processes
    started through ``support.workers`` are killed before the final flush)."""
    return redis


@pytest.fixture
def runs(tmp_path: Path) -> str:
    """The file ``tests.jobs.record`` appends one line to per execution."""
    return str(tmp_path / "executions.log")


def queue(conn: Redis[bytes], name: str = "default") -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


def start(
    server: Any,
    strategy: str,
    concurrency: int,
    env: dict[str, str] | None = None,
    conn: Redis[bytes] | None = None,
    extra: tuple[str, ...] = (),
) -> WorkerProcess:
    proc = start_worker(server.url, strategy, concurrency, extra_args=(*ALLOW, *extra), env=env)
    if conn is not None:
        wait_registered(conn, proc)
    return proc


def records(conn: Redis[bytes], ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for i in ids:
        o = outcome(conn, i)
        assert o.status == "finished", f"job {i} is {o.status}: {o.exc_string}"
        out.append(o.return_value)
    return out


def hint(kind: str) -> dict[str, str]:
    """``auto``: the job's meta hint (``"cpu"`` -> its process pool, ``"io"`` -> its thread pool).

    The tests that check what one pool guarantees (a hard kill, a soft timeout, a crash, a memory
    cap) say where auto runs the job instead of waiting for it to learn the function.
    """
    return {"poolq_hint": kind}


def assert_pool_width(
    conn: Redis[bytes],
    proc: WorkerProcess,
    width: int,
    seconds: float = 1.5,
    hints: list[str] | None = None,
) -> list:
    """``width`` jobs enqueued together run ``width`` at once: every slot of the pool works.

    ``hints`` (auto): one per job, so that each of its sub-pools is proved full width.
    """
    q = queue(conn)
    metas = [hint(h) for h in hints] if hints else [None] * width
    assert len(metas) == width
    ids = [q.enqueue("worker.jobs.io", seconds=seconds, meta=m).id for m in metas]
    wait_ended(conn, ids, 30, proc, f"{width} jobs to prove the pool width")
    recs = records(conn, ids)
    assert overlap(recs) == width, f"expected {width} jobs at once, records: {recs}\n{proc.describe()}"
    return recs


def child_pid_in(exc: str) -> int | None:
    m = re.search(r"pool child (\d+)", exc)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# hard timeouts


# Where each strategy runs the tests' jobs: concurrency and the extra flags that give every job
# of a test its own place. auto: --processes pins its process pool (else: one child per CPU).
HARD_TIMEOUT_POOLS = {
    # strategy: (concurrency, extra args, hint of the overdue jobs, hint of the job beside them)
    "process": (4, (), None, None),
    "hybrid": (4, ("--processes", "2"), None, None),  # 2 children x 2 threads
    "auto": (4, ("--processes", "3"), "cpu", "io"),  # 3 children + 1 thread
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", ["process", "hybrid", "auto"])
def test_hard_timeout_kills_sleep_busy_loop_and_sigalrm_blocker(
    server: Any, conn: Redis[bytes], tmp_path: Path, runs: str, strategy: str
) -> None:
    """A sleep, a busy loop and a job that blocks SIGALRM, each with job_timeout=2, fail with a
    timeout within timeout + 5 s (measured from the job's own started_at to the failure's
    recorded time); the children running them are killed; afterwards every slot of the pool runs
    jobs in parallel again, in fresh children. A job running beside them:

    - process: in a child of its own, it is unaffected and finishes;
    - hybrid (2 children x 2 threads): four jobs fill both children, so it shares a child with an
      overdue job. That whole child is killed (a thread cannot be), and the job, which did nothing
      wrong, is re-queued, not failed: it runs again in a fresh child and finishes;
    - auto: the overdue jobs are hinted CPU-bound, so they run in its process pool (hard
      timeouts); the job beside them, hinted I/O-bound, runs in its thread pool and is unaffected.
    """
    concurrency, extra, overdue_hint, beside_hint = HARD_TIMEOUT_POOLS[strategy]
    worker = start(server, strategy, concurrency, conn=conn, extra=extra)
    q = queue(conn)
    release = tmp_path / "release"
    meta_over = hint(overdue_hint) if overdue_hint else None
    beside = q.enqueue(
        "tests.jobs.record_until_file",
        runs,
        "beside",
        str(release),
        60,
        job_timeout=90,
        meta=hint(beside_hint) if beside_hint else None,
    )
    wait_for(lambda: status(conn, beside.id) == "started", 20, what="the job beside to start")
    overdue = {
        "sleep": q.enqueue("tests.jobs.sleep_for", 60, job_timeout=2, meta=meta_over),
        "busy_loop": q.enqueue("tests.jobs.busy_loop", 60, job_timeout=2, meta=meta_over),
        "sigalrm_blocked": q.enqueue("tests.jobs.sleep_ignoring_sigalrm", 60, job_timeout=2, meta=meta_over),
    }
    first_start = outcome(conn, beside.id).started_at
    wait_ended(conn, [j.id for j in overdue.values()], 2 + 5 + 20, worker, "the overdue jobs to fail")
    killed = []
    took: dict[str, float] = {}
    for kind, job in overdue.items():
        o = outcome(conn, job.id)
        assert o.status == "failed", f"{kind}: {o}"
        assert "timeout" in o.exc_string.lower(), f"{kind}: {o.exc_string}"
        assert o.run_seconds is not None and o.run_seconds <= 2 + 5, f"{kind} ran {o.run_seconds} s"
        assert job.id in FailedJobRegistry("default", connection=conn).get_job_ids()
        pid = child_pid_in(o.exc_string)
        assert pid is not None, o.exc_string
        killed.append(pid)
        took[kind] = o.run_seconds
    print(f"\n[{strategy}] job_timeout=2: failed after " + ", ".join(f"{k} {v:.2f} s" for k, v in took.items()))
    for pid in killed:
        wait_for(lambda p=pid: pid_gone(p), 10, what=f"killed child {pid} to be gone")

    # the job beside them: still running (hybrid: running again, after a re-queue)
    if strategy == "hybrid":
        texts = " ".join(outcome(conn, j.id).exc_string for j in overdue.values())
        assert re.search(r"\d job\(s\) running beside it re-queued", texts), texts
        wait_for(lambda: executions(runs)["beside"] == 2, 20, what="the job beside to run again")
    else:
        time.sleep(0.5)  # a (wrong) restart of the job beside would be recorded by now
    assert status(conn, beside.id) == "started"
    again = outcome(conn, beside.id).started_at
    pids = [int(line.split()[1]) for line in Path(runs).read_text().splitlines()]
    print(f"[{strategy}] the job beside ran in {pids}; killed children {killed}")
    if strategy == "hybrid":
        assert pids[0] in killed and pids[1] not in killed, (pids, killed, worker.describe())
        assert first_start is not None and again is not None and again > first_start, (first_start, again)
    else:
        assert executions(runs) == {"beside": 1}
        assert again == first_start, "the job beside the overdue ones was restarted"
    release.touch()
    wait_ended(conn, [beside.id], 20, worker)
    (rec,) = records(conn, [beside.id])
    assert rec["pid"] not in killed
    assert FailedJobRegistry("default", connection=conn).count == 3

    # every slot works again, in fresh children
    hints = ["cpu", "cpu", "cpu", "io"] if strategy == "auto" else None
    recs = assert_pool_width(conn, worker, concurrency, hints=hints)
    assert not {r["pid"] for r in recs} & set(killed)
    assert worker.poll() is None


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", ["thread", "auto"])
def test_thread_timeout_fails_job_counts_runaway_and_keeps_pool_size(
    server: Any, conn: Redis[bytes], tmp_path: Path, strategy: str
) -> None:
    """A job running in a thread (the thread strategy; auto's thread pool, where auto sends
    I/O-bound functions: here the jobs are hinted so) gets a soft timeout: it is failed at its
    timeout (the thread cannot be killed); the runaway thread is counted (log, metric), a job
    beside it finishes, the thread pool keeps its size (3 jobs still overlap 3-wide while the
    runaway thread still sleeps), and the runaway's late return does not overwrite the failure."""
    metrics_port = free_port()
    if strategy == "auto":  # 3 threads + 1 process child; io-hinted jobs never leave the threads
        extra: tuple[str, ...] = ("--processes", "1")
        concurrency, meta, hints = 4, hint("io"), ["io"] * 3
    else:
        extra, concurrency, meta, hints = (), 3, None, None
    worker = start(server, strategy, concurrency, conn=conn, extra=("--metrics-port", str(metrics_port), *extra))
    q = queue(conn)
    release = tmp_path / "release"
    runaway_seconds = 12
    overdue = q.enqueue("tests.jobs.sleep_for", runaway_seconds, job_timeout=2, meta=meta)
    beside = q.enqueue("tests.jobs.wait_file", str(release), 60, job_timeout=90, meta=meta)

    wait_ended(conn, [overdue.id], 2 + 5 + 10, worker, "the overdue thread job to fail")
    o = outcome(conn, overdue.id)
    assert o.status == "failed"
    assert "timeout" in o.exc_string.lower(), o.exc_string
    assert o.run_seconds is not None and o.run_seconds <= 2 + 5, o
    print(f"\n[{strategy}] thread job with job_timeout=2 failed after {o.run_seconds:.2f} s")
    assert overdue.id in FailedJobRegistry("default", connection=conn).get_job_ids()

    wait_for(lambda: "runaway" in worker.output(), 10, what="the runaway thread to be counted in the log")
    assert re.search(r"\(1 runaway so far\)", worker.output()), worker.describe()
    counted = wait_for(lambda: metric(metrics_port, "poolq_runaway_threads_total"), 10, 0.2)
    assert counted == 1, f"poolq_runaway_threads_total = {counted}"

    # the pool is still 3 wide while the runaway thread still sleeps (it ends at started+12 s)
    assert status(conn, beside.id) == "started"
    recs = assert_pool_width(conn, worker, 2, hints=hints and hints[:2])  # two free slots beside the waiting job ...
    release.touch()
    wait_ended(conn, [beside.id], 20, worker)
    recs3 = assert_pool_width(conn, worker, 3, hints=hints)  # ... and then all three
    assert {r["pid"] for r in recs + recs3} == {worker.pid}, "a thread job ran outside the worker process"
    assert o.started_at is not None
    assert min(r["started"] for r in recs) < o.started_at.timestamp() + runaway_seconds, (
        "the width check ran after the runaway thread had already returned"
    )

    # the runaway function returns later: the job stays failed
    wait_for(lambda: time.time() > o.started_at.timestamp() + runaway_seconds + 1, runaway_seconds + 5)
    again = outcome(conn, overdue.id)
    assert again.status == "failed", again
    assert worker.poll() is None


# ---------------------------------------------------------------------------------------------
# crash isolation


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", ["process", "hybrid", "auto"])
def test_crashing_children_fail_only_their_job(
    server: Any, conn: Redis[bytes], tmp_path: Path, runs: str, strategy: str
) -> None:
    """Concurrency 3: os._exit(3), os.abort(), a ctypes segfault and a self-SIGKILL (an OOM
    kill) each fail only their job, with the exit code / signal in the failure; two jobs running
    beside them all along finish; the pool is repaired (3 jobs overlap 3-wide afterwards).

    - process: the jobs beside them finish in their original children, once;
    - hybrid (2 children x 2 threads): the first crash kills a child that also runs one of the
      jobs beside. Which of its two jobs crashed it is unknown, so both are re-run alone in fresh
      one-job children: the culprit crashes again and fails with its exit code; the other runs
      to its end (twice in all: once cut short). The other job beside, in the other child, runs
      once;
    - auto (2 children + 1 thread): the crashing jobs are hinted CPU-bound (its process pool: a
      crash there is isolated as in the process strategy); one job beside runs in the other child,
      one in the thread pool; both run once.
    """
    extra: tuple[str, ...] = ("--processes", "2") if strategy in ("hybrid", "auto") else ()
    worker = start(server, strategy, 3, conn=conn, extra=extra)
    q = queue(conn)
    release = tmp_path / "release"
    beside_hints = ["cpu", "io"] if strategy == "auto" else [None, None]
    besides = [
        q.enqueue("tests.jobs.record_until_file", runs, f"b{i}", str(release), 60, job_timeout=90, meta=h and hint(h))
        for i, h in enumerate(beside_hints)
    ]
    wait_for(lambda: all(status(conn, j.id) == "started" for j in besides), 20, what="beside jobs")
    meta = hint("cpu") if strategy == "auto" else None
    crashes = {
        "exited with code 3": q.enqueue("tests.jobs.exit_code", 3, meta=meta),
        "SIGABRT": q.enqueue("tests.jobs.abort", meta=meta),
        "SIGSEGV": q.enqueue("tests.jobs.segfault", meta=meta),
        "SIGKILL": q.enqueue("tests.jobs.oom_like", meta=meta),
    }
    wait_ended(conn, [j.id for j in crashes.values()], 40, worker, "the crashing jobs to fail")
    for expected, job in crashes.items():
        o = outcome(conn, job.id)
        assert o.status == "failed", o
        assert expected in o.exc_string, f"{job.func_name}: expected {expected!r} in the failure:\n{o.exc_string}"
        assert "ChildCrashed" in o.exc_string, o.exc_string
        assert job.id in FailedJobRegistry("default", connection=conn).get_job_ids()

    assert all(status(conn, j.id) == "started" for j in besides), "a crash disturbed the jobs beside it"
    release.touch()
    wait_ended(conn, [j.id for j in besides], 20, worker)
    recs = records(conn, [j.id for j in besides])
    crashed_pids = {child_pid_in(outcome(conn, j.id).exc_string) for j in crashes.values()}
    assert not {r["pid"] for r in recs} & crashed_pids
    counts = executions(runs)
    if strategy == "hybrid":
        assert sorted(counts.values()) == [1, 2], f"expected one job beside re-run alone once: {counts}"
        assert "re-running job" in worker.output(), worker.describe()
    else:
        assert counts == {"b0": 1, "b1": 1}, counts
    if strategy == "auto":
        assert [r["pid"] == worker.pid for r in recs] == [False, True], recs

    assert_pool_width(conn, worker, 3, hints=["cpu", "cpu", "io"] if strategy == "auto" else None)
    assert worker.poll() is None


@pytest.mark.timeout(60)
def test_auto_crash_in_its_thread_pool_takes_the_worker_down_and_jobs_are_recovered(
    server: Any, conn: Redis[bytes], tmp_path: Path, runs: str
) -> None:
    """What auto does *not* isolate, checked as it is: a job running in its thread pool (hinted
    I/O-bound here) that segfaults kills the worker process itself, with the other job it was
    running (as with the thread strategy). Nothing is lost: a live worker recovers both jobs once
    the dead one's heartbeat expires; the job beside runs again and finishes, and the crashing
    one, now run by a process worker, fails alone with ChildCrashed (where it belonged)."""
    a = start(server, "auto", 3, env=FAST_RECOVERY, conn=conn, extra=("--processes", "1"))
    q = queue(conn)
    release = tmp_path / "release"
    beside = q.enqueue("tests.jobs.record_until_file", runs, "beside", str(release), 60, meta=hint("io"))
    wait_for(lambda: executions(runs)["beside"] == 1, 20, what="the job beside to run")
    segv = q.enqueue("tests.jobs.segfault", meta=hint("io"))
    code = a.wait(20)
    assert code == -signal.SIGSEGV, f"the auto worker exited {code}, not by SIGSEGV\n{a.describe()}"
    kill_group(a.pid)  # its forkserver and child, as a supervisor would on the crash

    b = start(server, "process", 2, env=FAST_RECOVERY, conn=conn)
    release.touch()
    wait_ended(conn, [beside.id, segv.id], 30, b, "the dead auto worker's jobs to be recovered")
    assert executions(runs)["beside"] == 2
    records(conn, [beside.id])
    o = outcome(conn, segv.id)
    assert o.status == "failed" and "ChildCrashed" in o.exc_string and "SIGSEGV" in o.exc_string, o
    for j in (beside, segv):
        assert conn.hget(j.key, "poolq_redeliveries") == b"1"
    assert stop(b, timeout=30) == 0, b.describe()


# ---------------------------------------------------------------------------------------------
# at-least-once after kill -9


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["thread", "process", "hybrid", "auto"])
def test_kill9_jobs_recovered_within_bound_with_defaults(
    server: Any, conn: Redis[bytes], runs: str, strategy: str
) -> None:
    """SIGKILL of the worker's whole process group with jobs in flight: a second worker with
    the default settings (worker TTL 15 s, recovery every 5 s) re-queues each held job within
    30 s of the kill and runs it to the end. Each ran twice (once cut short), no job is lost."""
    a = start(server, strategy, 3, conn=conn)
    q = queue(conn)
    jobs = [q.enqueue("tests.jobs.record", runs, f"j{i}", 3.0, job_timeout=60) for i in range(3)]
    waiting = [q.enqueue("tests.jobs.record", runs, f"w{i}", 0.1) for i in range(3)]
    wait_for(lambda: len(executions(runs)) == 3, 30, what="3 jobs running in worker A")
    killed_at = kill9_group(a)

    b = start(server, strategy, 3)
    recovered_at: dict[str, float] = {}

    def all_recovered() -> bool:
        for j in jobs:
            if j.id not in recovered_at and conn.hget(j.key, "poolq_redeliveries") is not None:
                recovered_at[j.id] = time.time()
        if b.poll() is not None:
            raise AssertionError(f"worker B exited: {b.describe()}")
        return len(recovered_at) == len(jobs)

    wait_for(all_recovered, 30 + 10, 0.1, "the dead worker's jobs to be re-queued")
    recovery = max(recovered_at.values()) - killed_at
    print(f"\n[{strategy}] recovery after kill -9 with defaults: {recovery:.1f} s (bound 30 s)")
    assert recovery <= 30, f"jobs re-queued {recovery:.1f} s after the kill (bound 30 s)\n{b.describe()}"

    wait_ended(conn, [j.id for j in jobs + waiting], 30, b)
    records(conn, [j.id for j in jobs + waiting])
    counts = executions(runs)
    assert {f"j{i}": 2 for i in range(3)} == {k: v for k, v in counts.items() if k.startswith("j")}, counts
    assert {f"w{i}": 1 for i in range(3)} == {k: v for k, v in counts.items() if k.startswith("w")}, counts
    for j in jobs:
        assert conn.hget(j.key, "poolq_redeliveries") == b"1"
    assert StartedJobRegistry("default", connection=conn).get_job_ids() == []
    assert FailedJobRegistry("default", connection=conn).get_job_ids() == []
    assert stop(b, timeout=30) == 0


@pytest.mark.timeout(90)
def test_job_abandoned_after_max_redeliveries(server: Any, conn: Redis[bytes], runs: str) -> None:
    """WORKER_MAX_REDELIVERIES=1: the job's worker is killed (-9), the job is re-queued once and
    its next worker is killed too; the third worker fails it as abandoned, with that reason, in
    FailedJobRegistry. It ran exactly twice, and its failure callback ran once, with RQ's
    AbandonedJobError, as RQ's own clean-up calls it."""
    env = {**FAST_RECOVERY, **settings_env(max_redeliveries=1)}
    q = queue(conn)
    job = q.enqueue(
        "tests.jobs.record",
        runs,
        "victim",
        60.0,
        job_timeout=120,
        on_failure=Callback("tests.jobs.record_failure"),
    )

    a = start(server, "thread", 1, env=env)
    wait_for(lambda: executions(runs)["victim"] == 1, 30, what="the first execution")
    kill9_group(a)
    b = start(server, "thread", 1, env=env)
    wait_for(lambda: executions(runs)["victim"] == 2, 30, what="the redelivery to run")
    assert conn.hget(job.key, "poolq_redeliveries") == b"1"
    kill9_group(b)
    c = start(server, "thread", 1, env=env)

    wait_ended(conn, [job.id], 30, c, "the job to fail as abandoned")
    o = outcome(conn, job.id)
    assert o.status == "failed"
    assert "abandoned" in o.exc_string.lower(), o.exc_string
    assert job.id in FailedJobRegistry("default", connection=conn).get_job_ids()
    assert executions(runs)["victim"] == 2
    assert status(conn, job.id) == "failed"
    assert job.id.encode() not in conn.lrange("rq:queue:default", 0, -1)
    called = wait_for(lambda: conn.get(f"cb:{job.id}:failure"), 15, what="the failure callback")
    assert called.decode().startswith("AbandonedJobError"), called
    assert stop(c, timeout=30) == 0


@pytest.mark.timeout(90)
def test_several_recovering_workers_never_requeue_a_job_twice(server: Any, conn: Redis[bytes], runs: str) -> None:
    """200 jobs held by a worker killed with -9. Once it counts as dead, four workers start at
    the same moment and scan for its jobs at once (at start, then every 0.5 s). Each job is
    re-queued exactly once (redelivery count 1, one 're-queued' log line per job across all
    four) and runs exactly twice in total (once cut short, once to the end)."""
    n, recoverers = 200, 4
    q = queue(conn)
    jobs = [q.enqueue("tests.jobs.record", runs, f"t{i}", 2.0, job_timeout=60) for i in range(n)]
    a = start(server, "thread", n, env=FAST_RECOVERY, conn=conn)
    wait_for(lambda: len(executions(runs)) == n, 30, what=f"{n} jobs running in worker A")
    kill9_group(a)
    time.sleep(3 + 1.5)  # WORKER_WORKER_TTL_SECONDS=3: A now counts as dead for every scan

    others = [start(server, "thread", n // recoverers, env=FAST_RECOVERY) for _ in range(recoverers)]
    wait_ended(conn, [j.id for j in jobs], 60, others[0])
    assert all(w.poll() is None for w in others), [w.describe() for w in others if w.poll() is not None]
    records(conn, [j.id for j in jobs])
    counts = executions(runs)
    twice = {f"t{i}": 2 for i in range(n)}
    assert counts == twice, {k: v for k, v in counts.items() if v != 2}
    assert [conn.hget(j.key, "poolq_redeliveries") for j in jobs] == [b"1"] * n
    lines = [log_lines(w.output(), "re-queued job") for w in others]
    print(f"\nrecovering workers: re-queued {[len(x) for x in lines]} of {n} jobs between them")
    assert sum(len(x) for x in lines) == n, "\n".join(line for x in lines for line in x)
    for w in others:
        assert stop(w, timeout=30) == 0, w.describe()


@pytest.mark.timeout(90)
def test_supervisor_restart_with_the_same_name_after_kill9(server: Any, conn: Redis[bytes], runs: str) -> None:
    """A supervisor (systemd, a container restart policy) restarts a worker killed with -9
    under the same name (a fixed WORKER_NAME, or the default <hostname>.<pid> of a container's
    pid 1). The new incarnation must start and keep running, and the jobs its dead predecessor
    held must be recovered within the 30 s bound (default settings) and finish."""
    name = new_name("fixed")
    q = queue(conn)
    jobs = [q.enqueue("tests.jobs.record", runs, f"s{i}", 3.0, job_timeout=60) for i in range(2)]
    a = start_worker(server.url, "thread", 2, extra_args=ALLOW, name=name)
    wait_for(lambda: len(executions(runs)) == 2, 30, what="2 jobs running")
    killed_at = kill9_group(a)
    b = start_worker(server.url, "thread", 2, extra_args=ALLOW, name=name)
    time.sleep(3)
    assert b.poll() is None, f"the restarted worker did not start: {b.describe()}"
    wait_ended(conn, [j.id for j in jobs], 30 + 3 + 10, b, "the predecessor's jobs to be recovered and run")
    ended = max(outcome(conn, j.id).result_created_at.timestamp() for j in jobs)  # type: ignore[union-attr]
    print(f"\nsame-name restart: jobs recovered and finished {ended - killed_at:.1f} s after the kill")
    assert ended - killed_at <= 30 + 3 + 1, f"{ended - killed_at:.1f} s\n{b.describe()}"
    records(conn, [j.id for j in jobs])
    assert executions(runs) == {"s0": 2, "s1": 2}
    assert stop(b, timeout=30) == 0


# ---------------------------------------------------------------------------------------------
# graceful drain


CAPACITY = {"thread": 4, "process": 4, "inline": 1, "hybrid": 4, "auto": 4}
# hybrid: 2 children x 2 threads; auto: 2 children + 2 threads, whatever the machine's CPUs.
DRAIN_ARGS: dict[str, tuple[str, ...]] = {"hybrid": ("--processes", "2"), "auto": ("--processes", "2")}
# auto: the running jobs are hinted half CPU-bound, half I/O-bound, so that both of its
# sub-pools (children and threads) are full when the signal comes, and both are drained.
DRAIN_HINTS = {"auto": ["cpu", "io", "cpu", "io"]}
DRAIN_STRATEGIES = ["thread", "process", "inline", "hybrid", "auto"]


def _drain_setup(
    server: Any, conn: Redis[bytes], runs: str, strategy: str, shutdown_timeout: float, seconds: float
) -> tuple[WorkerProcess, list[str], list[str]]:
    """A worker whose every slot runs a job of ``seconds`` and 3 more jobs waiting in the queue."""
    cap = CAPACITY[strategy]
    env = settings_env(shutdown_timeout=shutdown_timeout)
    worker = start(server, strategy, cap, env=env, conn=conn, extra=DRAIN_ARGS.get(strategy, ()))
    q = queue(conn)
    metas = [hint(h) for h in DRAIN_HINTS[strategy]] if strategy in DRAIN_HINTS else [None] * cap
    running = [
        q.enqueue("tests.jobs.record", runs, f"r{i}", seconds, job_timeout=120, meta=metas[i]).id for i in range(cap)
    ]
    wait_for(lambda: len(executions(runs)) == cap, 30, what="every slot to run a job")
    waiting = [q.enqueue("tests.jobs.record", runs, f"q{i}", 0.0).id for i in range(3)]
    return worker, running, waiting


def _stop_timed(worker: WorkerProcess, second: bool = False) -> tuple[int, float]:
    t0 = time.monotonic()
    code = stop(worker, signal.SIGTERM, second=signal.SIGTERM if second else None, timeout=60)
    return code, time.monotonic() - t0


def _sigterm_exits_in_time(worker: WorkerProcess, strategy: str, shutdown_timeout: float, what: str) -> None:
    """SIGTERM: the worker exits 0 within its shutdown timeout + 2 s (a bound against hangs)."""
    code, took = _stop_timed(worker)
    print(f"\n[{strategy}] {what}: exit after {took:.1f} s (bound {shutdown_timeout + 2:g} s)")
    assert code == 0, worker.describe()
    assert took <= shutdown_timeout + 2, f"exit {took:.1f} s after SIGTERM\n{worker.describe()}"


def _assert_drained(
    conn: Redis[bytes], runs: str, running: list[str], waiting: list[str], worker: WorkerProcess
) -> dict[str, int]:
    """The running jobs finished, each ran exactly once, the waiting ones are still queued: the executions."""
    assert [outcome(conn, i).status for i in running] == ["finished"] * len(running), worker.describe()
    counts = executions(runs)
    assert {k: v for k, v in counts.items() if k.startswith("r")} == {f"r{i}": 1 for i in range(len(running))}
    assert [status(conn, i) for i in waiting] == ["queued"] * 3
    return counts


def _assert_requeued(conn: Redis[bytes], ids: list[str], worker: WorkerProcess) -> None:
    in_queue = queue(conn).get_job_ids()
    for i in ids:
        assert status(conn, i) == "queued", f"job {i} is {status(conn, i)}\n{worker.describe()}"
        assert i in in_queue, f"job {i} is not back in the queue {in_queue}\n{worker.describe()}"
    assert StartedJobRegistry("default", connection=conn).get_job_ids() == []
    assert conn.llen(queue(conn).intermediate_queue_key) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", DRAIN_STRATEGIES)
def test_sigterm_drains_running_jobs_exactly_once(server: Any, conn: Redis[bytes], runs: str, strategy: str) -> None:
    """SIGTERM while every slot runs a 2 s job, WORKER_SHUTDOWN_TIMEOUT=8: no new job is
    dequeued, the running ones finish exactly once, the worker exits 0 within 8 + 2 s and
    registers its death; the waiting jobs stay queued, never run."""
    timeout = 8.0
    worker, running, waiting = _drain_setup(server, conn, runs, strategy, timeout, 2.0)
    _sigterm_exits_in_time(worker, strategy, timeout, "warm drain of 2 s jobs")
    counts = _assert_drained(conn, runs, running, waiting, worker)
    assert not any(k.startswith("q") for k in counts), f"a job was dequeued after SIGTERM: {counts}"
    assert queue(conn).get_job_ids() == waiting
    assert not conn.sismember("rq:workers", f"rq:worker:{worker.name}")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", DRAIN_STRATEGIES)
def test_sigterm_requeues_jobs_longer_than_shutdown_timeout(
    server: Any, conn: Redis[bytes], runs: str, strategy: str
) -> None:
    """SIGTERM while every slot runs a 20 s job, WORKER_SHUTDOWN_TIMEOUT=3: the worker exits 0
    within 3 + 2 s and the running jobs are back in the queue (status queued), ahead of the
    jobs that were waiting; nothing is left in the started registry."""
    timeout = 3.0
    worker, running, waiting = _drain_setup(server, conn, runs, strategy, timeout, 20.0)
    _sigterm_exits_in_time(worker, strategy, timeout, "drain with 20 s jobs")
    _assert_requeued(conn, running, worker)
    assert set(queue(conn).get_job_ids()) == set(running) | set(waiting)
    assert all(v == 1 for v in executions(runs).values())


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", DRAIN_STRATEGIES)
def test_second_sigterm_cold_stop_requeues_at_once(server: Any, conn: Redis[bytes], runs: str, strategy: str) -> None:
    """Two SIGTERMs half a second apart with WORKER_SHUTDOWN_TIMEOUT=30: a cold stop. The
    worker does not wait for the 20 s jobs or the 30 s timeout: it re-queues them and exits 0
    at once (here: within 5 s of the first signal)."""
    worker, running, _ = _drain_setup(server, conn, runs, strategy, 30.0, 20.0)
    code, took = _stop_timed(worker, second=True)
    print(f"\n[{strategy}] cold stop: exit after {took:.1f} s")
    assert code == 0, worker.describe()
    assert took <= 5, f"cold stop took {took:.1f} s\n{worker.describe()}"
    _assert_requeued(conn, running, worker)
    assert "cold" in worker.output().lower()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("strategy", ["process", "hybrid", "auto"])
def test_ctrl_c_to_the_process_group_drains_like_sigterm(
    server: Any, conn: Redis[bytes], runs: str, strategy: str
) -> None:
    """Ctrl-C in a terminal: SIGINT to the whole foreground process group (worker, forkserver,
    pool children). The children ignore it; the worker drains: the running jobs finish exactly
    once, the waiting ones stay queued, exit 0 within WORKER_SHUTDOWN_TIMEOUT + 2 s."""
    timeout = 8.0
    worker, running, waiting = _drain_setup(server, conn, runs, strategy, timeout, 2.0)
    t0 = time.monotonic()
    os.killpg(worker.pid, signal.SIGINT)
    code = worker.wait(timeout + 2 + 20)
    took = time.monotonic() - t0
    assert code == 0, worker.describe()
    assert took <= timeout + 2, f"exit {took:.1f} s after SIGINT\n{worker.describe()}"
    _assert_drained(conn, runs, running, waiting, worker)
    wait_for(lambda: not group_members(worker.pid), 10, what="the forkserver and children to exit")


# ---------------------------------------------------------------------------------------------
# Redis outages


@pytest.mark.timeout(120)
def test_redis_killed_and_restarted_worker_resumes_and_loses_nothing(tmp_path: Path) -> None:
    """redis-server with AOF (appendfsync everysec) is SIGKILLed while 4 jobs run and 8 wait,
    and restarted 10 s later on the same port and directory. The worker never exits, resumes
    within 5 s of Redis returning (jobs enqueued after the restart run), and every job enqueued
    before the kill finishes; the jobs cut off by the outage ran once."""
    srv = RedisServer(tmp_path / "redis", appendonly=True, fsync="everysec").start()
    runs = str(tmp_path / "executions.log")
    conn = srv.client(socket_timeout=5)
    try:
        worker = start_worker(srv.url, "thread", 4, extra_args=ALLOW)
        wait_registered(conn, worker)
        q = queue(conn)
        before = [q.enqueue("tests.jobs.record", runs, f"long{i}", 6.0, job_timeout=120).id for i in range(4)]
        before += [q.enqueue("tests.jobs.record", runs, f"short{i}", 0.2).id for i in range(8)]
        wait_for(lambda: len(executions(runs)) == 4, 30, what="4 long jobs running")
        time.sleep(2.0)  # > 1 s: with appendfsync everysec, what the worker wrote so far is on disk
        srv.kill()
        conn.close()
        outage_end = time.monotonic() + 10
        while time.monotonic() < outage_end:
            assert worker.poll() is None, f"worker exited during the outage: {worker.describe()}"
            time.sleep(0.2)
        srv.start()
        restarted = time.time()
        conn = srv.client(socket_timeout=5)
        assert worker.poll() is None, worker.describe()

        q = queue(conn)
        after = [q.enqueue("tests.jobs.record", runs, f"after{i}", 0.1).id for i in range(4)]
        # the 4 long jobs end, the 8 waiting ones run, then the new ones: well within 5 s + work
        wait_ended(conn, before + after, 5 + 20, worker, "every job after Redis came back")
        resumed = min(outcome(conn, i).started_at.timestamp() for i in before[4:] + after) - restarted
        print(f"\nRedis outage: first job started {resumed:.1f} s after Redis returned (bound 5 s)")
        assert resumed <= 5 + 1, f"worker resumed {resumed:.1f} s after Redis came back\n{worker.describe()}"
        for i in before + after:
            o = outcome(conn, i)
            assert o.status == "finished", f"{i}: {o}\n{worker.describe()}"
        counts = executions(runs)
        assert all(counts[f"long{i}"] == 1 for i in range(4)), counts
        assert sum(counts.values()) == len(before) + len(after), counts
        assert worker.poll() is None
        assert stop(worker, timeout=30) == 0, worker.describe()
    finally:
        conn.close()
        srv.stop()


@pytest.mark.timeout(60)
def test_redis_unreachable_at_start_one_line_then_exit_nonzero() -> None:
    """No Redis at the URL: the worker logs one clear line, retries, and with
    WORKER_REDIS_WAIT=2 gives up with a non-zero exit within a few seconds (here 2 + 5 s)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    t0 = time.monotonic()
    run = run_worker(url, "thread", 1, env={"WORKER_REDIS_WAIT": "2"}, burst=False, timeout=50)
    took = time.monotonic() - t0
    print(f"\nRedis unreachable at start: exit {run.returncode} after {took:.1f} s (WORKER_REDIS_WAIT=2)")
    assert run.returncode != 0, run.describe()
    lines = [ln for ln in run.stderr.splitlines() if "not reachable" in ln]
    assert len(lines) == 1, run.describe()
    assert url in lines[0]
    assert "Traceback" not in run.stderr, run.describe()
    assert took <= 2 + 5, f"the worker gave up {took:.1f} s after start with WORKER_REDIS_WAIT=2\n{run.describe()}"


# ---------------------------------------------------------------------------------------------
# poison input


def _corrupt(conn: Redis[bytes], q: Queue, set_fields: dict[str, Any] | None = None, drop: str = "") -> str:
    """A good job, enqueued by stock RQ, then damaged in its hash (as a buggy producer would)."""
    job = q.enqueue("worker.jobs.noop")
    if set_fields:
        conn.hset(job.key, mapping=set_fields)
    if drop:
        conn.hdel(job.key, drop)
    return job.id


def _poison(conn: Redis[bytes]) -> tuple[list[str], dict[str, str]]:
    """Good jobs with bad ones between them: (good ids, {kind: bad id})."""
    q = queue(conn)
    good: list[str] = []
    bad: dict[str, str] = {}

    def add_good() -> None:
        good.extend(q.enqueue("worker.jobs.noop").id for _ in range(2))

    add_good()
    bad["bad created_at"] = _corrupt(conn, q, {"created_at": "yesterday-ish"})
    add_good()
    bad["bad timeout"] = _corrupt(conn, q, {"timeout": "ten minutes"})
    add_good()
    bad["undecodable data"] = _corrupt(conn, q, {"data": b"\xff\xfe\x00 not zlib, not json"})
    add_good()
    bad["no data field"] = _corrupt(conn, q, drop="data")
    add_good()
    only_status = "only-a-status-0001"
    conn.hset(f"rq:job:{only_status}", mapping={"status": "queued"})
    conn.rpush(q.key, only_status)
    bad["hash with only a status"] = only_status
    add_good()
    bad["missing module"] = q.enqueue("tests.jobs.no_such_module.func").id
    bad["missing attribute"] = q.enqueue("tests.jobs.no_such_function").id
    add_good()
    pickled = zlib.compress(pickle.dumps(("worker.jobs.noop", None, (), {}), protocol=pickle.HIGHEST_PROTOCOL))
    bad["pickle payload"] = _corrupt(conn, q, {"data": pickled})
    add_good()
    bad["set result"] = q.enqueue("tests.jobs.unserializable_result", "set").id
    bad["object result"] = q.enqueue("tests.jobs.unserializable_result", "object").id
    bad["lambda result"] = q.enqueue("tests.jobs.unserializable_result", "lambda").id
    add_good()
    return good, bad


def _assert_poison_outcome(conn: Redis[bytes], good: list[str], bad: dict[str, str], output: str) -> None:
    problems = []
    for i in good:
        o = outcome(conn, i)
        if o.status != "finished":
            problems.append(f"good job {i}: status={o.status} {o.exc_string[-200:]!r}")
    failed = set(FailedJobRegistry("default", connection=conn).get_job_ids())
    for kind, i in bad.items():
        o = outcome(conn, i)
        if i not in failed or o.status != "failed" or not o.exc_string.strip():
            reason = o.exc_string.strip().splitlines()[-1:] if o.exc_string.strip() else "(none)"
            problems.append(f"{kind} ({i}): status={o.status} in FailedJobRegistry={i in failed} reason={reason}")
    assert not problems, "\n".join(problems) + "\n" + output[-6000:]
    assert queue(conn).get_job_ids() == []
    assert StartedJobRegistry("default", connection=conn).get_job_ids() == []


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", ["thread", "process", "hybrid", "auto"])
def test_poison_input_fails_bad_jobs_and_never_stops_the_worker(server: Any, conn: Redis[bytes], strategy: str) -> None:
    """Bad jobs mixed among good ones: a bad created_at, a bad timeout, undecodable data, a hash
    without 'data', one with only a status, an allowlisted function whose module / attribute does
    not exist, a pickle payload for a JSON worker, results JSON cannot store (a set, an object, a
    lambda). Every good job finishes; every bad one is failed and in FailedJobRegistry with a
    reason; the worker never exits (then SIGTERM: exit 0)."""
    good, bad = _poison(conn)
    worker = start(server, strategy, 2, conn=conn)

    def settled() -> bool:
        assert worker.poll() is None, worker.describe()
        return (
            all(status(conn, i) == "finished" for i in good)
            and conn.llen(queue(conn).key) == 0
            and not StartedJobRegistry("default", connection=conn).get_job_ids()
        )

    wait_for(settled, 40, 0.1, "the good jobs to finish and the queue to empty")
    time.sleep(1.0)  # whatever the worker still had to write about the last jobs
    assert worker.poll() is None, worker.describe()
    _assert_poison_outcome(conn, good, bad, worker.output())
    assert stop(worker, timeout=30) == 0, worker.describe()


@pytest.mark.timeout(60)
def test_poison_input_does_not_end_a_burst_worker_early(server: Any, conn: Redis[bytes]) -> None:
    """The same mix for a burst worker (RQ 2.12's worker exits 0 at a bad created_at): it exits
    0 only once every job is done — good ones finished, bad ones failed with a reason."""
    good, bad = _poison(conn)
    run = run_worker(server.url, "thread", 2, extra_args=ALLOW, timeout=60)
    assert run.returncode == 0, run.describe()
    _assert_poison_outcome(conn, good, bad, run.stderr)


# ---------------------------------------------------------------------------------------------
# injection


class _Evil:
    """Unpickling this runs a shell command: what a pickle payload in a job hash can do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


@pytest.mark.timeout(60)
def test_injection_pickle_reduce_and_os_system_never_run(server: Any, conn: Redis[bytes], tmp_path: Path) -> None:
    """A pickle __reduce__ payload (os.system('touch SENTINEL')) in a job hash, consumed by the
    JSON worker, and a JSON job naming os.system: 0 executions (the sentinel files never appear),
    both failed with a could-not-load / not-allowed reason; the good job beside them runs."""
    control = tmp_path / "control"
    payload = pickle.dumps(("worker.jobs.noop", None, (_Evil(str(control)),), {}))
    pickle.loads(payload)  # the payload is live: unpickled here, it runs its command
    assert control.exists()

    sentinel_pickle = tmp_path / "SENTINEL_pickle"
    sentinel_system = tmp_path / "SENTINEL_system"
    q = queue(conn)
    evil_pickle = q.enqueue("worker.jobs.noop")
    conn.hset(
        evil_pickle.key,
        "data",
        zlib.compress(pickle.dumps(("worker.jobs.noop", None, (_Evil(str(sentinel_pickle)),), {}))),
    )
    evil_system = q.enqueue("os.system", f"touch {sentinel_system}")
    ok = q.enqueue("tests.jobs.touch_sentinel", str(tmp_path / "ok"))

    run = run_worker(server.url, "thread", 2, extra_args=ALLOW, timeout=60)
    assert run.returncode == 0, run.describe()
    assert outcome(conn, ok.id).status == "finished"
    assert (tmp_path / "ok").exists()
    assert not sentinel_pickle.exists(), "the pickle payload was unpickled by the JSON worker"
    assert not sentinel_system.exists(), "os.system ran"
    failed = FailedJobRegistry("default", connection=conn).get_job_ids()
    o_pickle, o_system = outcome(conn, evil_pickle.id), outcome(conn, evil_system.id)
    assert evil_pickle.id in failed and o_pickle.status == "failed", o_pickle
    assert evil_system.id in failed and o_system.status == "failed", o_system
    assert re.search(r"not allowed|could not be loaded|deserializ", o_pickle.exc_string, re.I), o_pickle.exc_string
    assert "FunctionNotAllowed" in o_system.exc_string and "not allowed" in o_system.exc_string, o_system


# ---------------------------------------------------------------------------------------------
# memory guard


@pytest.mark.timeout(90)
@pytest.mark.parametrize("strategy", ["process", "hybrid", "auto"])
def test_memory_guard_replaces_child_above_cap(server: Any, conn: Redis[bytes], strategy: str) -> None:
    """Concurrency 1, WORKER_MAX_CHILD_MEMORY_MB=150: ten jobs each leaking 50 MB in the same
    child (hybrid: its one child of one thread; auto: its process pool, where the jobs are hinted
    to run: a job in auto's threads leaks into the worker itself, which no cap replaces). The
    child is replaced once above the cap (its pid changes), and no pool child's RSS ever goes
    beyond the cap by more than one job's leak — from each job's own RSS report and from psutil
    sampling of the worker's children while it runs."""
    cap_mb, leak_mb, n = 150, 50, 10
    q = queue(conn)
    meta = hint("cpu") if strategy == "auto" else None
    ids = [q.enqueue("tests.jobs.leak", leak_mb, meta=meta).id for _ in range(n)]
    worker = start(server, strategy, 1, env=settings_env(max_child_memory_mb=cap_mb))
    peak: dict[int, int] = {}
    sampled = threading.Event()  # not ``stop``: that is the worker helper, used below

    def sample() -> None:
        while not sampled.is_set():
            for pid in descendants(worker.pid):
                with contextlib.suppress(psutil.Error):
                    rss = psutil.Process(pid).memory_info().rss
                    peak[pid] = max(peak.get(pid, 0), rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wait_ended(conn, ids, 60, worker, "the leaking jobs")
    finally:
        sampled.set()
        sampler.join(5)
    recs = records(conn, ids)
    limit = (cap_mb + leak_mb) * 2**20
    pids = [r["pid"] for r in recs]
    print(
        f"\nmemory guard: {len(set(pids))} children for {n} jobs; RSS after each job (MiB): "
        f"{[round(r['rss'] / 2**20) for r in recs]}; sampled peak {max(peak.values()) / 2**20:.0f} MiB"
    )
    assert len(set(pids)) >= 2, f"the leaking child was never replaced: {pids}\n{worker.describe()}"
    assert all(r["rss"] <= limit for r in recs), [r["rss"] for r in recs]
    assert max(peak.values()) <= limit, {p: v / 2**20 for p, v in peak.items()}
    # replaced exactly when above the cap, after that job (5 MiB either side: the job and the
    # worker read the child's RSS a moment apart)
    margin = 5 * 2**20
    for k in range(n - 1):
        if recs[k]["rss"] > cap_mb * 2**20 + margin:
            assert pids[k + 1] != pids[k], f"child {pids[k]} above the cap after job {k} was kept: {pids}"
        elif recs[k]["rss"] < cap_mb * 2**20 - margin:
            assert pids[k + 1] == pids[k], f"child {pids[k]} below the cap after job {k} was replaced: {pids}"
    # a replaced child's pid never comes back: each child ran a contiguous run of jobs
    runs_of = [p for k, p in enumerate(pids) if k == 0 or pids[k - 1] != p]
    assert len(runs_of) == len(set(runs_of)), pids
    assert "WORKER_MAX_CHILD_MEMORY_MB" in worker.output()
    assert stop(worker, timeout=30) == 0
