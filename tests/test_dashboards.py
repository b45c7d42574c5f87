"""The Grafana dashboards and the Prometheus rules, checked against real data.

Grafana has no stand-in image here, so each panel's query is run the way Grafana would run
it: variables substituted ("All" = ``.*``, ``$__rate_interval`` = 1m) and sent to a real
Prometheus that scraped real workers (thread, process, hybrid, auto) running the compose demo load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.base import free_port
from support.metrics import PrometheusServer, http_get
from support.workers import kill_group, new_name, stop, worker_cmd, worker_env

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
RULES = ROOT / "prometheus" / "rules" / "poolq.yml"
# The worker services of compose.yaml: every per-strategy panel must show each of them.
STRATEGIES = ("thread", "process", "hybrid", "auto")

pytestmark = pytest.mark.timeout(240)


def provisioned_uid() -> str:
    doc = yaml.safe_load(DATASOURCES.read_text())
    (ds,) = doc["datasources"]
    return str(ds["uid"])


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every target of every panel."""
    out = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for p in d["panels"]:
            for t in p["targets"]:
                out.append((path.name, p["title"], t["expr"]))
    return out


def substitute(expr: str) -> str:
    for var in ("strategy", "instance", "queue"):
        expr = expr.replace(f"${var}", ".*")
    return expr.replace("$__rate_interval", "1m")


def test_dashboards_are_generated_from_code(tmp_path: Path) -> None:
    """The committed JSON is what grafana/build_dashboards.py writes (no hand edits drift)."""
    before = {p.name: p.read_text() for p in DASHBOARDS}
    subprocess.run([sys.executable, str(ROOT / "grafana" / "build_dashboards.py")], check=True)
    after = {p.name: p.read_text() for p in sorted((ROOT / "grafana" / "dashboards").glob("*.json"))}
    assert before == after


def test_every_datasource_reference_is_the_provisioned_uid() -> None:
    uid = provisioned_uid()
    seen = 0
    uids = set()
    for path in DASHBOARDS:
        d = json.loads(path.read_text())

        def walk(node: Any, path: Path = path) -> None:
            nonlocal seen
            if isinstance(node, dict):
                if "datasource" in node:
                    ds = node["datasource"]
                    assert isinstance(ds, dict), f"{path.name}: datasource by name, not uid: {ds!r}"
                    uids.add(ds.get("uid"))
                    seen += 1
                for v in node.values():
                    walk(v, path)
            elif isinstance(node, list):
                for v in node:
                    walk(v, path)

        walk(d)
        assert d["uid"].startswith("poolq-")
    assert seen > 20 and uids == {uid}


def test_provisioning_points_at_the_dashboards() -> None:
    prov = yaml.safe_load((ROOT / "grafana" / "provisioning" / "dashboards" / "poolq.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/strategy-comparison.json"
    assert {p.name for p in DASHBOARDS} == {"strategy-comparison.json", "queue-health.json", "capacity.json"}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory, redis_server: Any) -> Iterator[PrometheusServer]:
    """A worker of every pool strategy the compose stack runs (thread, process, hybrid, auto), each
    on its own queue, under the demo load, scraped by a Prometheus with our rules."""
    url = redis_server.url
    client = redis_server.client()
    client.flushall()
    ports = {s: free_port() for s in STRATEGIES}
    # Started here, not through start_worker: conftest kills the workers that one starts
    # after every test, and these must outlive the module's first test (a killed target's series
    # go stale at the next scrape). The finally clause below stops them, and kills their groups.
    logs = tmp_path_factory.mktemp("dashboard-workers")
    workers = []
    for s, p in ports.items():
        args = ["--strategy", s, "--concurrency", "2", "--queues", s, "--name", new_name(f"dash-{s}")]
        with (logs / f"{s}.log").open("wb") as out:
            workers.append(
                subprocess.Popen(
                    worker_cmd(url, *args, "--metrics-port", str(p)),
                    cwd=ROOT,
                    env=worker_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "producer.demo",
            "--queues",
            ",".join(STRATEGIES),
            "--rate",
            "10",
            "--duration",
            "900",
            "--redis-url",
            url,
        ],
        cwd=ROOT,
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    workdir = tmp_path_factory.mktemp("prometheus")
    prom = PrometheusServer(workdir, [f"127.0.0.1:{p}" for p in ports.values()])
    prom.config.write_text(
        prom.config.read_text().replace("scrape_configs:", f'rule_files: ["{RULES}"]\nscrape_configs:', 1)
    )
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()
        demo.terminate()
        demo.wait(15)
        for w in workers:
            try:
                stop(w, timeout=40)
            finally:
                kill_group(w.pid)
        client.flushall()


def _wait_all(prom: PrometheusServer, exprs: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {e: len(prom.query(e)) for e in exprs}
        if all(counts.values()):
            break
        time.sleep(2)
    return counts


def test_every_panel_query_returns_data(scraped: PrometheusServer) -> None:
    queries = panel_queries()
    assert len(queries) >= 25
    counts = _wait_all(scraped, [substitute(e) for _, _, e in queries], timeout=150)
    empty = [(d, t, e) for (d, t, e) in queries if counts[substitute(e)] == 0]
    assert not empty, "panels without data:\n" + "\n".join(f"{d} / {t}: {e}" for d, t, e in empty)


def test_panel_series_carry_the_strategies(scraped: PrometheusServer) -> None:
    """Per-strategy panels show every strategy of the stack (the point of the dashboards)."""
    per_strategy = [substitute(e) for _, _, e in panel_queries() if "by (strategy)" in e and "increase(" not in e]
    # Wait for every strategy, not just any series: under load a worker's first demo jobs (and
    # with them its job series) can come a scrape or two after another's.
    deadline = time.monotonic() + 150
    while True:
        seen = {e: {r["metric"].get("strategy") for r in scraped.query(e)} for e in per_strategy}
        if all(v == set(STRATEGIES) for v in seen.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    targets = {r["metric"].get("instance"): r["value"][1] for r in scraped.query("up")}
    for e in per_strategy:
        assert seen[e] == set(STRATEGIES), (e, seen[e], f"targets up: {targets}")


def test_auto_panel_shows_both_sub_pools(scraped: PrometheusServer) -> None:
    """The demo mix has CPU-bound and I/O-bound functions: once auto has learned them, its panel
    shows jobs finished in its process pool and in its thread pool."""
    (expr,) = [substitute(e) for _, t, e in panel_queries() if t.startswith("auto: where")]

    def pools() -> set[str]:
        return {r["metric"].get("pool", "") for r in scraped.query(expr) if float(r["value"][1]) > 0}

    deadline = time.monotonic() + 120
    seen: set[str] = set()
    while time.monotonic() < deadline and not {"thread", "process"} <= seen:
        seen = pools()
        time.sleep(2)
    assert {"thread", "process"} <= seen, seen


def test_dashboard_variables_resolve(scraped: PrometheusServer) -> None:
    for path in DASHBOARDS:
        for var in json.loads(path.read_text())["templating"]["list"]:
            query = var["query"]["query"]
            metric, label = query[len("label_values(") : -1].split(", ")
            values = {r["metric"].get(label) for r in scraped.query(metric)}
            assert values - {None}, (path.name, var["name"], query)


def test_recording_rules_evaluate(scraped: PrometheusServer) -> None:
    """promtool accepts the rules; Prometheus loaded them healthy; each rule's expression
    returns data from the real workers' series (the part that breaks when a metric is renamed)."""
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    rules = yaml.safe_load(RULES.read_text())
    records = {r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    counts = _wait_all(scraped, list(records.values()), timeout=120)
    assert all(counts.values()), counts
    rules_state = json.loads(http_get(f"{scraped.url}/api/v1/rules"))["data"]["groups"]
    health = {r["name"]: (r["health"], r.get("lastError", "")) for g in rules_state for r in g["rules"]}
    assert set(records) <= set(health), health
    assert all(h == "ok" for h, _ in health.values()), health
