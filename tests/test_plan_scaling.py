"""Issue 8 on the producer's side: hybrid and auto in experiments, the planner's KEDA target and
its replica-scaling prediction (linear while replicas have their own CPUs, capped once they
share a fixed set of CPUs, as measured in docs/scaling.md).

The planner tests feed it synthetic results (it is arithmetic over an experiment's numbers);
the experiment test runs real workers against a real redis-server.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from support.redis_server import RedisServer
from support.workers import start_worker, stop, wait_registered, worker_hash
from test_producer import call, one_line, producer

from producer.errors import BadInput
from producer.plan import make_plan
from producer.sizing import resolve_capacity


def cpu_results() -> dict[str, Any]:
    """One cpu cell as an experiment writes it: a 2-child process replica, 43 jobs/s, 23.5 ms CPU per job."""
    row = {"workload": "cpu", "runs": 3, "count": 300, "problems": [], "available_cpus": 2, "run_cv2": 0.05}
    return {
        "meta": {"available_cpus": 2},
        "summary": [
            {**row, "strategy": "process", "concurrency": 2, "throughput_jobs_s": 43.0, "cores_busy": 1.0,
             "peak_pss_mib": 80.0, "cpu_s_per_1k_jobs": 23.5},
            {**row, "strategy": "thread", "concurrency": 16, "throughput_jobs_s": 20.0, "cores_busy": 1.0,
             "peak_pss_mib": 40.0, "cpu_s_per_1k_jobs": 25.0},
        ],
    }  # fmt: skip


def test_keda_target_is_the_backlog_one_replica_clears_within_the_slo() -> None:
    plan = make_plan(cpu_results(), "cpu", 60.0, slo_p95=2.0)
    r = plan.recommended
    assert r is not None
    keda = plan.keda()
    assert keda is not None
    assert keda["minReplicaCount"] == r.replicas >= 2  # 60 jobs/s > one replica's 43
    assert keda["listLength"] == math.ceil(r.replica_rate * 2.0)
    assert "maxReplicaCount" not in keda  # no shared-CPU budget given: nothing to cap at
    no_slo = make_plan(cpu_results(), "cpu", 60.0)
    assert no_slo.keda() is not None and no_slo.keda()["listLength"] is None  # type: ignore[index]
    assert plan.to_json()["keda"] == keda


def test_shared_cpus_cap_the_sum_of_replicas() -> None:
    """Linear while each replica has its CPUs; on 2 shared CPUs at most 2 / 23.5 ms = 85 jobs/s."""
    linear = make_plan(cpu_results(), "cpu", 60.0, slo_p95=2.0)
    assert [p["jobs_s"] for p in linear.scaling() if p["replicas"] in (1, 2, 4)] == [43.0, 86.0, 172.0]

    shared = make_plan(cpu_results(), "cpu", 60.0, slo_p95=2.0, shared_cpus=2)
    rates = {int(p["replicas"]): p["jobs_s"] for p in shared.scaling()}
    ceiling = 2 / 0.0235
    assert rates[1] == 43.0 and rates[2] == pytest.approx(ceiling) and rates[4] == pytest.approx(ceiling)
    keda = shared.keda()
    assert keda is not None and keda["maxReplicaCount"] == 2  # 2 shared CPUs / 1 CPU per replica

    # Beyond the ceiling no number of replicas helps: the planner says so instead of adding more.
    over = make_plan(cpu_results(), "cpu", 90.0, slo_p95=2.0, shared_cpus=2)
    assert over.recommended is None
    assert all("shared CPUs carry at most" in o.why_not for o in over.options)
    with pytest.raises(BadInput, match="--shared-cpus"):
        make_plan(cpu_results(), "cpu", 10.0, shared_cpus=0)


def test_plan_cli_prints_the_keda_target_and_scaling(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "results.json").write_text(json.dumps(cpu_results()))
    argv = ["plan", "--results", str(tmp_path), "--arrival-rate", "60", "-w", "cpu", "--slo-p95", "2"]
    assert call([*argv, "--shared-cpus", "2"]) == 0
    out = capsys.readouterr().out
    keda = next(line for line in out.splitlines() if line.startswith("KEDA"))
    assert "listLength 86" in keda and "maxReplicaCount 2" in keda  # ceil(43 x 2)
    assert "Saturated throughput by replicas on 2 shared CPUs" in out
    assert call([*argv, "--shared-cpus", "-1"]) == 2
    assert "--shared-cpus" in one_line(capsys.readouterr().err)


def test_experiment_sizes_agree_with_the_workers_own(redis: redis_lib.Redis, redis_url: str) -> None:
    """The experiment's slot count for every strategy is the pool the worker itself reports."""
    from worker.cpus import detect_cpus

    cpus = int(detect_cpus().available)
    for strategy in ("thread", "process", "inline", "hybrid", "auto"):
        w = start_worker(redis_url, strategy, "auto", queues=f"q-{strategy}")
        try:
            wait_registered(redis, w)
            reported = int(worker_hash(redis, w.name)["poolq_concurrency"])
            assert reported == resolve_capacity(strategy, "auto", cpus), strategy
        finally:
            assert stop(w) == 0


@pytest.mark.slow
def test_experiment_runs_hybrid_and_auto(redis_server: RedisServer, tmp_path: Path) -> None:
    if not redis_server.running:
        redis_server.start()
    proc = producer(
        "experiment", "--local", "--strategies", "hybrid,auto", "--workloads", "cpu,io", "--count", "12",
        "--concurrency", "hybrid=4,auto=3", "--param", "cpu.ms=5", "--param", "io.seconds=0.02",
        "--no-startup", "--no-timeouts", "--out", str(tmp_path), "--redis-url", redis_server.url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    summary = json.loads((tmp_path / "results.json").read_text())["summary"]
    cells = {(r["strategy"], r["workload"]): r for r in summary}
    assert set(cells) == {(s, w) for s in ("hybrid", "auto") for w in ("cpu", "io")}
    for (strategy, _), r in cells.items():
        assert r["count"] == 12 and r["failed"] == 0 and r["runs_ok"] == 1 and not r["problems"], r
        assert int(r["concurrency"]) == {"hybrid": 4, "auto": 3}[strategy]
        assert r["throughput_jobs_s"] > 0 and r["peak_pss_mib"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "hybrid" in report and "auto" in report
