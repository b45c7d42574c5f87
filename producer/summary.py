"""The summary rows of an experiment: one per configuration, medians over its repeats.

A configuration is (strategy, slots, workload, container CPU limit). Every number of a cell's
:class:`~producer.results.Figures` (and a container cell's ``ContainerFigures``) becomes the
median of the repeats that measured it; a repeat that measured nothing (NaN, None) is left out
rather than turning the median into nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

from producer.options import STRATEGIES
from producer.results import Cell, ContainerFigures, ContainerRow, Figures, SummaryRow
from producer.stats import finite, group_by, median_of
from producer.workloads import WORKLOADS

F = TypeVar("F", Figures, ContainerFigures)


def medians(cls: type[F], records: Sequence[F]) -> F:
    """The field-by-field median of ``records`` (all of one figures type)."""
    return cls(**{f.name: median_of(getattr(r, f.name) for r in records) for f in dataclasses.fields(cls)})


def _row(strategy: str, conc: int, workload: str, runs: list[Cell]) -> SummaryRow:
    first = runs[0]
    thr = [t for t in (finite(r.figures.throughput_jobs_s) for r in runs) if t is not None]
    row = SummaryRow(
        strategy=strategy,
        concurrency=conc,
        workload=workload,
        mode=first.mode,
        spec=first.spec,
        count=first.count,
        available_cpus=first.available_cpus,
        replicas=first.replicas,
        runs=len(runs),
        runs_ok=sum(1 for r in runs if not r.problems),
        throughput_min=min(thr) if thr else None,
        throughput_max=max(thr) if thr else None,
        failed=sum(r.failed for r in runs),
        problems=[f"r{r.repeat}: {'; '.join(r.problems)}" for r in runs if r.problems],
        limit_basis=first.limit_basis,
        concurrency_arg=first.concurrency_arg,
        figures=medians(Figures, [r.figures for r in runs]),
    )
    containers = [r.container for r in runs if r.container is not None]
    if containers:  # --docker: the container's limits and what the worker made of them
        row.container = ContainerRow(
            cpu_limit=containers[0].cpu_limit,
            memory_limit_mib=containers[0].memory_limit_mib,
            detected_cpus=sorted({r.available_cpus for r in runs}, key=str),
            pool_sizes=sorted({c.pool_size for c in containers}, key=str),
            figures=medians(ContainerFigures, [c.figures for c in containers]),
        )
    return row


def aggregate(cells: Sequence[Cell]) -> list[SummaryRow]:
    """One row per (strategy, concurrency, workload, CPU limit), in the matrix's order."""
    groups = group_by(
        (c for c in cells if c.concurrency is not None),
        lambda c: (c.strategy, int(c.concurrency or 0), c.workload, c.cpu_limit),
    )
    rows = [_row(strategy, conc, workload, runs) for (strategy, conc, workload, _), runs in groups.items()]
    order = {s: i for i, s in enumerate(STRATEGIES)}
    wl = {w: i for i, w in enumerate(WORKLOADS)}
    rows.sort(key=lambda r: (wl.get(r.workload, 99), order.get(r.strategy, 99), r.cpu_limit or 0, r.concurrency))
    return rows
