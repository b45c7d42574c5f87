"""Look-ups over an experiment's results that the report and the claims share.

The claims compare like with like: in a container experiment :class:`View` is built for one
CPU limit, with only the rows measured under it and the CPUs the worker detected there.
"""

from __future__ import annotations

import math

from producer.results import Results, StartupRun, SummaryRow
from producer.stats import group_by, median_of


class View:
    def __init__(self, results: Results, cpu_limit: float | None = None) -> None:
        self.r = results
        self.meta = results.meta
        self.summary: list[SummaryRow] = results.summary
        self.cpus = int(self.meta.available_cpus or 1)
        if cpu_limit is not None:
            self.summary = [r for r in self.summary if r.cpu_limit == cpu_limit]
            detected = [c for r in self.summary if r.container for c in r.container.detected_cpus if c]
            self.cpus = int(max(detected)) if detected else math.ceil(cpu_limit)

    def rows(self, strategy: str, workload: str) -> list[SummaryRow]:
        return [r for r in self.summary if r.strategy == strategy and r.workload == workload]

    def primary(self, strategy: str, workload: str) -> SummaryRow | None:
        """The row of the strategy's first (default) size for this workload."""
        rows = self.rows(strategy, workload)
        if not rows:
            return None
        for arg in self.meta.concurrency.get(f"{strategy}:{workload}") or []:
            for r in rows:
                if str(r.concurrency_arg) == str(arg):
                    return r
        return rows[0]

    def thr(self, strategy: str, workload: str) -> float | None:
        row = self.primary(strategy, workload)
        return None if row is None else row.figures.throughput_jobs_s

    def startup_groups(self) -> dict[tuple[str, int], list[StartupRun]]:
        """The start-up runs by (strategy, slots), over the repeats."""
        return group_by(self.r.startup, lambda r: (r.strategy, int(r.concurrency)))

    def slot_costs(self) -> dict[tuple[str, int], tuple[float, float]]:
        """(strategy, slots) -> (idle USS MiB, idle PSS MiB), medians of the start-up runs."""
        out: dict[tuple[str, int], tuple[float, float]] = {}
        for key, rs in self.startup_groups().items():
            uss, pss = median_of(r.idle_uss_mib for r in rs), median_of(r.idle_pss_mib for r in rs)
            if uss is not None and pss is not None:
                out[key] = (uss, pss)
        return out
