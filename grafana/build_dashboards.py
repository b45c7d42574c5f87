"""Writes grafana/dashboards/*.json from the panel definitions below.

Dashboards are code here so that their queries are reviewed like code and tested
(tests/test_dashboards.py runs every panel query against a real Prometheus). Run
``python grafana/build_dashboards.py`` after changing a panel and commit the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "poolq-prometheus"}
OUT = Path(__file__).parent / "dashboards"

# Label matchers every worker series gets from the dashboard variables.
SEL = 'strategy=~"$strategy", instance=~"$instance"'
QSEL = 'strategy=~"$strategy", queue=~"$queue", instance=~"$instance"'
RI = "$__rate_interval"


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def panel(
    title: str,
    exprs: list[tuple[str, str]],
    unit: str,
    *,
    kind: str = "timeseries",
    description: str = "",
    w: int = 12,
    h: int = 8,
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]}},
        "targets": [target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(exprs)],
        "gridPos": {"w": w, "h": h},
    }


def variables(with_queue: bool = True) -> list[dict[str, Any]]:
    def var(name: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": name,
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-var"},
            "definition": query,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        }

    out = [
        var("strategy", "label_values(poolq_worker_info, strategy)"),
        var("instance", "label_values(poolq_pool_size, instance)"),
    ]
    if with_queue:
        out.append(var("queue", "label_values(poolq_jobs_ended_total, queue)"))
    return out


def quantiles(metric: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (strategy, le) (rate({metric}_bucket{{{QSEL}}}[{RI}])))",
            f"{{{{strategy}}}} p{int(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    x = y = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        if x + p["gridPos"]["w"] > 24:
            x, y = 0, y + 8
        p["gridPos"].update(x=x, y=y)
        x += p["gridPos"]["w"]
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["poolq"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "templating": {"list": variables()},
        "links": [{"type": "dashboards", "tags": ["poolq"], "asDropdown": False, "title": "poolq"}],
        "panels": panels,
    }


def strategy_comparison() -> dict[str, Any]:
    finished = f'poolq_jobs_ended_total{{{QSEL}, status="finished"}}'
    pss = f'poolq_worker_tree_memory_bytes{{{SEL}, kind="pss"}}'
    return dashboard(
        "poolq-strategy",
        "poolq / Strategy comparison",
        "Throughput, latency, memory and CPU of each strategy on the same jobs.",
        [
            panel(
                "Throughput per strategy and workload",
                [(f"sum by (strategy, function) (rate({finished}[{RI}]))", "{{strategy}} {{function}}")],
                "reqps",
                description="Finished jobs per second.",
            ),
            panel(
                "Throughput per strategy",
                [(f"sum by (strategy) (rate({finished}[{RI}]))", "{{strategy}}")],
                "reqps",
            ),
            panel("Run time p50 / p95 / p99", quantiles("poolq_job_run_seconds"), "s"),
            panel("Queue wait p50 / p95 / p99", quantiles("poolq_job_wait_seconds"), "s"),
            panel(
                "Memory (PSS of the worker process tree)",
                [
                    (f"sum by (strategy) ({pss})", "{{strategy}} PSS"),
                    (f'sum by (strategy) (poolq_worker_tree_memory_bytes{{{SEL}, kind="rss"}})', "{{strategy}} RSS"),
                ],
                "bytes",
                description="PSS counts pages shared between the worker and its children once: the fair figure.",
            ),
            panel(
                "Memory per job in flight",
                [
                    (
                        f"sum by (strategy) ({pss}) / clamp_min(sum by (strategy) "
                        f"(poolq_jobs_in_progress{{{SEL}}}), 1)",
                        "{{strategy}}",
                    )
                ],
                "bytes",
            ),
            panel(
                "CPU used vs available",
                [
                    (
                        f"sum by (strategy) (rate(poolq_worker_tree_cpu_seconds_total{{{SEL}}}[{RI}]))",
                        "{{strategy}} used",
                    ),
                    (f"sum by (strategy) (poolq_available_cpus{{{SEL}}})", "{{strategy}} available"),
                ],
                "short",
                description="CPU seconds per second of the whole process tree, against the CPUs the workers detected.",
            ),
            panel(
                "Jobs/s per available CPU and per GiB PSS",
                [
                    (
                        f"sum by (strategy) (rate({finished}[{RI}])) / sum by (strategy) (poolq_available_cpus{{{SEL}}})",
                        "{{strategy}} per CPU",
                    ),
                    (
                        f"sum by (strategy) (rate({finished}[{RI}])) / (sum by (strategy) ({pss}) / 1073741824)",
                        "{{strategy}} per GiB",
                    ),
                ],
                "short",
            ),
            panel(
                "auto: where its jobs ran (sub-pool per function)",
                [
                    (
                        f'sum by (pool, function) (rate(poolq_jobs_ended_total{{{QSEL}, strategy="auto", '
                        f'status="finished"}}[{RI}]))',
                        "{{function}} in {{pool}}s",
                    ),
                ],
                "reqps",
                description=(
                    "The auto strategy routes each function to its thread pool or its process pool by the "
                    "function's measured CPU time / wall time (or a hint): finished jobs per second by the "
                    "sub-pool that ran them. Each change of a function's class is logged by the worker and "
                    "counted as the route_changed event."
                ),
            ),
            panel(
                "auto: route changes (5 min)",
                [
                    (
                        f'sum by (instance) (increase(poolq_worker_events_total{{{SEL}, strategy="auto", '
                        f'event="route_changed"}}[5m]))',
                        "{{instance}}",
                    ),
                ],
                "short",
                description="Functions that changed class (new -> cpu/io, cpu <-> io): many means a function near "
                "the line, or a workload that changes.",
            ),
            panel(
                "Pool size and detected CPUs per worker",
                [
                    (f"poolq_pool_size{{{SEL}}}", "{{instance}} pool"),
                    (f"poolq_available_cpus{{{SEL}}}", "{{instance}} CPUs"),
                ],
                "short",
                kind="stat",
                w=24,
                h=5,
            ),
        ],
    )


def queue_health() -> dict[str, Any]:
    ended = f"poolq_jobs_ended_total{{{QSEL}}}"
    return dashboard(
        "poolq-queues",
        "poolq / Queue health",
        "Queue depths, registries, failures, retries, re-queues and abandoned jobs.",
        [
            panel(
                "Jobs per queue and state",
                [('max by (queue, state) (poolq_queue_jobs{queue=~"$queue"})', "{{queue}} {{state}}")],
                "short",
                description="Every replica exports the same Redis figures: max, never sum.",
            ),
            panel(
                "Ended jobs by status",
                [(f"sum by (strategy, status) (rate({ended}[{RI}]))", "{{strategy}} {{status}}")],
                "reqps",
            ),
            panel(
                "Failures by status (5 min)",
                [
                    (
                        f"sum by (strategy, status) (increase(poolq_jobs_ended_total{{{QSEL}, "
                        f'status=~"failed|timed_out|crashed|rejected|abandoned"}}[5m]))',
                        "{{strategy}} {{status}}",
                    )
                ],
                "short",
            ),
            panel(
                "Retries, re-queues, abandoned (5 min)",
                [
                    (
                        f"sum by (status) (increase(poolq_jobs_ended_total{{{QSEL}, "
                        f'status=~"retried|requeued|abandoned"}}[5m]))',
                        "{{status}}",
                    )
                ],
                "short",
            ),
            panel(
                "Pool repairs (5 min)",
                [
                    (
                        f"sum by (strategy) (increase(poolq_runaway_threads_total{{{SEL}}}[5m]))",
                        "{{strategy}} runaway threads",
                    ),
                    (
                        f"sum by (strategy, reason) (increase(poolq_pool_children_replaced_total{{{SEL}}}[5m]))",
                        "{{strategy}} child replaced ({{reason}})",
                    ),
                ],
                "short",
            ),
            panel(
                "Redis errors and malformed jobs (5 min)",
                [
                    (
                        f"sum by (strategy) (increase(poolq_redis_errors_total{{{SEL}}}[5m]))",
                        "{{strategy}} Redis errors",
                    ),
                    (
                        f"sum by (strategy) (increase(poolq_malformed_jobs_total{{{SEL}}}[5m]))",
                        "{{strategy}} malformed",
                    ),
                ],
                "short",
            ),
        ],
    )


def capacity() -> dict[str, Any]:
    in_progress = f"poolq_jobs_in_progress{{{SEL}}}"
    queued = 'max by (strategy, queue) (poolq_queue_jobs{strategy=~"$strategy", queue=~"$queue", state="queued"})'
    return dashboard(
        "poolq-capacity",
        "poolq / Capacity",
        "Busy slots, headroom and a Little's-law check of arrivals against jobs in the system.",
        [
            panel(
                "Busy-slot ratio",
                [(f"avg by (strategy) (poolq_busy_slot_ratio{{{SEL}}})", "{{strategy}}")],
                "percentunit",
            ),
            panel(
                "Headroom (free slots)",
                [(f"sum by (strategy) (poolq_pool_size{{{SEL}}} - {in_progress})", "{{strategy}}")],
                "short",
            ),
            panel(
                "Little's law: λ·W vs jobs in the system",
                [
                    (
                        f"sum by (strategy) (rate(poolq_job_total_seconds_sum{{{QSEL}}}[{RI}]))",
                        "{{strategy}} λ·W (arrival rate x time in system)",
                    ),
                    (
                        f"sum by (strategy) ({in_progress}) + on (strategy) group_left sum by (strategy) ({queued})",
                        "{{strategy}} L (running + queued)",
                    ),
                ],
                "short",
                description="In a steady state both lines agree; a gap means the system is filling or draining.",
            ),
            panel(
                "Throughput vs capacity",
                [
                    (
                        f'sum by (strategy) (rate(poolq_jobs_ended_total{{{QSEL}, status="finished"}}[{RI}]))',
                        "{{strategy}} jobs/s",
                    ),
                    (
                        f"sum by (strategy) (poolq_pool_size{{{SEL}}}) / "
                        f"(sum by (strategy) (rate(poolq_job_run_seconds_sum{{{QSEL}}}[{RI}])) / "
                        f"sum by (strategy) (rate(poolq_job_run_seconds_count{{{QSEL}}}[{RI}])))",
                        "{{strategy}} capacity (slots / mean run time)",
                    ),
                ],
                "reqps",
            ),
        ],
    )


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, build in (
        ("strategy-comparison", strategy_comparison),
        ("queue-health", queue_health),
        ("capacity", capacity),
    ):
        (OUT / f"{name}.json").write_text(json.dumps(build(), indent=2) + "\n")


if __name__ == "__main__":
    main()
