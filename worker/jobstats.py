"""The job counter and the three job histograms of the metrics, cheap to update.

``poolq_jobs_ended_total`` and ``poolq_job_{run,wait,total}_seconds`` are updated once per
ended job on the job's own thread, thousands of times a second: here that is one lock, a dict
look-up and three ``bisect`` calls, and the exposition is built when Prometheus scrapes.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_go_string: Callable[[float], str] = floatToGoString  # how Prometheus writes a bucket bound (untyped)

# 1 ms .. 10 min: noop jobs (queue overhead) to the longest reasonable batch job.
BUCKETS_SECONDS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


class JobStats(Collector):
    """The job counter and the three job histograms, kept in plain lists under one lock.

    prometheus-client's ``Counter``/``Histogram`` take a lock per value: one ended job would
    cost 1 + 3 x 2 lock round trips and a linear bucket scan (~6-8 us). Here it is one lock, a
    dict look-up and three ``bisect`` calls (~1-2 us); the exposition is built at scrape time.
    """

    HISTOGRAMS = (
        ("poolq_job_run_seconds", "Time a job ran in this worker (started -> ended)."),
        ("poolq_job_wait_seconds", "Time a job waited in its queue (enqueued_at -> started_at)."),
        ("poolq_job_total_seconds", "End-to-end time of a job execution (enqueued_at -> ended)."),
    )

    def __init__(self, strategy: str, buckets: Sequence[float] = BUCKETS_SECONDS) -> None:
        self.strategy = strategy
        self.bounds = sorted(buckets)
        self.lock = threading.Lock()
        # (pool, queue, function, status) -> executions ended
        self.ended: dict[tuple[str, str, str, str], int] = {}
        # (pool, queue, function) -> one list per histogram: a count per bucket (+Inf last), then the sum
        self.timings: dict[tuple[str, str, str], tuple[list[float], list[float], list[float]]] = {}

    def record(
        self,
        queue: str,
        function: str,
        status: str,
        run: float | None,
        wait: float | None,
        total: float | None,
        pool: str | None = None,
    ) -> None:
        bounds = self.bounds
        pool = pool or self.strategy
        key = (pool, queue, function, status)
        with self.lock:
            ended = self.ended
            ended[key] = ended.get(key, 0) + 1
            if run is None:
                return
            hists = self.timings.get((pool, queue, function))
            if hists is None:
                n = len(bounds) + 2
                hists = self.timings[pool, queue, function] = ([0.0] * n, [0.0] * n, [0.0] * n)
            h = hists[0]
            h[bisect_left(bounds, run)] += 1
            h[-1] += run
            if wait is not None:
                h = hists[1]
                h[bisect_left(bounds, wait)] += 1
                h[-1] += wait
            if total is not None:
                h = hists[2]
                h[bisect_left(bounds, total)] += 1
                h[-1] += total

    def collect(self) -> Iterable[Metric]:
        with self.lock:
            ended = dict(self.ended)
            timings = {k: tuple(list(h) for h in v) for k, v in self.timings.items()}
        s = self.strategy
        c = CounterMetricFamily(
            "poolq_jobs_ended",
            "Job executions ended, by pool that ran them (a sub-pool for auto), queue, function "
            "(allowlisted name or 'other') and status.",
            labels=["strategy", "pool", "queue", "function", "status"],
        )
        for (pool, queue, function, status), n in sorted(ended.items()):
            c.add_metric([s, pool, queue, function, status], n)
        yield c
        les = [_go_string(b) for b in self.bounds] + ["+Inf"]
        for i, (name, doc) in enumerate(self.HISTOGRAMS):
            fam = HistogramMetricFamily(name, doc, labels=["strategy", "pool", "queue", "function"], unit="seconds")
            for (pool, queue, function), hists in sorted(timings.items()):
                h = hists[i]
                cumulative, acc = [], 0.0
                for le, count in zip(les, h[:-1], strict=True):
                    acc += count
                    cumulative.append((le, acc))
                fam.add_metric([s, pool, queue, function], cumulative, h[-1])
            yield fam
