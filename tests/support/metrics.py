"""For the metrics tests: scraping /metrics, a real Prometheus server, PromQL from the docs."""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from support.base import REPO_ROOT, free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
DOC = REPO_ROOT / "docs" / "metrics.md"


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode())


def fetch_metrics(port: int) -> str | None:
    """The exposition of a worker's /metrics, or None while it does not answer."""
    try:
        return http_get(f"http://127.0.0.1:{port}/metrics")
    except (OSError, urllib.error.URLError):
        return None


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """{(sample name, labels): value} for every sample of an exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = float(s.value)
    return out


def scrape(port: int) -> Samples | None:
    text = fetch_metrics(port)
    return None if text is None else parse(text)


def select(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {lab: v for (n, lab), v in samples.items() if n == name and want <= lab}


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(select(samples, name, **labels).values())


# ------------------------------------------------------------------------------------------------
# Prometheus


class PrometheusServer:
    """A real ``prometheus`` on 127.0.0.1 scraping static targets every second."""

    def __init__(self, workdir: Path, targets: Sequence[str], scrape_interval: str = "1s") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "prometheus.yml"
        self.log_path = workdir / "prometheus.log"
        targets_yaml = ", ".join(f'"{t}"' for t in targets)
        self.config.write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            f"  evaluation_interval: {scrape_interval}\n"
            "scrape_configs:\n"
            "  - job_name: poolq-worker\n"
            "    static_configs:\n"
            f"      - targets: [{targets_yaml}]\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                http_get(f"{self.url}/-/ready", timeout=1)
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not become ready:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait()
        self.proc = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query through the HTTP API; the result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            body = json.loads(http_get(url, timeout=10))
        except urllib.error.HTTPError as e:
            raise AssertionError(f"query failed ({e.code}): {e.read().decode()}\n{promql}") from None
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", body
        return list(body["data"]["result"])

    def targets_up(self) -> dict[str, str]:
        body = json.loads(http_get(f"{self.url}/api/v1/targets"))
        return {t["scrapeUrl"]: t["health"] for t in body["data"]["activeTargets"]}


@contextlib.contextmanager
def prometheus(workdir: Path, targets: Sequence[str]) -> Iterator[PrometheusServer]:
    server = PrometheusServer(workdir, targets)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------
# the documented queries


@dataclass(frozen=True)
class DocQuery:
    promql: str
    labels: frozenset[str]
    line: int


_BLOCK = re.compile(r"^```promql(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.M | re.S)


def documented_queries(doc: Path = DOC) -> list[DocQuery]:
    """Every ```promql block of docs/metrics.md, with the labels its info string declares."""
    text = doc.read_text()
    out = []
    for m in _BLOCK.finditer(text):
        info = dict(w.split("=", 1) for w in m.group("info").split() if "=" in w)
        labels = frozenset(x for x in info.get("labels", "").split(",") if x)
        out.append(DocQuery(m.group("body").strip(), labels, text.count("\n", 0, m.start()) + 1))
    return out


def check_result(q: DocQuery, result: list[dict[str, Any]], expect: Mapping[str, set[str]]) -> str | None:
    """None when ``result`` is what the doc promises: non-empty, exactly the declared labels,
    finite values, and every value of ``expect`` present for each declared label it names."""
    if not result:
        return "no data"
    for series in result:
        keys = set(series["metric"])
        if keys != set(q.labels):
            return f"labels {sorted(keys)} != declared {sorted(q.labels)}"
        value = float(series["value"][1])
        if math.isnan(value) or math.isinf(value):
            return f"non-finite value {value} for {series['metric']}"
    for label, wanted in expect.items():
        if label in q.labels:
            seen = {s["metric"][label] for s in result}
            if not wanted <= seen:
                return f"{label} values {sorted(seen)} lack {sorted(wanted - seen)}"
    return None


def metric(port: int, name: str) -> float | None:
    """The sum of a metric's samples on the worker's ``/metrics`` (None: not served or absent)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return None
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    return sum(values) if values else None
