"""Chaos (issue 3): kill -9 the worker at random 1-3 s intervals during >= 2,000 short jobs.

A supervisor loop starts a worker (non-burst, in its own process group), lets it run for a
random 1-3 s, SIGKILLs the whole group (worker, forkserver, pool children: a power loss) and
starts the next one, rotating the thread, process, hybrid and auto strategies (so each holds
jobs when it is killed, and recovers jobs other strategies' workers held). Once every job has ended, or
the chaos phase has used its time budget, a last worker runs undisturbed until every job is
finished or failed, with a hard deadline. Then, with stock RQ:

- 0 jobs lost: every job is ``finished``, or ``failed`` with a reason in its result;
- executions per job, counted by the job itself in a file (``tests.jobs.record``), outside Redis:
  how many ran twice (at-least-once means some do), none more than 3 times (workers run with
  ``WORKER_MAX_REDELIVERIES=2``: a job caught by a third kill fails as abandoned, with a reason).

Run with ``-s`` to see the figures (jobs lost, run twice, max executions, kills, total time).
Bounded: the job count, the kill count, the chaos phase and the final drain are all capped.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from typing import Any

import pytest
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from support.rq_jobs import executions, outcome
from support.workers import ALLOW_ARGS, kill9_group, settings_env, start_worker, stop, wait_registered

JOBS = 2000
JOB_SECONDS = 0.1  # each job sleeps this long after recording its execution
CONCURRENCY = 4
CHAOS_BUDGET_SECONDS = 110.0  # the kill loop stops after this long even if jobs are left
MAX_KILLS = 80
FINAL_DEADLINE_SECONDS = 60.0  # the last, undisturbed worker must end every job within this
# At most 1 + MAX_REDELIVERIES executions per job, by the worker's own bound: the issue's "none
# more than 3 times". A job caught by a third kill fails as abandoned (failed, with a reason).
MAX_REDELIVERIES = 2
# Fast failure detection so that jobs of killed workers come back while the chaos goes on.
ENV = settings_env(
    worker_ttl_seconds=3, heartbeat_interval_seconds=1, recovery_interval_seconds=0.5, max_redeliveries=MAX_REDELIVERIES
)


def _statuses(conn: Redis[bytes], ids: list[str]) -> list[str]:
    with conn.pipeline(transaction=False) as p:
        for i in ids:
            p.hget(f"rq:job:{i}", "status")
        return [s.decode() if s is not None else "missing" for s in p.execute()]


def _ended(conn: Redis[bytes], ids: list[str]) -> int:
    return sum(s in ("finished", "failed") for s in _statuses(conn, ids))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chaos_kill9_at_random_intervals_loses_no_job(redis_url: str, redis: Redis[bytes], tmp_path: Any) -> None:
    conn = redis
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    runs = str(tmp_path / "executions.log")
    q = Queue("default", connection=conn, serializer=JSONSerializer)
    ids = [f"chaos-{i:05d}" for i in range(JOBS)]
    for k in range(0, JOBS, 500):
        q.enqueue_many(
            [
                Queue.prepare_data("tests.jobs.record", args=(runs, i, JOB_SECONDS), job_id=i, timeout=60)
                for i in ids[k : k + 500]
            ]
        )
    assert q.count == JOBS

    t0 = time.monotonic()
    kills = 0
    lifetimes: list[float] = []
    strategies = ("thread", "process", "hybrid", "auto")
    while time.monotonic() - t0 < CHAOS_BUDGET_SECONDS and kills < MAX_KILLS:
        strategy = strategies[kills % len(strategies)]
        worker = start_worker(redis_url, strategy, CONCURRENCY, extra_args=ALLOW_ARGS, env=ENV)
        life = rng.uniform(1.0, 3.0)
        time.sleep(life)
        assert worker.poll() is None, f"worker exited by itself: {worker.describe()}"
        kill9_group(worker)
        kills += 1
        lifetimes.append(life)
        if _ended(conn, ids) == JOBS:
            break
    chaos_seconds = time.monotonic() - t0
    ended_in_chaos = _ended(conn, ids)

    final = start_worker(redis_url, "thread", CONCURRENCY, extra_args=ALLOW_ARGS, env=ENV)
    wait_registered(conn, final)
    deadline = time.monotonic() + FINAL_DEADLINE_SECONDS
    while _ended(conn, ids) < JOBS and time.monotonic() < deadline:
        assert final.poll() is None, final.describe()
        time.sleep(0.5)
    total_seconds = time.monotonic() - t0
    assert stop(final, timeout=30) == 0, final.describe()

    statuses = dict(zip(ids, _statuses(conn, ids), strict=True))
    counts = Counter(statuses.values())
    failed_registry = set(FailedJobRegistry("default", connection=conn).get_job_ids())
    finished_registry = set(FinishedJobRegistry("default", connection=conn).get_job_ids())
    failed_without_reason = []
    for i, s in statuses.items():
        if s == "failed":
            o = outcome(conn, i)
            if not o.exc_string.strip() or i not in failed_registry:
                failed_without_reason.append(i)
    lost = [i for i, s in statuses.items() if s not in ("finished", "failed")]
    execs = executions(runs)
    per_job = Counter(execs[i] for i in ids)
    never_ran_but_finished = [i for i, s in statuses.items() if s == "finished" and execs[i] == 0]
    ran_twice = sum(n for k, n in per_job.items() if k == 2)
    more = sum(n for k, n in per_job.items() if k > 2)
    max_exec = max(execs[i] for i in ids)
    reasons = Counter(
        outcome(conn, i).exc_string.strip().splitlines()[-1][:100] for i, s in statuses.items() if s == "failed"
    )

    print(
        f"\nchaos (seed {seed}): {JOBS} jobs, {kills} kill -9 of the worker's process group "
        f"(lifetimes {min(lifetimes):.1f}-{max(lifetimes):.1f} s), chaos phase {chaos_seconds:.0f} s "
        f"({ended_in_chaos} jobs ended during it), total {total_seconds:.0f} s\n"
        f"  statuses: {dict(counts)}; finished registry {len(finished_registry)}, failed registry "
        f"{len(failed_registry)}\n"
        f"  jobs lost: {len(lost)}; failed without a reason: {len(failed_without_reason)}\n"
        f"  executions per job: {dict(sorted(per_job.items()))}; ran twice: {ran_twice}; "
        f"more than twice: {more}; max executions: {max_exec}\n"
        f"  failure reasons: {dict(reasons)}"
    )
    assert kills >= 10, f"only {kills} kills: the chaos phase did not stress the worker"
    assert not lost, f"{len(lost)} jobs lost, e.g. {[(i, statuses[i]) for i in lost[:10]]}\n{final.describe()}"
    assert not failed_without_reason, failed_without_reason[:10]
    assert not never_ran_but_finished, never_ran_but_finished[:10]
    worst = [i for i in ids if execs[i] == max_exec][:10]
    assert max_exec <= 1 + MAX_REDELIVERIES == 3, f"a job ran {max_exec} times: {worst}"
    assert StartedJobRegistry("default", connection=conn).get_job_ids() == []
    assert q.count == 0
