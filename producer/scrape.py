"""Memory and CPU of running workers (compose, containers), from their Prometheus metrics.

``poolq_worker_tree_memory_bytes{kind="pss"|"rss"}``, ``poolq_worker_tree_cpu_seconds_total``,
``poolq_pool_size``, ``poolq_available_cpus``: the worker samples its own tree every few
seconds, so a cell waits ``--metrics-settle`` after its last job before the final reading.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from producer.loop_thread import LoopThread


def scrape(url: str, timeout: float = 5.0) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a /metrics page as (name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode("utf-8", "replace")
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append((s.name, dict(s.labels), float(s.value)))
    return out


def metric_sum(samples: Iterable[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    """Sum of the samples called ``name`` whose labels include ``labels``; None when absent."""
    total, found = 0.0, False
    for n, lab, value in samples:
        if n == name and all(lab.get(k) == v for k, v in labels.items()):
            total += value
            found = True
    return total if found else None


@dataclass(frozen=True)
class MetricsReading:
    t: float
    pss: float | None
    rss: float | None
    cpu: float | None
    pool_size: float | None
    available_cpus: float | None


def read_metrics(urls: Sequence[str]) -> MetricsReading:
    """One reading summed over ``urls`` (the replicas of one strategy)."""
    fields: dict[str, list[float]] = {k: [] for k in ("pss", "rss", "cpu", "pool", "cpus")}
    for url in urls:
        samples = scrape(url)
        for key, value in (
            ("pss", metric_sum(samples, "poolq_worker_tree_memory_bytes", kind="pss")),
            ("rss", metric_sum(samples, "poolq_worker_tree_memory_bytes", kind="rss")),
            ("cpu", metric_sum(samples, "poolq_worker_tree_cpu_seconds_total")),
            ("pool", metric_sum(samples, "poolq_pool_size")),
            ("cpus", metric_sum(samples, "poolq_available_cpus")),
        ):
            if value is not None:
                fields[key].append(value)

    def total(key: str) -> float | None:
        return sum(fields[key]) if len(fields[key]) == len(urls) and urls else None

    cpus = max(fields["cpus"]) if fields["cpus"] else None  # per replica, not a sum
    return MetricsReading(time.time(), total("pss"), total("rss"), total("cpu"), total("pool"), cpus)


@dataclass
class MetricsProbe:
    """Scrapes worker metrics on a thread while a cell runs (peak memory, CPU delta)."""

    urls: list[str]
    interval: float = 0.5
    readings: list[MetricsReading] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _runner: LoopThread = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._runner = LoopThread(self._loop, "poolq-metrics-probe", join_timeout=10)

    def sample_now(self) -> MetricsReading | None:
        try:
            r = read_metrics(self.urls)
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")
            return None
        self.readings.append(r)
        return r

    def _loop(self) -> None:
        while not self._runner.stopping.wait(self.interval):
            self.sample_now()

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        self._runner.stop()
