"""The import-layer contract: which module may import which, so that cycles cannot come back.

Every module of a checked package sits in exactly one layer (bottom first, below). A module
may import modules of its own layer or of a layer below, never above; there is no import cycle
at all, direct or through other modules; two layers declared independent import nothing from
each other. Packages stack the same way: ``worker`` imports neither ``producer`` nor ``bench``,
``producer`` does not import ``bench``.

Imports are read from the source (``ast``), every one of them: at the top of a module, inside
a function (lazy imports count: they are the cycles a reader trips over), under
``TYPE_CHECKING``. A new module must be given a layer here, which is the point: its place is
decided, not discovered. docs/architecture.md draws the same picture.

``worker/`` joined once ``worker.composite <-> worker.strategies`` was gone (the strategies
became a package whose registry is one dict literal).
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A package may import only itself and the packages before it.
PACKAGES = ("worker", "producer", "bench")

# package -> layers, bottom first: (name, module patterns). fnmatch patterns: "producer.claims*".
LAYERS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "producer": [
        ("foundations", ("producer", "producer.errors", "producer.records", "producer.stats", "producer.erlang",
                         "producer.fmt", "producer.settings", "producer.loop_thread")),
        ("requests", ("producer.workloads", "producer.arrivals", "producer.options")),
        ("results", ("producer.results", "producer.files", "producer.summary")),
        ("instruments", ("producer.enqueue", "producer.measure", "producer.sampling", "producer.scrape",
                         "producer.processes", "producer.startup", "producer.sizing", "producer.containers",
                         "producer.container_stats")),
        ("reading", ("producer.view", "producer.claims*", "producer.report", "producer.charts", "producer.capacity",
                     "producer.plan")),
        ("runner", ("producer.context", "producer.backends*", "producer.cell", "producer.experiment")),
        ("commands", ("producer.validate", "producer.demo", "producer.cli", "producer.__main__")),
    ],
    "bench": [
        ("harness", ("bench", "bench.catalog", "bench.procs")),
        ("measurement", ("bench.limits", "bench.cell")),
        ("report", ("bench.table",)),
        ("commands", ("bench.cli", "bench.run", "bench.scale", "bench.profile", "bench.composite", "bench.sizing",
                      "bench.metrics_overhead")),
    ],
    "worker": [
        ("foundations", ("worker", "worker.defaults", "worker.errors", "worker.events", "worker.redact",
                         "worker.config_values", "worker.cpus", "worker.proctree", "worker.outage", "worker.hints",
                         "worker.quarantine", "worker.rqcompat", "worker.callbacks", "worker.webhooks", "worker.jobs",
                         "worker.jobstats", "worker.inflight", "worker.cli_parser", "worker.flags")),
        ("policies", ("worker.allowlist", "worker.hooks", "worker.jobdata", "worker.guarded_job", "worker.recovery",
                      "worker.settings", "worker.poolchild")),
        ("plug-ins", ("worker.metrics",)),
        ("strategies", ("worker.strategies*", "worker.composite")),
        ("lifecycle", ("worker.lifecycle*",)),
        ("loop", ("worker.monitor", "worker.pool_worker")),
        ("commands", ("worker.cli", "worker.__main__")),
    ],
}  # fmt: skip

# Layers that import nothing from each other although one sits above the other: whatever reads
# results (report, charts, planner) must work from a results.json alone, without Redis or workers.
# The worker's: metrics see events and a small view of the worker, never a strategy, the lifecycle
# or PoolWorker; a strategy runs work it is handed and knows nothing of a job's lifecycle (which
# a child process could run), and the lifecycle knows no strategy.
INDEPENDENT = {
    "producer": [("instruments", "reading")],
    "worker": [
        ("plug-ins", "strategies"),
        ("plug-ins", "lifecycle"),
        ("plug-ins", "loop"),
        ("strategies", "lifecycle"),
    ],
}


def modules(package: str, root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file for every module of ``package`` (a package's ``__init__`` is its name)."""
    out = {}
    for f in sorted((root / package).rglob("*.py")):
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def imported(name: str, file: Path, known: Iterable[str]) -> set[str]:
    """The modules among ``known`` that ``name`` imports (a name not a module: its package)."""
    known = set(known)
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]

    def resolve(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    out: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..a import b
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            r = resolve(t)
            if r is not None and r != name:
                out.add(r)
    return out


def graph(packages: Iterable[str], root: Path = ROOT) -> dict[str, set[str]]:
    mods: dict[str, Path] = {}
    for p in packages:
        mods.update(modules(p, root))
    return {m: imported(m, f, mods) for m, f in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or round about (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer_of(package: str, module: str) -> list[int]:
    return [
        i for i, (_, patterns) in enumerate(LAYERS[package]) if any(fnmatch.fnmatchcase(module, p) for p in patterns)
    ]


def violations(package: str, edges: dict[str, set[str]]) -> list[str]:
    """Upward imports and imports between independent layers within ``package``."""
    names = [n for n, _ in LAYERS[package]]
    apart = {frozenset(pair) for pair in INDEPENDENT.get(package, [])}
    out = []
    for src, targets in sorted(edges.items()):
        if src.split(".")[0] != package:
            continue
        (a,) = layer_of(package, src)
        for dst in sorted(t for t in targets if t.split(".")[0] == package):
            (b,) = layer_of(package, dst)
            if b > a:
                out.append(f"{src} ({names[a]}) imports {dst} ({names[b]}), a layer above")
            elif frozenset((names[a], names[b])) in apart:
                out.append(f"{src} ({names[a]}) imports {dst} ({names[b]}): the two layers are independent")
    return out


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_every_module_has_exactly_one_layer(package: str) -> None:
    found = modules(package)
    misplaced = {m: [LAYERS[package][i][0] for i in layer_of(package, m)] for m in found}
    assert {m: ls for m, ls in misplaced.items() if len(ls) != 1} == {}, "give each module one layer in LAYERS"
    patterns = [p for _, ps in LAYERS[package] for p in ps]
    stale = [p for p in patterns if not any(fnmatch.fnmatchcase(m, p) for m in found)]
    assert stale == [], "LAYERS names modules that no longer exist"


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_only_go_down(package: str) -> None:
    assert violations(package, graph([package])) == []


def test_there_is_no_import_cycle() -> None:
    assert cycles(graph(LAYERS)) == []


def test_packages_import_only_the_packages_below() -> None:
    edges = graph(PACKAGES)
    rank = {p: i for i, p in enumerate(PACKAGES)}
    upward = sorted(
        f"{src} imports {dst}"
        for src, targets in edges.items()
        for dst in targets
        if rank[dst.split(".")[0]] > rank[src.split(".")[0]]
    )
    assert upward == []


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The contract itself can fail: a two-module cycle through a lazy import, found."""
    pkg = tmp_path / "demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from demo.high import g\n    return g\n")
    (pkg / "high.py").write_text("from . import low\n\ndef g():\n    return low\n")
    edges = graph(["demo"], tmp_path)
    assert edges["demo.low"] == {"demo.high"} and edges["demo.high"] == {"demo.low"}
    assert cycles(edges) == [["demo.high", "demo.low"]]
    LAYERS["demo"] = [("low", ("demo", "demo.low")), ("high", ("demo.high",))]
    try:
        assert violations("demo", edges) == ["demo.low (low) imports demo.high (high), a layer above"]
    finally:
        del LAYERS["demo"]
