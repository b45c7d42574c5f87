"""`docker compose up --scale worker-process=3` for real (issue 8): three process-worker
replicas behind one queue, found by Prometheus' DNS service discovery, each with its own worker
name, and the dashboards' sums adding the replicas up.

Runs under a real engine like test_compose.py (its own compose project, ``poolq-scale``, always
taken down with its volumes); skips, saying why, only where no engine can be had.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

try:
    from tests import test_compose as smoke
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    import test_compose as smoke  # type: ignore[no-redef]

PROJECT = "poolq-scale"
REPLICAS = 3
JOBS = 60

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(1500)]


def compose(*args: str, env: dict[str, str], timeout: float = 900, check: bool = True) -> str:
    return smoke.compose(*args, env=env, timeout=timeout, check=check, project=PROJECT)


def wait(predicate: Any, timeout: float, what: str) -> Any:
    """Polls ``predicate`` (a service still starting, e.g. Prometheus refusing connections, is a retry)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except OSError as e:
            last = e
        else:
            if last:
                return last
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


@pytest.fixture(scope="module")
def scaled() -> Iterator[dict[str, Any]]:
    reason = smoke._ensure_engine()
    if reason:
        pytest.skip(reason)
    port = smoke.free_port()
    env = {**os.environ, "WORKER_CPUS": "1", "PROMETHEUS_PORT": str(port)}
    env.pop("REDIS_URL", None)
    # Prometheus waits for every worker service to be healthy, so all of them run.
    services = ("redis", *smoke.WORKERS, "prometheus")
    try:
        compose("up", "--build", "-d", "--scale", f"worker-process={REPLICAS}", *services, env=env, timeout=1500)
        yield {"port": port, "env": env}
    finally:
        logs = compose("logs", "--no-color", "--tail", "20", env=env, check=False, timeout=120)
        print(logs[-5000:])
        compose("down", "-v", "--remove-orphans", env=env, check=False, timeout=300)


def q(port: int, expr: str) -> list[dict[str, Any]]:
    return smoke.prom_query(port, expr)


def test_every_replica_is_scraped_named_apart_and_summed(scaled: dict[str, Any]) -> None:
    port, env = scaled["port"], scaled["env"]

    # Prometheus finds every replica through the service name (DNS SD), each one up.
    def targets() -> list[str] | None:
        up = q(port, 'up{job="poolq-worker", service="worker-process"} == 1')
        return [t["metric"]["instance"] for t in up] if len(up) == REPLICAS else None

    instances = wait(targets, 240, f"{REPLICAS} worker-process targets up")
    assert len(set(instances)) == REPLICAS

    # Worker names are <hostname>.<pid>: the container hostnames differ, so every replica has its own.
    lua = (
        "local out = {} for _, k in ipairs(redis.call('SMEMBERS', 'rq:workers')) do "
        "table.insert(out, k .. '=' .. (redis.call('HGET', k, 'queues') or '')) end return out"
    )
    rows = compose("exec", "-T", "redis", "redis-cli", "--raw", "EVAL", lua, "0", env=env).split()
    by_queue = [tuple(r.rsplit("=", 1)) for r in rows if r.startswith("rq:worker:")]
    process_workers = [n for n, queues in by_queue if queues == "process"]
    assert len(process_workers) == len(set(process_workers)) == REPLICAS, rows
    assert sorted(queues for _, queues in by_queue if queues != "process") == sorted(
        s for s in smoke.WORKERS.values() if s != "process"
    ), rows  # one worker of every other service

    # Jobs on the one queue: every replica takes some; the dashboards' sums add them up exactly.
    script = (
        "import os, time, redis, rq\n"
        "from rq.serializers import JSONSerializer\n"
        "c = redis.Redis.from_url(os.environ['REDIS_URL'])\n"
        "q = rq.Queue('process', connection=c, serializer=JSONSerializer)\n"
        f"jobs = [q.enqueue('worker.jobs.cpu', ms=200) for _ in range({JOBS})]\n"
        "deadline = time.time() + 300\n"
        "while time.time() < deadline and any(j.get_status(refresh=True) != 'finished' for j in jobs):\n"
        "    time.sleep(0.5)\n"
        "print('PIDS', len({j.return_value()['pid'] for j in jobs}))\n"
    )
    out = compose("run", "--rm", "--no-deps", "-T", "worker-thread", "python", "-c", script, env=env, timeout=600)
    assert "PIDS" in out, out

    def finished_total() -> float | None:
        res = q(port, 'sum by (strategy) (poolq_jobs_ended_total{strategy="process", status="finished"})')
        return float(res[0]["value"][1]) if res and float(res[0]["value"][1]) >= JOBS else None

    assert wait(finished_total, 60, f"{JOBS} finished jobs summed over the replicas") == JOBS
    expr = 'sum by (instance) (poolq_jobs_ended_total{strategy="process", status="finished"})'
    per_instance = wait(lambda: (r := q(port, expr)) and sum(float(x["value"][1]) for x in r) == JOBS and r, 30, expr)
    assert len(per_instance) == REPLICAS and all(float(r["value"][1]) > 0 for r in per_instance), per_instance
    # Pool sizes and CPUs add up over the replicas (1 CPU each: 1 child each); queue sizes, which
    # every replica exports, are read with max (as the dashboards do), not summed.
    pools = q(port, 'sum by (strategy) (poolq_pool_size{strategy="process"})')
    assert float(pools[0]["value"][1]) == REPLICAS, pools
    expr = 'max by (queue, state) (poolq_queue_jobs{queue="process", state="finished"})'
    wait(lambda: (r := q(port, expr)) and float(r[0]["value"][1]) == JOBS, 30, f"{expr} == {JOBS}")
    print(f"scale-out: {REPLICAS} replicas {sorted(instances)}; per replica {[r['value'][1] for r in per_instance]}")
