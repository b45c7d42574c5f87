"""Hybrid and auto strategies (issue 8): real ``python -m worker`` processes, real redis-server.

Where a job ran is read from the job's own record (its pid and thread id, returned through stock
RQ); how often a job's code began to run is counted in a file the job appends to, outside Redis.
The few unit tests at the end (sizing, the routing rule) need no worker.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq.registry import FailedJobRegistry, StartedJobRegistry
from support.base import free_port, wait_for
from support.rq_jobs import enqueue_many, fetch, finished_records, json_queue, overlap
from support.workers import WorkerProcess, descendants, pid_gone, start_worker, stop, wait_registered, worker_hash

from worker.composite import CPU, IO, parse_hint
from worker.strategies import STRATEGIES, StrategyConfig
from worker.strategies.auto import auto_layout
from worker.strategies.hybrid import hybrid_layout
from worker.strategies.places import ADMIT_AHEAD
from worker.strategies.routing import (
    CPU_RATIO,
    EARLY_SECONDS,
    MIN_CPU_SECONDS,
    PROBE_RUNS,
    REPROBE_EVERY,
    Profile,
    Router,
    RunInProgress,
)

pytestmark = pytest.mark.timeout(60)

ALLOW = ("--allowed-functions", "worker.jobs.*,tests.composite_jobs.*")
J = "tests.composite_jobs"


def executions(path: Path) -> Counter[str]:
    """How many times each token's job began to run, and in which pids."""
    counts: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            counts[line.split()[0]] += 1
    return counts


def run_pids(path: Path, token: str) -> list[int]:
    return [int(line.split()[1]) for line in path.read_text().splitlines() if line.split()[0] == token]


def status(conn: Redis, job_id: str) -> str:
    st = fetch(conn, job_id).get_status()
    return str(getattr(st, "value", st))


def wait_ended(conn: Redis, ids: list[str], proc: WorkerProcess, timeout: float = 30) -> None:
    def ended() -> bool:
        assert proc.poll() is None, f"worker exited: {proc.describe()}"
        return all(status(conn, i) in ("finished", "failed") for i in ids)

    wait_for(ended, timeout, 0.1, f"jobs {ids} to end\n")


def failure(conn: Redis, job_id: str) -> str:
    res = fetch(conn, job_id).latest_result()
    assert res is not None
    return res.exc_string or ""


def start(redis_url: str, conn: Redis, strategy: str, *extra: str, concurrency: Any = None) -> WorkerProcess:
    proc = start_worker(redis_url, strategy, concurrency, extra_args=(*ALLOW, *extra))
    wait_registered(conn, proc)
    return proc


# ---------------------------------------------------------------------------------------------
# hybrid


def test_hybrid_runs_jobs_in_p_children_with_several_threads_each(redis: Redis, redis_url: str) -> None:
    """2 processes x 3 threads: 12 io jobs run 6 at once, in exactly 2 child pids (children of
    the worker, not the worker itself), each child on several threads."""
    proc = start(redis_url, redis, "hybrid", "--processes", "2", "--threads-per-process", "3")
    jobs = enqueue_many(redis, "worker.jobs.io", 12, seconds=0.4)
    wait_ended(redis, [j.id for j in jobs], proc)
    records = finished_records(redis, jobs, proc.describe())
    pids = {r["pid"] for r in records}
    assert len(pids) == 2, records
    assert proc.pid not in pids
    assert pids <= descendants(proc.pid)
    for pid in pids:
        threads = {r["thread"] for r in records if r["pid"] == pid}
        assert len(threads) > 1, f"child {pid} ran its jobs on one thread: {records}"
    assert overlap(records) == 6
    assert worker_hash(redis, proc.name)["poolq_concurrency"] == "6"
    assert "2 processes x 3 threads" in proc.output()
    assert stop(proc) == 0, proc.describe()


def test_hybrid_timeout_kills_the_child_and_requeues_its_siblings(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """One child x 4 threads: an overdue job (timeout 2 s) and three 3 s jobs beside it. The
    child is killed at the timeout; the overdue job fails with a timeout naming the child; its
    siblings are not failed: re-queued, they run again in the replacement child and finish."""
    runs = tmp_path / "runs.log"
    proc = start(redis_url, redis, "hybrid", "--processes", "1", "--threads-per-process", "4")
    q = json_queue(redis)
    overdue = q.enqueue(f"{J}.sleep_for", 60, job_timeout=2)
    siblings = [q.enqueue(f"{J}.record", str(runs), f"s{i}", 3.0, job_timeout=60) for i in range(3)]
    wait_for(lambda: len(executions(runs)) == 3, 10, what="the siblings to start")
    first_child = run_pids(runs, "s0")[0]
    wait_ended(redis, [overdue.id, *(s.id for s in siblings)], proc)

    assert status(redis, overdue.id) == "failed"
    text = failure(redis, overdue.id)
    assert "JobTimeoutException" in text and f"pool child {first_child} was killed" in text, text
    assert "3 job(s) running beside it re-queued" in text, text
    assert pid_gone(first_child)
    records = finished_records(redis, siblings, proc.describe())
    assert executions(runs) == {"s0": 2, "s1": 2, "s2": 2}, "each sibling: killed once, re-run once"
    assert {r["pid"] for r in records} != {first_child}
    assert all(first_child not in run_pids(runs, f"s{i}")[1:] for i in range(3))
    assert FailedJobRegistry("default", connection=redis).get_job_ids() == [overdue.id]
    assert proc.poll() is None
    assert stop(proc) == 0, proc.describe()


def test_hybrid_crash_fails_only_the_culprit_and_reruns_its_siblings_alone(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    """One child x 4 threads running two 2 s jobs when a segfault and an os._exit(3) job arrive:
    the crashing jobs fail (ChildCrashed, with the signal / exit code); the jobs beside them, whose
    child died under them, are re-run alone in fresh children and finish."""
    runs = tmp_path / "runs.log"
    proc = start(redis_url, redis, "hybrid", "--processes", "1", "--threads-per-process", "4")
    q = json_queue(redis)
    besides = [q.enqueue(f"{J}.record", str(runs), f"b{i}", 2.0, job_timeout=60) for i in range(2)]
    wait_for(lambda: len(executions(runs)) == 2, 10, what="the jobs beside to start")
    segv = q.enqueue(f"{J}.segfault")
    exit3 = q.enqueue(f"{J}.exit_code", 3)
    wait_ended(redis, [segv.id, exit3.id, *(b.id for b in besides)], proc)

    assert status(redis, segv.id) == "failed" and status(redis, exit3.id) == "failed"
    assert "ChildCrashed" in failure(redis, segv.id) and "SIGSEGV" in failure(redis, segv.id), failure(redis, segv.id)
    assert "ChildCrashed" in failure(redis, exit3.id) and "exited with code 3" in failure(redis, exit3.id)
    finished_records(redis, besides, proc.describe())
    counts = executions(runs)
    assert set(counts) == {"b0", "b1"} and all(n == 2 for n in counts.values()), counts
    assert "re-running job" in proc.output()
    # the pool is repaired: 4 jobs at once again, in one (new) child
    jobs = enqueue_many(redis, "worker.jobs.io", 4, seconds=0.5)
    wait_ended(redis, [j.id for j in jobs], proc)
    records = finished_records(redis, jobs, proc.describe())
    assert overlap(records) == 4 and len({r["pid"] for r in records}) == 1
    assert stop(proc) == 0, proc.describe()


def test_hybrid_cold_stop_requeues_running_jobs(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """Two SIGTERMs: the children are killed and every running job is back in its queue (none
    failed), and the worker exits 0 at once."""
    runs = tmp_path / "runs.log"
    proc = start(redis_url, redis, "hybrid", "--processes", "2", "--threads-per-process", "2")
    q = json_queue(redis)
    jobs = [q.enqueue(f"{J}.record", str(runs), f"r{i}", 30.0, job_timeout=60) for i in range(4)]
    wait_for(lambda: len(executions(runs)) == 4, 10, what="4 jobs to run")
    assert stop(proc, signal.SIGTERM, second=signal.SIGTERM, timeout=10) == 0, proc.describe()
    assert [status(redis, j.id) for j in jobs] == ["queued"] * 4, proc.describe()
    assert set(q.get_job_ids()) == {j.id for j in jobs}
    assert FailedJobRegistry("default", connection=redis).count == 0


@pytest.mark.parametrize("strategy", ["hybrid", "auto"])
def test_max_jobs_per_child_replaces_children(redis: Redis, redis_url: str, strategy: str) -> None:
    """WORKER_MAX_JOBS_PER_CHILD=2: no child runs more than 2 jobs, whatever its threads (hybrid:
    1 child x 3 threads; a child stops taking jobs once 2 were sent to it, finishes them and
    exits while its replacement takes over) or its pool (auto: jobs hinted to its process pool).
    The replacements are counted."""
    port = free_port()
    if strategy == "hybrid":
        layout: tuple[str, ...] = ("--processes", "1", "--threads-per-process", "3")
    else:
        layout = ("--processes", "1")
    proc = start(redis_url, redis, strategy, *layout, "--max-jobs-per-child", "2", "--metrics-port", str(port))
    q = json_queue(redis)
    jobs = [q.enqueue(f"{J}.sleep_for", 0.2, meta={"poolq_hint": "cpu"}) for _ in range(9)]
    wait_ended(redis, [j.id for j in jobs], proc)
    records = finished_records(redis, jobs, proc.describe())
    per_child = Counter(r["pid"] for r in records)
    assert proc.pid not in per_child and max(per_child.values()) <= 2, per_child
    assert len(per_child) >= 5, per_child
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    replaced = sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "poolq_pool_children_replaced_total" and s.labels.get("reason") == "max_jobs"
    )
    assert replaced >= len(per_child) - 1, (replaced, per_child)
    assert stop(proc) == 0, proc.describe()


# ---------------------------------------------------------------------------------------------
# auto


def _scrape(port: int) -> dict[tuple[str, ...], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[tuple[str, ...], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "poolq_jobs_ended_total":
                out[(s.labels["strategy"], s.labels["pool"], s.labels["function"], s.labels["status"])] = s.value
    return out


def test_auto_learns_cpu_to_processes_io_to_threads_and_exports_it(redis: Redis, redis_url: str) -> None:
    """After a few runs of each (learning), cpu jobs run in child pids and io jobs in the
    worker's own pid, on several threads; the log states the rule and each class change; the
    jobs' metrics say which pool ran them."""
    port = free_port()
    proc = start(redis_url, redis, "auto", "--metrics-port", str(port))
    q = json_queue(redis)
    learn = [q.enqueue("worker.jobs.cpu", ms=30) for _ in range(6)] + [
        q.enqueue("worker.jobs.io", seconds=0.05) for _ in range(6)
    ]
    wait_ended(redis, [j.id for j in learn], proc)
    out = proc.output()
    assert "rule: a function runs in a process when its CPU time / wall time >=" in out, out
    assert "worker.jobs.cpu is now cpu-bound -> runs in processes" in out, out
    assert "worker.jobs.io is now io-bound -> runs in threads" in out, out

    cpu_jobs = [q.enqueue("worker.jobs.cpu", ms=30) for _ in range(6)]
    io_jobs = [q.enqueue("worker.jobs.io", seconds=0.3) for _ in range(6)]
    wait_ended(redis, [j.id for j in cpu_jobs + io_jobs], proc)
    cpu_recs = finished_records(redis, cpu_jobs, proc.describe())
    io_recs = finished_records(redis, io_jobs, proc.describe())
    children = descendants(proc.pid)
    assert {r["pid"] for r in cpu_recs} <= children and proc.pid not in {r["pid"] for r in cpu_recs}
    assert {r["pid"] for r in io_recs} == {proc.pid}
    assert len({r["thread"] for r in io_recs}) > 1

    ended = _scrape(port)
    # while it is new, one job of a function at a time may be measured in a thread (no child free)
    cpu_in_threads = ended.get(("auto", "thread", "worker.jobs.cpu", "finished"), 0)
    assert cpu_in_threads <= 1, ended
    assert ended[("auto", "process", "worker.jobs.cpu", "finished")] == 12 - cpu_in_threads, ended
    assert ended[("auto", "thread", "worker.jobs.io", "finished")] >= 6, ended
    assert stop(proc) == 0, proc.describe()


def test_auto_hints_override_the_measurement(redis: Redis, redis_url: str) -> None:
    """job.meta['poolq_hint'] and the @cpu_bound/@io_bound decorators win over what a function
    does: a sleeping job hinted cpu runs in a child, a spinning one hinted io in the worker."""
    proc = start(redis_url, redis, "auto")
    q = json_queue(redis)
    to_child = [
        q.enqueue("worker.jobs.io", seconds=0.05, meta={"poolq_hint": "cpu"}),
        q.enqueue(f"{J}.declared_cpu_but_sleeps", 0.05),
    ]
    to_worker = [
        q.enqueue("worker.jobs.cpu", ms=30, meta={"poolq_hint": "io"}),
        q.enqueue(f"{J}.declared_io_but_spins", 30),
    ]
    wait_ended(redis, [j.id for j in to_child + to_worker], proc)
    child_recs = finished_records(redis, to_child, proc.describe())
    worker_recs = finished_records(redis, to_worker, proc.describe())
    assert all(r["pid"] != proc.pid for r in child_recs), child_recs
    assert {r["pid"] for r in child_recs} <= descendants(proc.pid)
    assert {r["pid"] for r in worker_recs} == {proc.pid}, worker_recs
    assert stop(proc) == 0, proc.describe()


def test_auto_does_not_hoard_jobs_while_a_sub_pool_is_full(redis: Redis, redis_url: str) -> None:
    """Concurrency 6 = 1 process + 5 threads; seven 1.5 s cpu-hinted jobs. One runs in the child,
    at most ADMIT_AHEAD (2) more wait for it in the worker (though 5 slots are free); the others
    stay in the queue, where another worker could take them. All finish, one at a time."""
    proc = start(redis_url, redis, "auto", "--processes", "1", concurrency=6)
    q = json_queue(redis)
    jobs = [q.enqueue(f"{J}.sleep_for", 1.5, meta={"poolq_hint": "cpu"}) for _ in range(7)]
    started = StartedJobRegistry("default", connection=redis)
    wait_for(lambda: started.count >= 1, 10, what="a job to start")
    seen = []
    for _ in range(15):
        seen.append((started.count, q.count))
        time.sleep(0.1)
    assert max(s for s, _ in seen) <= 1 + ADMIT_AHEAD, seen
    assert min(n for _, n in seen) >= 7 - 1 - ADMIT_AHEAD, seen
    wait_ended(redis, [j.id for j in jobs], proc, timeout=45)
    records = finished_records(redis, jobs, proc.describe())
    assert overlap(records) == 1
    assert stop(proc) == 0, proc.describe()


def test_auto_hard_timeout_and_crash_in_its_process_pool(redis: Redis, redis_url: str) -> None:
    """A process-routed job that overruns is killed with its child; one that segfaults fails
    alone; thread-routed jobs beside them are untouched and the worker goes on."""
    proc = start(redis_url, redis, "auto", "--processes", "2")
    q = json_queue(redis)
    beside = q.enqueue("worker.jobs.io", seconds=3.0, meta={"poolq_hint": "io"})
    overdue = q.enqueue(f"{J}.sleep_for", 60, job_timeout=2, meta={"poolq_hint": "cpu"})
    segv = q.enqueue(f"{J}.segfault", meta={"poolq_hint": "cpu"})
    wait_ended(redis, [beside.id, overdue.id, segv.id], proc)
    text = failure(redis, overdue.id)
    m = re.search(r"pool child (\d+) was killed", text)
    assert "JobTimeoutException" in text and m, text
    assert pid_gone(int(m.group(1)))
    assert "ChildCrashed" in failure(redis, segv.id) and "SIGSEGV" in failure(redis, segv.id)
    assert finished_records(redis, [beside], proc.describe())[0]["pid"] == proc.pid
    after = enqueue_many(redis, f"{J}.sleep_for", 2, seconds=0.5)
    wait_ended(redis, [j.id for j in after], proc)
    finished_records(redis, after, proc.describe())
    assert stop(proc) == 0, proc.describe()


# ---------------------------------------------------------------------------------------------
# no worker needed


def test_registered_and_sized_from_the_cpus() -> None:
    assert {"hybrid", "auto"} <= set(STRATEGIES)
    cfg = StrategyConfig(available_cpus=2, concurrency=None, threads_per_cpu=8)
    assert hybrid_layout(cfg) == (2, 8, 16)
    assert auto_layout(cfg) == (16, 2, 18)
    explicit = StrategyConfig(available_cpus=4, concurrency=6, threads_per_cpu=8)
    assert hybrid_layout(explicit) == (4, 2, 6)
    assert auto_layout(explicit) == (2, 4, 6)
    one = StrategyConfig(available_cpus=8, concurrency=1, threads_per_cpu=8)
    assert hybrid_layout(one) == (1, 1, 1)
    assert auto_layout(one)[2] == 2  # one thread and one process at least
    mine = StrategyConfig(available_cpus=2, concurrency=None, threads_per_cpu=8, processes=3, threads_per_process=5)
    assert hybrid_layout(mine) == (3, 5, 15)
    assert auto_layout(mine) == (16, 3, 19)


def _observe(router: Router, fn: str, pool: str, cpu_ms: float, wall_ms: float, n: int = 1) -> None:
    for _ in range(n):
        router.observe(fn, pool, cpu_ms / 1000, wall_ms / 1000)


def test_routing_rule_learns_with_hysteresis() -> None:
    changes: list[tuple[str, str | None, str]] = []
    router = Router(lambda f, old, new, _p: changes.append((f, old, new)))
    # new functions are measured in processes until PROBE_RUNS runs
    _observe(router, "f.cpu", "process", 20, 21, PROBE_RUNS - 1)
    assert router.profiles["f.cpu"].klass is None
    _observe(router, "f.cpu", "process", 20, 21)
    _observe(router, "f.io", "process", 0.2, 50, PROBE_RUNS)
    _observe(router, "f.tiny", "process", 0.3, 0.35, PROBE_RUNS)  # CPU-bound but too short for a hop
    _observe(router, "f.mixed", "process", 10, 30, PROBE_RUNS)  # ratio 0.33 < 0.5
    assert {f: p.klass for f, p in router.profiles.items()} == {
        "f.cpu": CPU,
        "f.io": IO,
        "f.tiny": IO,
        "f.mixed": IO,
    }
    # hysteresis: a cpu function stays cpu between IO_RATIO and CPU_RATIO, leaves below IO_RATIO
    _observe(router, "f.cpu", "process", 9, 20, 10)  # 0.45
    assert router.profiles["f.cpu"].klass == CPU
    _observe(router, "f.cpu", "process", 5, 20, 10)  # 0.25
    assert router.profiles["f.cpu"].klass == IO
    # in a thread the ratio is understated (GIL waits): a low one never demotes; a high one
    # promotes, but not against a recent process measurement (which is clean)
    _observe(router, "f.io", "thread", 30, 31, 3)
    assert router.profiles["f.io"].klass == IO
    _observe(router, "f.io", "thread", 30, 31, REPROBE_EVERY // 4)
    assert router.profiles["f.io"].klass == CPU
    assert ("f.cpu", CPU, IO) in changes and ("f.io", IO, CPU) in changes
    assert CPU_RATIO == 0.5 and MIN_CPU_SECONDS == 0.002


def test_early_verdict_from_a_first_run_in_progress() -> None:
    """A new function whose first run has gone on for EARLY_SECONDS is classed from its CPU so
    far, so its other jobs need not wait for that run to end."""
    changes: list[tuple[str, str | None, str]] = []
    router = Router(lambda f, old, new, _p: changes.append((f, old, new)))
    router.profiles["f.slow_io"] = Profile()
    router.profiles["f.slow_cpu"] = Profile()
    t0 = time.perf_counter()
    router.running["f.slow_io"] = {1: RunInProgress(t0 - 2 * EARLY_SECONDS, lambda: 0.01)}
    router.running["f.slow_cpu"] = {2: RunInProgress(t0 - 2 * EARLY_SECONDS, lambda: 1.9 * EARLY_SECONDS)}
    router.running["f.young"] = {3: RunInProgress(t0, lambda: 0.0)}
    router.profiles["f.young"] = Profile()
    assert router.early("f.slow_io") and router.early("f.slow_cpu")
    assert not router.early("f.young")  # too young to tell
    assert changes == [("f.slow_io", None, IO), ("f.slow_cpu", None, CPU)]
    assert "in progress" in router.profiles["f.slow_io"].basis


def test_new_flags_are_validated_in_one_line() -> None:
    import subprocess
    import sys

    for args, name in ((["--processes", "-1"], "WORKER_PROCESSES"), (["--strategy", "hybird"], "hybird")):
        r = subprocess.run(
            [sys.executable, "-m", "worker", *args, "--check"], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 2, r
        assert len(r.stderr.strip().splitlines()) == 1 and name in r.stderr, r.stderr


def test_hints_parse() -> None:
    assert parse_hint("cpu") == CPU and parse_hint("Process") == CPU
    assert parse_hint("io") == IO and parse_hint(" thread ") == IO
    assert parse_hint("gpu") is None and parse_hint(3) is None and parse_hint(None) is None
