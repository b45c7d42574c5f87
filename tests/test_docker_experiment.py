"""``python -m producer experiment --docker`` for real: worker containers under CPU and memory
limits, started and removed by the producer through the Docker SDK (issue 9).

- Without an engine: every bad input gets one line and exit code 2 before anything starts
  (flags, limits' syntax, floors, an engine that does not answer).
- Under an engine (docker-sandbox where none runs; skipped, saying why, only where none can be
  had): a two-cell experiment at ``--cpus 1`` and ``--cpus 2`` runs real containers whose
  workers detect 1 and 2 CPUs and size their process pools to match; the results hold the
  containers' own stats; afterwards nothing labelled by the experiment remains. Bad input that
  needs the engine to be judged (missing image, more CPUs than it has, unknown network) is
  refused before anything is created. SIGINT in the middle of a cell removes everything too.

Nothing here asserts how fast anything is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import docker_engine
from support.base import one_line, run_producer

from producer.containers import LABEL, leftovers

ROOT = docker_engine.ROOT
IMAGE = "poolq:experiment-test"  # built from this checkout, apart from compose's poolq:local
engine_test = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(1800)]


def producer(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run_producer(*args, env=env, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# bad input, no engine needed


BAD = {
    "cpus not a number": (["--docker", "--cpus", "two"], "--cpus 'two': expected a number"),
    "cpus zero": (["--docker", "--cpus", "0"], "at least 0.1"),
    "cpus below the floor": (["--docker", "--cpus", "0.05"], "at least 0.1"),
    "cpus too precise": (["--docker", "--cpus", "1.255"], "two decimals"),
    "cpus twice": (["--docker", "--cpus", "1,2,1"], "twice"),
    "cpus empty": (["--docker", "--cpus", ","], "at least one CPU limit"),
    "memory syntax": (["--docker", "--memory", "lots"], "expected a size"),
    "memory unit": (["--docker", "--memory", "512x"], "expected a size"),
    "memory below the floor": (["--docker", "--memory", "64m"], "below the floor of 128 MiB"),
    "network without redis": (["--docker", "--network", "poolq_default"], "--network needs --redis-url"),
    "redis without network": (["--docker", "--redis-url", "redis://redis:6379/0"], "needs --network"),
    "docker and local": (["--docker", "--local"], "exclude each other"),
    "docker and worker metrics": (
        ["--docker", "--worker-metrics", "thread=http://127.0.0.1:9/metrics"],
        "--worker-metrics is for running workers",
    ),
    "cpus without docker": (["--local", "--cpus", "1"], "--cpus is for container experiments: add --docker"),
    "image without docker": (["--local", "--image", "poolq:local"], "--image is for container experiments"),
    "health timeout": (["--docker", "--health-timeout", "0"], "--health-timeout"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_before_anything_starts(case: str, tmp_path: Path) -> None:
    argv, message = BAD[case]
    # No engine at this address: the flags must be judged before the producer looks for one.
    proc = producer("experiment", *argv, "--out", str(tmp_path / "out"), env={"DOCKER_HOST": "unix:///nonexistent"})
    assert proc.returncode == 2, proc.stderr
    assert message in one_line(proc.stderr)
    assert not (tmp_path / "out").exists()


def test_no_engine_reachable(tmp_path: Path) -> None:
    """A real client against a socket nothing listens on: one line saying so and how to fix it."""
    sock = tmp_path / "docker.sock"
    proc = producer("experiment", "--docker", "--out", str(tmp_path / "out"), env={"DOCKER_HOST": f"unix://{sock}"})
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert "no Docker engine reachable" in line and "DOCKER_HOST" in line, line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# under an engine


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    reason = docker_engine.ensure_engine()
    if reason:
        pytest.skip(reason)
    import docker

    client = docker.from_env(timeout=300)
    docker_engine.build_image(client, IMAGE)
    yield client
    client.close()


def volumes_without_compose(client: Any) -> set[str]:
    """Volumes no compose project owns (another test's compose stack may add its own meanwhile)."""
    return {v.name for v in client.volumes.list() if "com.docker.compose.project" not in (v.attrs.get("Labels") or {})}


def every_leftover(client: Any) -> dict[str, list[str]]:
    return {k: v for k, v in leftovers(client).items() if v}


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_two_cells_follow_the_cpu_limit_and_leave_nothing_behind(engine: Any, tmp_path: Path) -> None:
    client = engine
    volumes_before = volumes_without_compose(client)
    out = tmp_path / "exp"
    proc = producer(
        "experiment", "--docker", "--image", IMAGE, "--cpus", "1,2", "--memory", "384m",
        "--strategies", "process", "--workloads", "cpu", "--count", "40", "--param", "cpu.ms=10",
        "--metrics-settle", "2.5", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads((out / "results.json").read_text())
    run_id = results["meta"]["run_id"]
    assert results["meta"]["mode"] == "docker"
    assert results["meta"]["docker"]["cpu_limits"] == [1.0, 2.0]
    cells = {c["cpu_limit"]: c for c in results["cells"]}
    assert sorted(cells) == [1.0, 2.0]
    for cpus, c in cells.items():
        n = int(cpus)
        # The worker in the container saw the quota, not the host's CPUs, and sized its pool from it.
        assert c["available_cpus"] == n, c
        assert c["available_cpus_after"] == n, c
        assert c["pool_size"] == n and c["registered_concurrency"] == n and c["concurrency"] == n, c
        assert c["finished"] == 40 and not c["problems"], c
        # Its jobs ran in as many processes as the pool has (return values carry their pids).
        assert c["distinct_pids"] == n, c
        # The container's own stats from the Docker API, beside the worker's metrics.
        assert c["container_mem_limit_mib"] == pytest.approx(384.0), c
        assert 0 < c["container_mem_idle_mib"] <= c["container_mem_peak_mib"] < 384.0, c
        assert c["cpu_s"] > 0 and c["container_stats_samples"] >= 1, c
        assert c["peak_pss_mib"] > 0 and c["idle_pss_mib"] > 0, c
        assert c["worker_exit"] == 0 and c["oom_killed"] is False, c
        assert c["jobs_per_s_per_cpu"] == pytest.approx(c["throughput_jobs_s"] / cpus)
        assert (out / "logs" / f"{c['container']}.log").exists()
    # The report and the plan use the CPU limit as a dimension.
    report = (out / "report.md").read_text()
    assert "## Throughput vs CPU limit" in report and "| cpu | process | 2 | 2 | 2 |" in report, report[:3000]
    plan = producer("plan", "--results", str(out), "--arrival-rate", "5", "--workload", "cpu", "--json")
    assert plan.returncode == 0, plan.stderr
    options = json.loads(plan.stdout)["options"]
    assert sorted(o["cpu_limit"] for o in options) == [1.0, 2.0]
    for o in options:
        assert o["cpu_per_replica"] == o["cpu_limit"]
        assert o["mem_per_replica_mib"] >= 128 and o["mem_per_replica_mib"] >= o["container_mem_peak_mib"]
    # Nothing of the experiment remains: no container, network or volume with its label, and no
    # anonymous volume left by its Redis.
    assert leftovers(client, run_id) == {"containers": [], "networks": [], "volumes": []}
    assert volumes_without_compose(client) - volumes_before == set()


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(600)
def test_bad_input_judged_by_the_engine(engine: Any, tmp_path: Path) -> None:
    """Refused before anything is created: a missing image (with how to build it), more CPUs than
    the engine has, a network that does not exist."""
    client = engine
    before = every_leftover(client)
    ncpu = int(client.info()["NCPU"])
    cases = [
        (["--image", "poolq-missing:nope"], "image poolq-missing:nope not found", "docker build -t poolq-missing:nope"),
        (["--image", IMAGE, "--cpus", f"1,{ncpu + 1}"], f"--cpus {ncpu + 1}", f"only {ncpu} CPU"),
        (["--image", IMAGE, "--network", "poolq-no-such-net", "--redis-url", "redis://redis:6379/0"],
         "no such Docker network", "poolq-no-such-net"),
    ]  # fmt: skip
    for argv, first, second in cases:
        proc = producer("experiment", "--docker", *argv, "--out", str(tmp_path / "out"))
        assert proc.returncode == 2, proc.stderr
        line = one_line(proc.stderr)
        assert first in line and second in line, line
        assert not (tmp_path / "out").exists()
    assert every_leftover(client) == before


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(900)
def test_sigint_mid_cell_removes_everything(engine: Any, tmp_path: Path) -> None:
    """Ctrl-C while a cell's jobs run: the producer removes its containers and network, writes
    what it measured and exits 130."""
    client = engine
    out = tmp_path / "exp"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("PRODUCER_")}
    # 2,000 jobs of 0.2 s on a one-process pool: ~400 s of work, far more than the test waits.
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer", "experiment", "--docker", "--image", IMAGE, "--cpus", "1",
         "--strategies", "process", "--workloads", "io", "--count", "2000", "--param", "io.seconds=0.2",
         "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        run_id = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run_id is None:
            for line in list(lines):
                if line.startswith("experiment ") and LABEL in line:
                    run_id = line.split()[1].rstrip(":")
            time.sleep(0.2)
        assert run_id, "".join(lines)
        # Wait until the cell's jobs run: the worker container is healthy and jobs have finished.
        deadline = time.monotonic() + 300
        running = False
        while time.monotonic() < deadline and not running and proc.poll() is None:
            for c in client.containers.list(filters={"label": f"{LABEL}={run_id}"}):
                health = (c.attrs.get("State") or {}).get("Health", {}).get("Status")
                if c.name.endswith("-r1") and health == "healthy":
                    running = True
            time.sleep(0.5)
        assert running, "".join(lines)
        time.sleep(3)  # jobs are running now (the producer enqueues right after the warm-up)
        assert leftovers(client, run_id)["containers"], "nothing to clean up: the test would prove nothing"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    reader.join(10)
    proc.stderr.close()  # type: ignore[union-attr]
    log = "".join(lines)
    assert code == 130, log[-3000:]
    assert "interrupted" in log, log[-3000:]
    assert leftovers(client, run_id) == {"containers": [], "networks": [], "volumes": []}, log[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["interrupted"] is True


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(900)
def test_existing_network_and_redis_are_used_and_left_alone(engine: Any, tmp_path: Path) -> None:
    """``--network`` with ``--redis-url`` (as against the compose stack): the workers join that
    network and use its Redis, the producer reaches that Redis from the host, and removes only what
    it created — the network and the Redis stay. A fractional limit (0.5) is detected as 1 CPU."""
    import uuid

    client = engine
    tag = {"poolq.test": uuid.uuid4().hex[:8]}  # this test's own stand-in for a compose stack
    net = client.networks.create(f"poolq-test-{tag['poolq.test']}", driver="bridge", labels=tag)
    redis = None
    try:
        redis = client.containers.run(
            "redis:7.2.5", ["redis-server", "--save", "", "--protected-mode", "no"], detach=True, labels=tag,
            network=net.name, name=f"poolq-test-{tag['poolq.test']}-redis", tmpfs={"/data": ""},
        )  # fmt: skip
        net.reload()
        # The service name the workers use, as compose gives it: a network alias.
        net.disconnect(redis)
        net.connect(redis, aliases=["redis"])
        out = tmp_path / "exp"
        proc = producer(
            "experiment", "--docker", "--image", IMAGE, "--cpus", "0.5", "--network", net.name,
            "--redis-url", "redis://redis:6379/0", "--strategies", "process", "--workloads", "noop",
            "--count", "20", "--out", str(out),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-5000:]
        results = json.loads((out / "results.json").read_text())
        (cell,) = results["cells"]
        assert cell["finished"] == 20 and not cell["problems"], cell
        assert cell["available_cpus"] == 1 and cell["pool_size"] == 1 and cell["cpu_limit"] == 0.5, cell
        assert results["meta"]["docker"]["network"] == net.name
        assert leftovers(client, results["meta"]["run_id"]) == {"containers": [], "networks": [], "volumes": []}
        redis.reload()
        assert redis.status == "running"
        client.networks.get(net.id)  # still there
    finally:
        if redis is not None:
            redis.remove(v=True, force=True)
        net.remove()
