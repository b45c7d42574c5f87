"""An experiment's results as records (producer/results.py): the file format did not change.

``tests/data/results-v1-*`` were written by the producer before its results became records
(a local run of thread, process and inline with start-up and timeout runs; container cells at
two CPU limits, two repeats each), together with the ``report.md`` and the plan that code made
of them. Read by today's code they must give the same report, the same plan and the same
summary medians; every cell must survive a round trip through its JSON object; every
``results.csv`` column must name a field. No Redis needed: this is arithmetic over files.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
from test_producer import call, one_line

from producer import report
from producer.cell import add_job_stats
from producer.errors import BadInput
from producer.files import CSV_COLUMNS
from producer.measure import JobStats
from producer.plan import make_plan, render
from producer.results import Cell, ContainerCell, Results, load_results
from producer.summary import aggregate

DATA = Path(__file__).resolve().parent / "data"
CASES = {"results-v1-local": ("io", 300.0, 0.5), "results-v1-docker": ("cpu", 100.0, 1.0)}


def raw(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / case / "results.json").read_text())
    return data


def same(a: Any, b: Any) -> bool:
    """Equal, numbers within rounding."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


@pytest.mark.parametrize("case", sorted(CASES))
def test_older_results_give_the_report_the_older_code_wrote(case: str) -> None:
    results = load_results(DATA / case)
    assert report.render(results, None) == (DATA / case / "report.md").read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_older_results_give_the_plan_the_older_code_made(case: str) -> None:
    workload, rate, slo = CASES[case]
    expected = next((DATA / case).glob("plan-*.txt")).read_text()
    assert render(make_plan(load_results(DATA / case), workload, rate, slo_p95=slo)) == expected


@pytest.mark.parametrize("case", sorted(CASES))
def test_summary_rows_are_the_medians_the_older_code_computed(case: str) -> None:
    results = load_results(DATA / case)
    rows = Results(summary=aggregate(results.cells)).to_json()["summary"]
    assert len(rows) == len(raw(case)["summary"])
    for mine, theirs in zip(rows, raw(case)["summary"], strict=True):
        assert same(mine, theirs), (mine, theirs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_cell_survives_a_round_trip_through_its_json(case: str) -> None:
    for old in raw(case)["cells"]:
        new = Cell.from_json(old).to_json()
        assert {k: new[k] for k in old} == old  # every key kept, every value the same
        added = set(new) - set(old)
        assert all(new[k] in (None, [], 1) for k in added), {k: new[k] for k in added}
    again = Results.from_json(Results.from_json(raw(case)).to_json()).to_json()
    assert again == Results.from_json(raw(case)).to_json()


def test_every_csv_column_names_a_field() -> None:
    cell = Cell("docker", "thread", "auto", "io", 1, 10, "io()", "q", container=ContainerCell(1.0, 512.0))
    assert set(CSV_COLUMNS) <= set(cell.to_json())


def test_every_job_statistic_reaches_the_cell() -> None:
    """summarize()'s figures are copied one by one: none may be forgotten."""
    values: dict[str, Any] = {f.name: float(i + 1) for i, f in enumerate(dataclasses.fields(JobStats))}
    values["statuses"] = {"finished": 3}
    stats = JobStats(**values)
    cell = Cell("local", "thread", "4", "io", 1, 10, "io()", "q")
    add_job_stats(cell, stats)
    for name, value in values.items():
        where = cell.figures if hasattr(cell.figures, name) else cell
        assert getattr(where, name) == value, name


def test_a_file_that_is_not_an_experiments_results_is_refused_in_one_line(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"summary": [{"workload": "io"}]}))  # no strategy
    with pytest.raises(BadInput, match=r"not an experiment's results\.json"):
        load_results(tmp_path)
    assert call(["report", "--results", str(tmp_path)]) == 2
    assert "not an experiment's results.json" in one_line(capsys.readouterr().err)
