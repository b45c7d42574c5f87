"""`docker compose up` for real: the whole stack, built and run under a Docker engine.

Where no engine runs, ../shared/tools/docker-sandbox starts one (with stand-in base images
built from Debian packages). The test skips, saying why, only where no engine can be had.
Grafana has no stand-in image; its dashboards are tested in test_dashboards.py instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from support import docker_engine
from support.base import free_port

ROOT = docker_engine.ROOT
SANDBOX = docker_engine.SANDBOX
PROJECT = "poolq-smoke"
# One worker service per pool strategy, each consuming the queue named after its strategy.
WORKERS = {"worker-thread": "thread", "worker-process": "process", "worker-hybrid": "hybrid", "worker-auto": "auto"}
SERVICES = ("redis", *WORKERS, "producer", "prometheus")

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(1500)]


def test_every_worker_service_is_wired_like_the_others() -> None:
    """No engine needed: compose.yaml's worker services share the worker template (image, health
    check, stop grace, Redis dependency), each has the CPU quota and its own queue; the demo
    feeds every queue; Prometheus' DNS service discovery names every service; the producer and
    Prometheus wait for all of them; the producer's metrics URLs name each one by strategy."""
    import yaml

    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = doc["services"]
    assert {n for n in services if n.startswith("worker-")} == set(WORKERS)
    template = services["worker-thread"]
    for name, strategy in WORKERS.items():
        svc = services[name]
        for key in ("image", "build", "healthcheck", "stop_grace_period", "stop_signal", "environment"):
            assert svc[key] == template[key], (name, key)
        assert svc["depends_on"] == {"redis": {"condition": "service_healthy"}}, name
        assert svc["cpus"] == "${WORKER_CPUS:-2}", name
        assert svc["command"] == ["python", "-m", "worker", "--strategy", strategy, "--queues", strategy], name
    producer = services["producer"]
    demo_queues = producer["command"][producer["command"].index("--queues") + 1].split(",")
    assert sorted(demo_queues) == sorted(WORKERS.values())
    for dependent in ("producer", "prometheus"):
        deps = services[dependent]["depends_on"]
        assert all(deps.get(n) == {"condition": "service_healthy"} for n in WORKERS), (dependent, deps)
    from producer.options import parse_worker_metrics

    urls = parse_worker_metrics(producer["environment"]["PRODUCER_WORKER_METRICS"])
    assert urls == {s: [f"http://{n}:8000/metrics"] for n, s in WORKERS.items()}, urls
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "poolq-worker"]
    (sd,) = job["dns_sd_configs"]
    assert sorted(sd["names"]) == sorted(WORKERS) and sd["port"] == 8000


_engine_up = docker_engine.engine_up
_ensure_engine = docker_engine.ensure_engine  # test_compose_scale.py uses it too


def compose(*args: str, env: dict[str, str], timeout: float = 900, check: bool = True, project: str = PROJECT) -> str:
    """``docker compose -p <project> <args>`` run through ``SANDBOX``: its output, or a failed assertion."""
    cmd = ["bash", str(SANDBOX), "compose", str(ROOT), "--", "-p", project, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def prom_query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


free_port = free_port


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, Any]]:
    reason = _ensure_engine()
    if reason:
        pytest.skip(reason)
    import docker

    port = free_port()
    env = {**os.environ, "WORKER_CPUS": "1", "PROMETHEUS_PORT": str(port), "DEMO_RATE": "10"}
    env.pop("REDIS_URL", None)
    try:
        compose("up", "--build", "-d", env=env, timeout=1500)
        client = docker.from_env()
        yield {"port": port, "env": env, "docker": client}
    finally:
        logs = compose("logs", "--no-color", "--tail", "40", env=env, check=False, timeout=120)
        print(logs[-6000:])
        compose("down", "-v", "--remove-orphans", env=env, check=False, timeout=300)


def containers(client: Any) -> dict[str, Any]:
    out = {}
    for c in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={PROJECT}"}):
        out[c.labels["com.docker.compose.service"]] = c
    return out


def test_services_healthy_targets_up_and_demo_jobs_done(stack: dict[str, Any]) -> None:
    client, port = stack["docker"], stack["port"]

    def health() -> dict[str, str]:
        states = {}
        for name, c in containers(client).items():
            c.reload()
            h = c.attrs["State"].get("Health", {}).get("Status")
            states[name] = h or c.attrs["State"]["Status"]
        return states

    deadline = time.monotonic() + 300
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = health()
        healthy = [s for s in SERVICES if s != "producer" and states.get(s) == "healthy"]
        if len(healthy) == len(SERVICES) - 1 and states.get("producer") == "running":
            break
        time.sleep(3)
    assert all(states.get(s) == "healthy" for s in SERVICES if s != "producer"), states
    assert states.get("producer") == "running", states

    # Every worker target is scraped and up.
    def targets_up() -> list[dict[str, Any]]:
        return [t for t in prom_query(port, 'up{job="poolq-worker"}') if t["value"][1] == "1"]

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(targets_up()) < len(WORKERS):
        time.sleep(2)
    up = targets_up()
    assert len(up) == len(WORKERS), prom_query(port, "up")
    assert {t["metric"]["service"] for t in up} == set(WORKERS), up

    # Every worker finished demo jobs from its own queue.
    def finished() -> dict[str, float]:
        res = prom_query(port, 'sum by (strategy, queue) (poolq_jobs_ended_total{status="finished"})')
        own = [r for r in res if r["metric"]["queue"] == r["metric"]["strategy"]]
        return {r["metric"]["strategy"]: float(r["value"][1]) for r in own}

    deadline = time.monotonic() + 180
    done: dict[str, float] = {}
    while time.monotonic() < deadline:
        done = finished()
        if all(done.get(s, 0) > 0 for s in WORKERS.values()):
            break
        time.sleep(3)
    assert all(done.get(s, 0) > 0 for s in WORKERS.values()), done

    # The pools follow the CPU quota (WORKER_CPUS=1), not the host's cores: thread 1 x 8 threads,
    # process 1 child, hybrid 1 child x 8 threads, auto 8 threads + 1 child.
    sizes = {r["metric"]["strategy"]: (float(r["value"][1])) for r in prom_query(port, "poolq_available_cpus")}
    assert sizes == dict.fromkeys(WORKERS.values(), 1.0), sizes
    pools = {r["metric"]["strategy"]: float(r["value"][1]) for r in prom_query(port, "poolq_pool_size")}
    assert pools == {"thread": 8.0, "process": 1.0, "hybrid": 8.0, "auto": 9.0}, pools
    children = {
        r["metric"]["strategy"]: float(r["value"][1])
        for r in prom_query(port, 'poolq_worker_tree_processes{role="pool"}')
    }
    assert children.get("process") == children.get("hybrid") == children.get("auto") == 1.0, children
    for name in WORKERS:
        log = containers(client)[name].logs().decode()
        assert "available_cpus=1" in log and "cgroup" in log, (name, log[-2000:])
    auto_log = containers(client)["worker-auto"].logs().decode()
    assert "auto: a thread pool of 8 and a process pool of 1" in auto_log, auto_log[-2000:]
    assert "hybrid pool: 1 processes x 8 threads" in containers(client)["worker-hybrid"].logs().decode()

    # auto learned the demo's functions: its jobs ran in both of its sub-pools.
    def auto_pools() -> set[str]:
        res = prom_query(port, 'sum by (pool) (poolq_jobs_ended_total{strategy="auto", status="finished"})')
        return {r["metric"]["pool"] for r in res if float(r["value"][1]) > 0}

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and auto_pools() != {"thread", "process"}:
        time.sleep(3)
    assert auto_pools() == {"thread", "process"}, auto_pools()
    print(
        f"compose smoke: states={states} finished={done} available_cpus={sizes} pool_size={pools} "
        f"children={children} auto pools={auto_pools()}"
    )
