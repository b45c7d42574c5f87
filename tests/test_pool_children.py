"""What a pool child carries: the standard library, the allowlist and the job's own module.

A child never talks to Redis (the parent owns every write), so it must not pay for rq, redis-py
and hiredis either: not through the forkserver's preloads, not through the hint API a job module
imports (``worker.composite``). Checked from inside a real child: the job reports the modules
loaded in the process that ran it.
"""

from __future__ import annotations

import pytest
from redis import Redis
from support.rq_jobs import finished_records, json_queue
from support.workers import assert_ok, run_worker

from worker.strategies import STRATEGIES

JOB = "tests.composite_jobs.loaded_heavy_modules"


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_a_pool_child_imports_no_rq_or_redis(redis: Redis, redis_url: str, strategy: str) -> None:
    q = json_queue(redis)
    jobs = [q.enqueue(JOB, meta={"poolq_hint": "cpu"}) for _ in range(2)]  # auto: to its process pool
    run = assert_ok(
        run_worker(
            redis_url,
            strategy,
            2,
            extra_args=("--allowed-functions", "tests.composite_jobs.*", "--processes", "1"),
        )
    )
    for record in finished_records(redis, jobs, run.describe()):
        if record["pid"] == run.pid:
            continue  # ran in the worker itself (thread, inline): it has rq, of course
        assert record["modules"] == [], f"{strategy}: pool child {record['pid']} loaded {record['modules']}"
