"""worker/rqcompat.py is the one module of ``worker`` that touches RQ's private members and key formats.

An RQ upgrade is then checked in one file. Read from the source (``ast``): RQ's private names
are every ``_name`` (single underscore) that RQ's own source defines or reads as an attribute;
no other module of ``worker`` may read or write one of them on any object, nor spell an RQ key
(a string starting with ``rq:``) or a private attribute by name (``getattr(job, "_x")``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import rq

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "worker"
ALLOWED_MODULE = WORKER / "rqcompat.py"

# Private names of RQ that poolq may meet for a reason of its own, each said.
EXCEPTIONS = {
    # PoolWorker overrides the hook RQ's BaseWorker.bootstrap calls to install its signal handlers.
    ("worker/pool_worker.py", "_install_signal_handlers"),
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def rq_private_names() -> set[str]:
    names: set[str] = set()
    for path in Path(rq.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                names.add(node.attr)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _private(node.name):
                names.add(node.name)
    return names


def own_names(tree: ast.AST) -> set[str]:
    """Private names a module defines itself: methods, and attributes of classes that are not RQ's."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    names.add(target.attr)
    return names


def violations(path: Path, rq_names: set[str], rel: str | None = None) -> list[str]:
    rel = rel or path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
    }
    subclasses_rq = any(
        isinstance(n, ast.ClassDef) and any(isinstance(b, ast.Name) and b.id in {"BaseWorker", "Job", "Queue"}
                                            for b in n.bases)
        for n in ast.walk(tree)
    )  # fmt: skip
    own = own_names(tree) if not subclasses_rq else set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in rq_names and node.attr not in own:
            if isinstance(node.value, ast.Name) and node.value.id == "os":  # os._exit
                continue
            if (rel, node.attr) not in EXCEPTIONS:
                found.append(f"{rel}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.FunctionDef) and subclasses_rq and node.name in rq_names:
            if (rel, node.name) not in EXCEPTIONS:
                found.append(f"{rel}:{node.lineno}: def {node.name} (overrides RQ's private member)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value  # also the literal parts of f-strings: f"rq:execution:{m}", f"_{kind}_callback_name"
            if text.startswith("rq:") or (text.startswith("_") and "callback_" in text):
                found.append(f"{rel}:{node.lineno}: {text!r}")
    return found


def test_only_rqcompat_touches_rq_private_members_and_key_formats() -> None:
    rq_names = rq_private_names()
    assert {"_finalize_success", "_handle_success", "_enqueue_job", "_status", "_ordered_queues"} <= rq_names
    found = [v for path in sorted(WORKER.rglob("*.py")) if path != ALLOWED_MODULE for v in violations(path, rq_names)]
    assert found == [], "RQ's private members or key formats outside worker/rqcompat.py:\n" + "\n".join(found)


def test_the_check_finds_what_it_is_for(tmp_path: Path) -> None:
    """The scan itself: lines as the worker had them before worker/rqcompat.py are each caught."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(job, queue, p, n, k):\n"
        "    job._status = 'finished'\n"
        "    queue._enqueue_job(job, pipeline=p, at_front=True)\n"
        "    p.hget(f'rq:execution:{n}', 'worker_name')\n"
        "    return getattr(job, f'_{k}_callback_name', None)\n",
        encoding="utf-8",
    )
    found = [v.split(": ", 1)[1] for v in violations(sample, rq_private_names(), rel="sample.py")]
    assert found == [
        "._status",
        "._enqueue_job",
        "'rq:execution:'",
        "'_callback_name'",
    ]
