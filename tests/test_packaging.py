"""Lean installs: the worker's dependencies are the worker's, the producer's live in an extra."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
WORKER_DEPENDENCIES = {"rq", "redis", "hiredis", "prometheus-client", "pydantic", "pydantic-settings", "psutil"}
PRODUCER_ONLY = {"matplotlib", "rich", "numpy"}


def _requirements() -> list[Requirement]:
    return [Requirement(r) for r in requires("poolq") or []]


def test_a_plain_install_brings_the_worker_dependencies_only() -> None:
    plain = {r.name.lower() for r in _requirements() if r.marker is None}
    assert plain == WORKER_DEPENDENCIES


def test_the_producer_extra_declares_what_the_producer_imports() -> None:
    extra = {
        r.name.lower() for r in _requirements() if r.marker is not None and r.marker.evaluate({"extra": "producer"})
    }
    assert extra >= PRODUCER_ONLY


def test_importing_the_worker_loads_nothing_of_the_producer() -> None:
    """Every worker module, in a fresh interpreter: no matplotlib, rich, numpy or producer."""
    modules = sorted(p.stem for p in (ROOT / "worker").glob("*.py") if p.stem not in ("__main__",))
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module('worker' if m == '__init__' else 'worker.' + m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(PRODUCER_ONLY | {'producer'})!r})\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_fresh_venv_with_the_plain_install_runs_the_worker(tmp_path: Path) -> None:
    """``pip install .`` into a new venv: the worker starts (--help), the producer's libraries are absent."""
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind
    shutil.copytree(ROOT / "worker", src / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "producer", src / "producer", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", *(p.name for p in ROOT.glob("requirements-*.txt"))):
        shutil.copy(ROOT / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
        check=True,
        timeout=280,
        capture_output=True,
    )
    listed = subprocess.run([py, "-m", "pip", "list", "--format=json"], check=True, capture_output=True, text=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert names.isdisjoint(PRODUCER_ONLY), names & PRODUCER_ONLY
    helped = subprocess.run([py, "-m", "worker", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "--strategy" in helped.stdout
    # The producer says what is missing in one line instead of a traceback.
    results = tmp_path / "results"
    shutil.copytree(ROOT / "tests" / "data" / "results-v1-local", results)
    planned = subprocess.run(
        [py, "-m", "producer", "report", "--results", str(results)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert planned.returncode == 2, planned.stderr
    assert planned.stderr.strip().count("\n") == 0 and "poolq[producer]" in planned.stderr, planned.stderr
