"""`docker compose up` for real: the whole stack, built and run under a Docker engine.

Where no engine runs, ../shared/tools/docker-sandbox starts one (with stand-in base images
built from Debian packages). The test skips, saying why, only where no engine can be had.
Grafana has no stand-in image; its dashboards are tested in test_dashboards.py instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = ROOT.parent / "shared" / "tools" / "docker-sandbox"
PROJECT = "poolq-smoke"
SERVICES = ("redis", "worker-thread", "worker-process", "producer", "prometheus")

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(1500)]


def _engine_up() -> bool:
    return (
        shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    )


def _ensure_engine() -> str | None:
    """None when an engine runs (starting the sandbox if needed), else the reason to skip."""
    if _engine_up() and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        if SANDBOX.exists():  # stand-ins and the wheelhouse are still needed without a registry
            subprocess.run(["bash", str(SANDBOX), "up", str(ROOT)], capture_output=True, timeout=1800)
        return None
    if not SANDBOX.exists():
        return f"no Docker engine running and no {SANDBOX} to start one"
    if os.geteuid() != 0:
        return "no Docker engine running and docker-sandbox needs root to start one"
    r = subprocess.run(["bash", str(SANDBOX), "up", str(ROOT)], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0 or not _engine_up():
        return f"docker-sandbox could not start an engine: {r.stderr.strip()[-500:]}"
    return None


def compose(*args: str, env: dict[str, str], timeout: float = 900, check: bool = True) -> str:
    cmd = ["bash", str(SANDBOX), "compose", str(ROOT), "--", "-p", PROJECT, *args]
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    while time.monotonic() < deadline and len(targets_up()) < 2:
        time.sleep(2)
    assert len(targets_up()) == 2, prom_query(port, "up")

    # Both workers finished demo jobs.
    def finished() -> dict[str, float]:
        res = prom_query(port, 'sum by (strategy) (poolq_jobs_ended_total{status="finished"})')
        return {r["metric"]["strategy"]: float(r["value"][1]) for r in res}

    deadline = time.monotonic() + 180
    done: dict[str, float] = {}
    while time.monotonic() < deadline:
        done = finished()
        if done.get("thread", 0) > 0 and done.get("process", 0) > 0:
            break
        time.sleep(3)
    assert done.get("thread", 0) > 0 and done.get("process", 0) > 0, done

    # The pools follow the CPU quota (WORKER_CPUS=1), not the host's cores.
    sizes = {r["metric"]["strategy"]: (float(r["value"][1])) for r in prom_query(port, "poolq_available_cpus")}
    assert sizes == {"thread": 1.0, "process": 1.0}, sizes
    pools = {r["metric"]["strategy"]: float(r["value"][1]) for r in prom_query(port, "poolq_pool_size")}
    assert pools["process"] == 1.0 and pools["thread"] >= 1.0, pools
    log = containers(client)["worker-process"].logs().decode()
    assert "available_cpus=1" in log and "cgroup" in log, log[-2000:]
    print(f"compose smoke: states={states} finished={done} available_cpus={sizes} pool_size={pools}")
