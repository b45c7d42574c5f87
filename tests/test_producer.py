"""The producer: enqueue (stock RQ jobs, arrivals, every bad input), experiments against a real
redis-server with real workers (files cross-checked against RQ's own job timestamps), the
planner, and the planner's validation run.

Nothing here asserts how fast anything is: timings are only compared with other timings of the
same run (the report against RQ's timestamps), never with a constant.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis as redis_lib
from rq.job import Job
from rq.serializers import JSONSerializer
from support.base import free_port, one_line, run_producer
from support.redis_server import RedisServer
from support.workers import start_worker, wait_registered

from producer import cli
from producer.arrivals import resolve_arrival, schedule
from producer.erlang import MMc
from producer.errors import BadInput
from producer.plan import make_plan
from producer.workloads import MAX_ARGS_BYTES, build_spec, parse_param


def call(argv: list[str]) -> int:
    """``python -m producer`` in this process; argparse's own exits become return codes."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


producer = run_producer


# ---------------------------------------------------------------------------------------------
# arguments and arrivals (no Redis)


def test_params_are_json_text_files_or_distributions(tmp_path: Path) -> None:
    assert parse_param("seconds=0.5") == ("seconds", 0.5)
    assert parse_param("mode=sleep") == ("mode", "sleep")
    assert parse_param('mode="socket"') == ("mode", "socket")
    f = tmp_path / "v.json"
    f.write_text("7")
    assert parse_param(f"iterations=@{f}") == ("iterations", 7)
    spec = build_spec("io", ["seconds=exp:0.02", "mode=sleep"])
    rng = random.Random(1)
    values = [spec.materialize(rng)["seconds"] for _ in range(3)]
    assert spec.randomized and len(set(values)) == 3 and all(v >= 0 for v in values)
    assert build_spec("cpu", ["iterations=1000.0"]).kwargs == {"iterations": 1000}


def test_schedules() -> None:
    assert schedule("burst", 3, None, random.Random(0)) == [0.0, 0.0, 0.0]
    assert schedule("constant", 4, 2.0, random.Random(0)) == [0.0, 0.5, 1.0, 1.5]
    a = schedule("poisson", 5000, 100.0, random.Random(7))
    assert a == schedule("poisson", 5000, 100.0, random.Random(7))  # seeded: reproducible
    gaps = np.diff(a)
    assert (gaps >= 0).all()
    assert float(np.mean(gaps)) == pytest.approx(0.01, rel=0.1)
    assert float(np.std(gaps)) == pytest.approx(0.01, rel=0.1)  # exponential: sd = mean
    assert resolve_arrival(None, None) == "burst"
    assert resolve_arrival(None, 5.0) == "constant"


def test_python_api_refuses_unserializable_arguments() -> None:
    with pytest.raises(BadInput, match="not JSON-serializable"):
        build_spec("io", {"mode": object()})
    with pytest.raises(BadInput, match="1 MiB"):
        build_spec("io", {"mode": "x" * (MAX_ARGS_BYTES + 1)})


# ---------------------------------------------------------------------------------------------
# enqueue: bad input -> one line, exit 2, nothing enqueued


@pytest.fixture
def big_param(tmp_path: Path) -> str:
    path = tmp_path / "big.json"
    path.write_text(json.dumps("x" * (MAX_ARGS_BYTES + 10)))
    return f"mode=@{path}"


BAD_ENQUEUE = {
    "unknown workload": (["--workload", "nope", "--count", "1"], "unknown workload"),
    "count zero": (["--workload", "io", "--count", "0"], "--count"),
    "count negative": (["--workload", "io", "--count", "-5"], "--count"),
    "count not a number": (["--workload", "io", "--count", "ten"], "--count"),
    "rate zero": (["--workload", "io", "--count", "5", "--rate", "0"], "--rate"),
    "rate negative": (["--workload", "io", "--count", "5", "--rate", "-1"], "--rate"),
    "rate nan": (["--workload", "io", "--count", "5", "--rate", "nan"], "--rate"),
    "rate inf": (["--workload", "io", "--count", "5", "--rate", "inf"], "--rate"),
    "param without =": (["--workload", "io", "--count", "5", "--param", "seconds"], "malformed --param"),
    "param without key": (["--workload", "io", "--count", "5", "--param", "=1"], "malformed --param"),
    "param without value": (["--workload", "io", "--count", "5", "--param", "seconds="], "malformed --param"),
    "param bad key": (["--workload", "io", "--count", "5", "--param", "1x=2"], "malformed --param"),
    "param unknown": (["--workload", "io", "--count", "5", "--param", "bogus=1"], "no parameter 'bogus'"),
    "param wrong type": (["--workload", "io", "--count", "5", "--param", "seconds=abc"], "expected a number"),
    "param bad choice": (["--workload", "io", "--count", "5", "--param", "mode=fast"], "not one of"),
    "param negative": (["--workload", "io", "--count", "5", "--param", "seconds=-1"], ">= 0"),
    "param not whole": (["--workload", "cpu", "--count", "5", "--param", "iterations=1.5"], "whole number"),
    "param twice": (["--workload", "io", "--count", "5", "-p", "seconds=1", "-p", "seconds=2"], "twice"),
    "param exclusive": (["--workload", "cpu", "--count", "5", "-p", "ms=1", "-p", "iterations=9"], "exclude"),
    "param NaN": (["--workload", "io", "--count", "5", "--param", "seconds=NaN"], "not JSON-serializable"),
    "param Infinity": (["--workload", "io", "--count", "5", "--param", "seconds=Infinity"], "not JSON-serializable"),
    "param exp bad": (["--workload", "io", "--count", "5", "--param", "seconds=exp:0"], "exp:MEAN"),
    "param exp not allowed": (["--workload", "io", "--count", "5", "--param", "mode=exp:1"], "exp:MEAN"),
    "param missing file": (["--workload", "io", "--count", "5", "--param", "mode=@/nonexistent/x"], "cannot read"),
    "arrival needs rate": (["--workload", "io", "--count", "5", "--arrival", "poisson"], "needs --rate"),
    "burst takes no rate": (["--workload", "io", "--count", "5", "--arrival", "burst", "--rate", "3"], "no --rate"),
    "unknown arrival": (["--workload", "io", "--count", "5", "--arrival", "wave"], "invalid choice"),
    "job timeout zero": (["--workload", "io", "--count", "5", "--job-timeout", "0"], "--job-timeout"),
    "unknown flag": (["--workload", "io", "--count", "5", "--frobnicate"], "unrecognized"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENQUEUE))
def test_enqueue_bad_input(case: str, redis: redis_lib.Redis, redis_url: str, capsys: Any) -> None:
    argv, message = BAD_ENQUEUE[case]
    code = call(["enqueue", *argv, "--redis-url", redis_url])
    err = capsys.readouterr().err
    assert code == 2
    assert message in one_line(err)
    assert redis.keys("*") == [], "nothing may be enqueued"


def test_enqueue_arguments_over_one_mib(big_param: str, redis: redis_lib.Redis, redis_url: str, capsys: Any) -> None:
    code = call(["enqueue", "--workload", "io", "--count", "3", "--param", big_param, "--redis-url", redis_url])
    assert code == 2
    assert "over the 1 MiB limit" in one_line(capsys.readouterr().err)
    assert redis.keys("*") == []


def test_enqueue_redis_unreachable(capsys: Any) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert call(["enqueue", "--workload", "io", "--count", "3", "--redis-url", url]) == 2
    assert "unreachable" in one_line(capsys.readouterr().err)


def test_enqueue_bad_environment(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("REDIS_URL", "http://example.com")
    assert call(["enqueue", "--workload", "io", "--count", "3"]) == 2
    assert "REDIS_URL" in one_line(capsys.readouterr().err)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("PRODUCER_BATCH_SIZE", "0")
    assert call(["enqueue", "--workload", "io", "--count", "3"]) == 2
    assert "PRODUCER_BATCH_SIZE" in one_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------
# enqueue: what it writes


def test_enqueue_burst_writes_stock_rq_jobs(redis: redis_lib.Redis, redis_url: str, capsys: Any) -> None:
    argv = ["enqueue", "-w", "io", "-n", "1203", "-p", "seconds=0.01", "--job-timeout", "7", "--queue", "q1"]
    assert call([*argv, "--redis-url", redis_url, "--batch-size", "500"]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"enqueued 1203 io\(seconds=0\.01\) job\(s\) to queue 'q1' .*3 batch\(es\)", out)
    assert "vs as fast as possible" in out
    assert "1203/1203 (100%)" in err  # not a terminal: plain progress lines
    assert redis.llen("rq:queue:q1") == 1203
    ids = [i.decode() for i in redis.lrange("rq:queue:q1", 0, -1)]
    jobs = Job.fetch_many(ids[:5], connection=redis, serializer=JSONSerializer)
    for job in jobs:
        assert job is not None
        assert job.func_name == "worker.jobs.io"
        assert job.kwargs == {"seconds": 0.01}
        assert job.timeout == 7
        assert job.get_status() == "queued"


def test_enqueue_rate_is_reported_from_what_was_sent(redis: redis_lib.Redis, redis_url: str, capsys: Any) -> None:
    argv = ["enqueue", "-w", "noop", "-n", "60", "--rate", "150", "--arrival", "poisson", "--seed", "3", "--json"]
    assert call([*argv, "--redis-url", redis_url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["arrival"] == "poisson" and report["rate_asked"] == 150
    ids = [i.decode() for i in redis.lrange("rq:queue:default", 0, -1)]
    stamps = sorted(
        j.enqueued_at.timestamp() for j in Job.fetch_many(ids, connection=redis, serializer=JSONSerializer) if j
    )
    assert len(stamps) == 60
    from_rq = 59 / (stamps[-1] - stamps[0])
    assert report["rate_achieved"] == pytest.approx(from_rq, rel=0.05)  # the report says what RQ saw


def test_enqueue_exp_parameters_vary_per_job(redis: redis_lib.Redis, redis_url: str, capsys: Any) -> None:
    argv = ["enqueue", "-w", "io", "-n", "20", "-p", "seconds=exp:0.01", "--seed", "5", "--progress", "bar"]
    assert call([*argv, "--redis-url", redis_url]) == 0
    capsys.readouterr()
    ids = [i.decode() for i in redis.lrange("rq:queue:default", 0, -1)]
    secs = [j.kwargs["seconds"] for j in Job.fetch_many(ids, connection=redis, serializer=JSONSerializer) if j]
    assert len(set(secs)) == 20 and min(secs) >= 0


# ---------------------------------------------------------------------------------------------
# the planner on synthetic results


def synthetic_results() -> dict[str, Any]:
    row = {"workload": "io", "runs": 3, "count": 500, "problems": [], "available_cpus": 2}
    return {
        "meta": {"available_cpus": 2},
        "summary": [
            {**row, "strategy": "thread", "concurrency": 4, "throughput_jobs_s": 80.0, "run_cv2": 0.01,
             "cores_busy": 0.3, "peak_pss_mib": 40.0},
            {**row, "strategy": "process", "concurrency": 2, "throughput_jobs_s": 40.0, "run_cv2": 0.02,
             "cores_busy": 0.1, "peak_pss_mib": 90.0},
            {**row, "strategy": "inline", "concurrency": 1, "throughput_jobs_s": 19.0, "run_cv2": 0.01,
             "cores_busy": 0.05, "peak_pss_mib": 33.0},
        ],
    }  # fmt: skip


def test_plan_sizes_each_strategy_minimally() -> None:
    plan = make_plan(synthetic_results(), "io", 150.0, slo_p95=0.1)
    assert {o.strategy for o in plan.options} == {"thread", "process", "inline"}
    for o in plan.options:
        assert o.feasible
        model = MMc(150.0, o.mu, o.replicas * o.slots)
        assert model.wait_quantile(0.95) <= 0.1 and model.rho <= 0.95
        fewer = MMc(150.0, o.mu, (o.replicas - 1) * o.slots) if o.replicas > 1 else None
        assert fewer is None or fewer.rho > 0.95 or fewer.wait_quantile(0.95) > 0.1
        assert o.p95_wait == pytest.approx(model.wait_quantile(0.95))
    assert plan.recommended is not None and plan.recommended.strategy == "thread"
    thread = next(o for o in plan.options if o.strategy == "thread")
    assert thread.cpu_per_replica == 0.5 and thread.total_mem_mib == thread.replicas * 40.0
    assert any("more than any one io worker" in w for w in plan.warnings)
    assert any("not exponential" in w for w in plan.warnings)


def test_plan_mgc_model_uses_the_measured_variability() -> None:
    mmc = make_plan(synthetic_results(), "io", 150.0, slo_p95=0.05)
    mgc = make_plan(synthetic_results(), "io", 150.0, slo_p95=0.05, model="mgc")
    for a, b in zip(mmc.options, mgc.options, strict=True):
        assert b.replicas <= a.replicas  # CV^2 < 1: shorter waits than M/M/c predicts
        assert b.p95_wait_mgc <= 0.05
    with pytest.raises(BadInput, match="--model"):
        make_plan(synthetic_results(), "io", 150.0, model="mdc")


def test_plan_limits_and_bad_input() -> None:
    plan = make_plan(synthetic_results(), "io", 150.0, slo_p95=0.1, max_cpus=0.5)
    assert plan.recommended is None
    assert all("--max-cpus" in o.why_not for o in plan.options)
    with pytest.raises(BadInput, match="no 'cpu' cells"):
        make_plan(synthetic_results(), "cpu", 10.0)
    for kwargs in ({"arrival_rate": 0.0}, {"arrival_rate": -1.0}, {"arrival_rate": math.nan}):
        with pytest.raises(BadInput, match="--arrival-rate"):
            make_plan(synthetic_results(), "io", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="--slo-p95"):
        make_plan(synthetic_results(), "io", 10.0, slo_p95=0.0)
    with pytest.raises(BadInput, match="--max-cpus"):
        make_plan(synthetic_results(), "io", 10.0, max_cpus=-2)


def test_plan_cli(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "results.json").write_text(json.dumps(synthetic_results()))
    assert call(["plan", "--results", str(tmp_path), "--arrival-rate", "150", "-w", "io", "--slo-p95", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "Recommendation:" in out and "Assumptions:" in out and "Warnings:" in out
    assert call(["plan", "--results", str(tmp_path), "--arrival-rate", "150", "-w", "io", "--max-cpus", "0.5"]) == 1
    assert "Recommendation: none" in capsys.readouterr().out
    for argv, message in (
        (["--arrival-rate", "0", "-w", "io"], "--arrival-rate"),
        (["--arrival-rate", "5", "-w", "cpu"], "no 'cpu' cells"),
        (["--arrival-rate", "5", "-w", "io", "--slo-p95", "-1"], "--slo-p95"),
        (["--arrival-rate", "fast", "-w", "io"], "--arrival-rate"),
    ):
        assert call(["plan", "--results", str(tmp_path), *argv]) == 2
        assert message in one_line(capsys.readouterr().err)
    assert call(["plan", "--results", str(tmp_path / "missing"), "--arrival-rate", "5", "-w", "io"]) == 2
    assert "no results.json" in one_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------
# experiments: bad input


BAD_EXPERIMENT = {
    "unknown strategy": (["--strategies", "thread,fibers"], "unknown strategy 'fibers'"),
    "unknown workload": (["--workloads", "cpu,gpu"], "unknown workload 'gpu'"),
    "count zero": (["--count", "0"], "--count"),
    "count malformed": (["--count", "io=many"], "--count"),
    "count unknown workload": (["--count", "gpu=5"], "unknown workload"),
    "bad concurrency": (["--concurrency", "thread=lots"], "--concurrency"),
    "inline concurrency": (["--concurrency", "inline=4"], "one job at a time"),
    "bad param": (["--param", "io.seconds=abc"], "expected a number"),
    "param without workload": (["--param", "seconds=1"], "workload.key=value"),
    "repeats zero": (["--repeats", "0"], "--repeats"),
    "timeout order": (["--timeout-job-seconds", "1", "--job-timeout", "2"], "--job-timeout"),
    "metrics with local": (["--worker-metrics", "thread=http://127.0.0.1:9/metrics"], "--worker-metrics"),
}


@pytest.mark.parametrize("case", sorted(BAD_EXPERIMENT))
def test_experiment_bad_input(case: str, tmp_path: Path, capsys: Any) -> None:
    argv, message = BAD_EXPERIMENT[case]
    code = call(["experiment", "--local", "--out", str(tmp_path / "out"), *argv])
    assert code == 2
    assert message in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_experiment_without_running_workers(
    redis: redis_lib.Redis, redis_url: str, tmp_path: Path, capsys: Any
) -> None:
    code = call(["experiment", "--strategies", "thread", "--workloads", "io", "--out", str(tmp_path / "o"),
                 "--redis-url", redis_url])  # fmt: skip
    assert code == 2
    assert "no running worker consumes queue(s) thread" in one_line(capsys.readouterr().err)
    assert redis.keys("rq:job:*") == []


# ---------------------------------------------------------------------------------------------
# a small local experiment, cross-checked against RQ


@pytest.fixture(scope="module")
def small_experiment(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not redis_server.running:
        redis_server.start()
    out = tmp_path_factory.mktemp("experiment")
    proc = producer(
        "experiment", "--local", "--strategies", "thread,process", "--workloads", "cpu,io", "--count", "20",
        "--concurrency", "thread=4,process=2", "--param", "cpu.ms=5", "--param", "io.seconds=0.02",
        "--no-startup", "--no-timeouts", "--out", str(out), "--redis-url", redis_server.url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    # Read RQ's own records now, before another test flushes the database.
    conn = redis_lib.Redis.from_url(redis_server.url)
    with open(out / "jobs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ids = [r["job_id"] for r in rows]
    jobs = {j.id: j for j in Job.fetch_many(ids, connection=conn, serializer=JSONSerializer) if j is not None}
    values = {i: jobs[i].return_value() for i in ids if i in jobs}
    conn.close()
    yield {"out": out, "proc": proc, "rows": rows, "jobs": jobs, "values": values}


@pytest.mark.slow
def test_experiment_numbers_are_rqs(small_experiment: dict[str, Any]) -> None:
    out: Path = small_experiment["out"]
    jobs: dict[str, Job] = small_experiment["jobs"]
    results = json.loads((out / "results.json").read_text())
    cells = results["cells"]
    assert {(c["strategy"], c["concurrency"], c["workload"]) for c in cells} == {
        ("thread", 4, "cpu"), ("process", 2, "cpu"), ("thread", 4, "io"), ("process", 2, "io")
    }  # fmt: skip
    by_cell: dict[str, list[str]] = {}
    for r in small_experiment["rows"]:
        by_cell.setdefault(r["cell"], []).append(r["job_id"])
    for c in cells:
        ids = by_cell[c["key"]]
        assert len(ids) == 20 and all(i in jobs for i in ids)
        js = [jobs[i] for i in ids]
        assert all(j.get_status() == "finished" for j in js)
        enq = [j.enqueued_at.timestamp() for j in js]
        start = [j.started_at.timestamp() for j in js]
        end = [j.ended_at.timestamp() for j in js]
        makespan = max(end) - min(enq)
        assert c["finished"] == 20 and c["failed"] == 0
        assert c["makespan_s"] == pytest.approx(makespan, abs=1e-6)
        assert c["throughput_jobs_s"] == pytest.approx(20 / makespan, rel=1e-6)
        waits = np.array(start) - np.array(enq)
        runs = np.array(end) - np.array(start)
        totals = np.array(end) - np.array(enq)
        for q in (50, 95, 99):
            assert c[f"wait_p{q}_s"] == pytest.approx(float(np.percentile(waits, q)), abs=1e-6)
            assert c[f"run_p{q}_s"] == pytest.approx(float(np.percentile(runs, q)), abs=1e-6)
            assert c[f"e2e_p{q}_s"] == pytest.approx(float(np.percentile(totals, q)), abs=1e-6)
        # where the jobs ran, from their own return values
        pids = {small_experiment["values"][i]["pid"] for i in ids}
        assert c["distinct_pids"] == len(pids)
        if c["strategy"] == "thread":
            assert len(pids) == 1 and c["peak_processes"] == 1
        else:
            assert c["peak_processes"] >= 3  # worker, forkserver, children
        assert 10 < c["peak_pss_mib"] <= c["peak_rss_mib"]
        assert c["cpu_s"] >= 0 and c["cpu_s_per_1k_jobs"] == pytest.approx(1000 * c["cpu_s"] / 20)
        assert c["pct_of_limit"] == pytest.approx(100 * c["throughput_jobs_s"] / c["limit_jobs_s"])
    # one repeat: the summary is the cells
    for row in results["summary"]:
        cell = next(c for c in cells if (c["strategy"], c["concurrency"], c["workload"]) ==
                    (row["strategy"], row["concurrency"], row["workload"]))  # fmt: skip
        assert row["throughput_jobs_s"] == pytest.approx(cell["throughput_jobs_s"])
    with open(out / "results.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 4
    for r in csv_rows:
        cell = next(c for c in cells if c["strategy"] == r["strategy"] and c["workload"] == r["workload"])
        assert float(r["throughput_jobs_s"]) == pytest.approx(cell["throughput_jobs_s"], rel=1e-5)
        assert float(r["wait_p95_s"]) == pytest.approx(cell["wait_p95_s"], rel=1e-5)
    # jobs.csv holds RQ's timestamps
    for r in small_experiment["rows"][:10]:
        j = jobs[r["job_id"]]
        assert float(r["started_at"]) == pytest.approx(j.started_at.timestamp(), abs=1e-5)


@pytest.mark.slow
def test_experiment_report_and_charts(small_experiment: dict[str, Any]) -> None:
    out: Path = small_experiment["out"]
    report = (out / "report.md").read_text()
    for row in ("| cpu | thread | 4 |", "| cpu | process | 2 |", "| io | thread | 4 |", "| io | process | 2 |"):
        assert row in report
    for n in range(1, 8):
        assert f"### {n}. " in report
    assert report.count("**Verdict:") == 7
    for png in ("throughput.png", "latency_cdf.png", "memory.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"]({png})" in report
    lines = small_experiment["proc"].stderr
    assert lines.count("[r1] ") == 4


@pytest.mark.slow
def test_plan_and_validate_from_a_real_experiment(
    small_experiment: dict[str, Any], redis_url: str, tmp_path: Path
) -> None:
    out: Path = small_experiment["out"]
    proc = producer("plan", "--results", str(out), "--arrival-rate", "20", "--workload", "io", "--slo-p95", "1")
    assert proc.returncode == 0, proc.stderr
    assert "Recommendation:" in proc.stdout and "thread" in proc.stdout and "process" in proc.stdout
    val = producer(
        "validate", "--results", str(out), "--workload", "io", "--arrival-rate", "20", "--count", "40",
        "--slo-p95", "1", "--out", str(tmp_path / "v"), "--redis-url", redis_url,
    )  # fmt: skip
    assert val.returncode == 0, val.stderr[-3000:]
    data = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert data["measured"]["finished"] == 40 and data["measured"]["all_done"]
    assert data["predicted"]["servers"] == data["configuration"]["replicas"] * data["configuration"]["slots"]
    assert data["measured"]["p95_wait_s"] is not None and data["predicted"]["p95_wait_s"] is not None
    assert "| p95 queue wait s |" in (tmp_path / "v" / "validation.md").read_text()


# ---------------------------------------------------------------------------------------------
# a private redis-server, start-up and timeout cells


@pytest.mark.slow
def test_experiment_starts_its_own_redis_and_measures_startup_and_timeouts(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "exp"
    proc = producer(
        "experiment", "--local", "--strategies", "thread,process", "--workloads", "io", "--count", "5",
        "--concurrency", "2", "--param", "io.seconds=0.01", "--timeout-job-seconds", "2.5", "--out", str(out),
        env={"REDIS_URL": f"redis://127.0.0.1:{port}/0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    m = re.search(r"started redis-server \S+ on 127\.0\.0\.1:(\d+)", proc.stderr)
    assert m, proc.stderr
    own = int(m.group(1))
    conn = redis_lib.Redis(port=own, socket_connect_timeout=0.5)
    with pytest.raises(redis_lib.exceptions.ConnectionError):
        conn.ping()  # stopped with the experiment
    conn.close()
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["redis_url"].startswith("private redis-server")
    assert {(s["strategy"], s["concurrency"]) for s in results["startup"]} == {("thread", 2), ("process", 2)}
    for s in results["startup"]:
        assert s["ok"] and 0 < s["first_job_started_s"] <= s["all_slots_busy_s"]
    kinds = {p["kind"] for p in results["pool_start"]}
    assert kinds == {"thread", "forkserver", "spawn"}
    timeouts = {t["strategy"]: t for t in results["timeouts"]}
    assert timeouts["thread"]["status"] == timeouts["process"]["status"] == "failed"
    assert "abandoned" in timeouts["thread"]["reason"]
    assert "was killed" in timeouts["process"]["reason"]
    for t in timeouts.values():
        assert t["failed_after_s"] >= 1.0  # not before its job_timeout
        assert t["next_job_started_after_s"] >= t["failed_after_s"] - 0.05
    report = (out / "report.md").read_text()
    assert "## Start-up" in report and "## Timeouts" in report and (out / "timeouts.png").exists()


# ---------------------------------------------------------------------------------------------
# against running workers: queues named after strategies, metrics scraped


@pytest.mark.slow
def test_experiment_against_running_workers(redis: redis_lib.Redis, redis_url: str, tmp_path: Path) -> None:
    ports = {"thread": free_port(), "process": free_port()}
    env = {"WORKER_METRICS_SAMPLE_INTERVAL_SECONDS": "0.3"}
    workers = [
        start_worker(redis_url, s, 3, s, extra_args=["--metrics-port", str(p)], env=env) for s, p in ports.items()
    ]
    for w in workers:
        wait_registered(redis, w)
    metrics = ",".join(f"{s}=http://127.0.0.1:{p}/metrics" for s, p in ports.items())
    out = tmp_path / "compose"
    proc = producer(
        "experiment", "--strategies", "thread,process", "--workloads", "io", "--count", "12",
        "--param", "io.seconds=0.01", "--worker-metrics", metrics, "--metrics-settle", "0.8",
        "--out", str(out), "--redis-url", redis_url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["mode"] == "running-workers"
    cells = {c["strategy"]: c for c in results["cells"]}
    for s in ("thread", "process"):
        c = cells[s]
        assert c["queue"] == s and c["mode"] == "running-workers"
        assert c["finished"] == 12 and c["concurrency"] == 3  # poolq_pool_size
        assert c["peak_pss_mib"] > 10 and c["cpu_s"] is not None and c["cpu_s"] >= 0
        assert not c["problems"], c["problems"]
    assert cells["process"]["peak_pss_mib"] > cells["thread"]["peak_pss_mib"]  # 3 children vs 3 threads
