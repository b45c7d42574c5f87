"""An experiment's files: ``results.json`` (everything), ``results.csv`` (a row per cell run),
``jobs.csv`` (every job's timestamps).

``results.csv``'s columns are keys of a cell's JSON object (:meth:`producer.results.Cell.to_json`),
in a fixed order that spreadsheets and older scripts rely on; tests/test_results.py checks that
each still names a field.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from producer.results import Results

CSV_COLUMNS = (
    "strategy", "concurrency", "workload", "repeat", "count", "finished", "failed", "makespan_s",
    "throughput_jobs_s", "limit_jobs_s", "pct_of_limit",
    "wait_p50_s", "wait_p95_s", "wait_p99_s", "run_p50_s", "run_p95_s", "run_p99_s",
    "e2e_p50_s", "e2e_p95_s", "e2e_p99_s", "run_mean_s", "run_cv2",
    "idle_pss_mib", "peak_pss_mib", "idle_rss_mib", "peak_rss_mib", "idle_uss_mib", "peak_uss_mib",
    "cpu_s", "cpu_s_per_1k_jobs", "cores_busy",
    "job_cpu_ms_median", "distinct_pids", "distinct_threads", "producer_cores", "redis_cores", "other_cores",
    "available_cpus", "mode", "spec", "queue", "problems",
    "cpu_limit", "memory_limit_mib", "pool_size", "jobs_per_s_per_cpu", "container_mem_idle_mib",
    "container_mem_peak_mib", "container_mem_usage_peak_mib", "container_mem_max_usage_mib", "container_mem_limit_mib",
    "container_throttled_s", "container_throttled_periods", "healthy_after_s", "worker_exit", "oom_killed",
)  # fmt: skip
JOBS_COLUMNS = ("cell", "strategy", "concurrency", "workload", "repeat", "job_id", "status",
                "enqueued_at", "started_at", "ended_at")  # fmt: skip

JobRow = Sequence[str | int | float | None]  # JOBS_COLUMNS' values of one job


def write_results(out: Path, results: Results, jobs_rows: Sequence[JobRow]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results.to_json(), indent=1, allow_nan=False) + "\n")
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for cell in results.cells:
            c = cell.to_json()
            row = []
            for k in CSV_COLUMNS:
                v = c.get(k)
                if k == "problems":
                    v = "; ".join(v or [])
                elif isinstance(v, float):
                    v = "" if not math.isfinite(v) else f"{v:.6g}"
                row.append("" if v is None else v)
            w.writerow(row)
    with open(out / "jobs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(JOBS_COLUMNS)
        for r in jobs_rows:
            w.writerow(["" if v is None else (f"{v:.6f}" if isinstance(v, float) else v) for v in r])
