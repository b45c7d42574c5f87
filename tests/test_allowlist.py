"""The allowlist's matcher and resolver (worker/allowlist.py), without a worker.

What a pattern admits is decided segment by segment (``*`` never crosses a dot), and what a name
resolves to must be a function or class defined where the name says. The property tests compare
the matcher with a reference written from the definition and check that the resolver only ever
imports module prefixes that could hold an admitted name.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import rq.utils
from hypothesis import given, settings
from hypothesis import strategies as st
from support.base import REPO_ROOT

from worker import allowlist as allowlist_mod
from worker.allowlist import Allowlist, check_allowed, split_pattern
from worker.errors import FunctionNotAllowed


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tests.security_jobs`` importable here, as it is in a worker started from the repository."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))


DEFAULT = Allowlist(("worker.jobs.*",))
APP = Allowlist(("worker.jobs.*", "tests.security_jobs.*", "tests.security_jobs.*.*"))


# ------------------------------------------------------------------------------ matching by name


@pytest.mark.parametrize(
    "name",
    [
        "worker.jobs.os.system",  # worker.jobs' own `import os`
        "worker.jobs.socket.socket",
        "worker.jobs.time.sleep",
        "worker.jobs.threading.Thread",
        "worker.jobs.cpu.__globals__",
        "worker.jobs",
        "worker.jobsx.cpu",
        "os.system",
        "print",  # a builtin: one segment
        "builtins.print",
        "worker.jobs.__builtins__",
        "worker.jobs.__class__",
        "worker.jobs..cpu",
        "worker.jobs.cpu ",
        "worker.jobs.cpu\n",
        "worker.jobs.\uff43pu",  # a non-ASCII look-alike (fullwidth c)
        "",
        "x" * 600 + ".y",
    ],
)
def test_star_stays_within_one_segment_and_bad_names_are_refused(name: str) -> None:
    assert not DEFAULT.admits(name)
    with pytest.raises(FunctionNotAllowed):
        DEFAULT.check(name)
    with pytest.raises(FunctionNotAllowed):
        check_allowed(name, ["worker.jobs.*"])


@pytest.mark.parametrize("name", [None, 3, ["worker.jobs.cpu"], {"a": 1}, b"worker.jobs.cpu"])
def test_a_function_name_that_is_not_a_string_is_refused(name: object) -> None:
    """From a JSON payload the function name can be any JSON value."""
    assert not DEFAULT.admits(name)
    with pytest.raises(FunctionNotAllowed):
        DEFAULT.resolve(name)


def test_the_builtin_workloads_are_admitted_by_the_default_pattern() -> None:
    for name in ("worker.jobs.cpu", "worker.jobs.io", "worker.jobs.noop", "worker.jobs.mixed", "worker.jobs.alloc"):
        assert DEFAULT.admits(name)
        assert DEFAULT.resolve(name) is rq.utils.import_attribute(name)


def test_question_mark_and_brackets_match_one_character_of_one_segment() -> None:
    allow = Allowlist(("app.task?.run_[ab]",))
    assert allow.admits("app.task1.run_a") and allow.admits("app.taskX.run_b")
    assert not allow.admits("app.task.run_a")  # ? is exactly one character
    assert not allow.admits("app.task1.run_c")
    assert not allow.admits("app.task1.run_a.x")


@pytest.mark.parametrize("pattern", ["*", "worker", "worker..jobs", ".jobs", "worker.jobs."])
def test_a_pattern_that_could_never_admit_a_name_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        split_pattern(pattern)


# ------------------------------------------------------------------------------ resolving


@pytest.mark.parametrize(
    ("name", "defined"),
    [
        ("tests.security_jobs.os.system", None),  # walks into another module: refused before getattr
        ("tests.security_jobs.subprocess.run", None),
        ("tests.security_jobs.run_alias", "subprocess.run"),  # a re-export
        # a class imported from elsewhere (defined in pathlib._local from Python 3.13 on)
        ("tests.security_jobs.Path", f"{Path.__module__}.Path"),
        ("tests.security_jobs.Redis", "redis.client.Redis"),
    ],
)
def test_what_a_task_module_imports_is_not_admitted_through_its_glob(name: str, defined: str | None) -> None:
    assert APP.admits(name)  # the text matches; the resolved object decides
    with pytest.raises(FunctionNotAllowed) as e:
        APP.resolve(name)
    if defined is not None:
        assert defined in str(e.value)


def test_functions_and_methods_defined_in_the_allowed_module_resolve() -> None:
    from tests import security_jobs

    assert APP.resolve("tests.security_jobs.touch") is security_jobs.touch
    assert APP.resolve("tests.security_jobs.Tasks") is security_jobs.Tasks
    assert APP.resolve("tests.security_jobs.Tasks.static_touch") is security_jobs.Tasks.static_touch
    assert APP.resolve("tests.security_jobs.Tasks.class_touch") == security_jobs.Tasks.class_touch


def test_a_method_of_a_module_level_instance_is_refused() -> None:
    allow = Allowlist(("json.*", "json._default_encoder.*"))
    with pytest.raises(FunctionNotAllowed, match="not a class"):
        allow.resolve("json._default_encoder.encode")  # an instance's bound method
    with pytest.raises(FunctionNotAllowed):
        allow.resolve("json._default_encoder")  # an instance


def test_missing_functions_and_modules_fail_as_rqs_lookup_does() -> None:
    with pytest.raises(AttributeError):
        DEFAULT.resolve("worker.jobs.no_such_function")
    with pytest.raises(ModuleNotFoundError):
        Allowlist(("no_such_package_for_poolq.*",)).resolve("no_such_package_for_poolq.f")


def test_a_name_outside_every_pattern_imports_nothing() -> None:
    """In a fresh interpreter: refused names leave ``sys.modules`` exactly as it was."""
    code = """
import json, sys
from worker.allowlist import Allowlist
from worker.errors import FunctionNotAllowed
allow = Allowlist(["worker.jobs.*"])
before = set(sys.modules)
for name in ["tests.import_marker.callback", "xml.dom.minidom.parseString", "worker.jobs.os.system.x",
             "ctypes.CDLL", "print", "worker.composite.cpu_bound"]:
    try:
        allow.resolve(name)
    except FunctionNotAllowed:
        pass
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, cwd=REPO_ROOT
    )
    assert json.loads(out.stdout) == [], out.stdout


# ------------------------------------------------------------------------------ properties

SEGMENT = st.from_regex(r"\A[a-c][a-c0-9_]{0,3}\Z")  # dunders: tested above
PATTERN_SEGMENT = st.one_of(SEGMENT, st.from_regex(r"\A[a-c*?][a-c0-9*?]{0,3}\Z"), st.just("*"))
NAMES = st.lists(SEGMENT, min_size=1, max_size=5).map(".".join)
PATTERNS = st.lists(st.lists(PATTERN_SEGMENT, min_size=2, max_size=4).map(".".join), min_size=1, max_size=3)


def reference_admits(name: str, patterns: list[str]) -> bool:
    """The definition, written independently: same number of segments, each matched alone."""
    parts = name.split(".")
    if len(parts) < 2 or any(p.startswith("__") and p.endswith("__") for p in parts):
        return False
    for pattern in patterns:
        segs = pattern.split(".")
        if len(segs) == len(parts) and all(fnmatchcase(a, b) for a, b in zip(parts, segs, strict=True)):
            return True
    return False


@settings(max_examples=400, deadline=None)
@given(NAMES, PATTERNS)
def test_matcher_agrees_with_the_segment_by_segment_definition(name: str, patterns: list[str]) -> None:
    allow = Allowlist(patterns)
    assert allow.admits(name) == reference_admits(name, patterns)
    if allow.admits(name):  # whatever it admits, each of its module prefixes may be imported
        parts = name.split(".")
        assert all(allow.may_import(".".join(parts[:i])) for i in range(1, len(parts)))


@settings(max_examples=200, deadline=None)
@given(st.lists(SEGMENT, min_size=2, max_size=3), st.lists(SEGMENT, min_size=1, max_size=3))
def test_a_star_never_admits_a_deeper_name(prefix: list[str], deeper: list[str]) -> None:
    """``a.b.*`` admits ``a.b.x`` but never ``a.b.x.y``: what the old whole-string match let through."""
    pattern = ".".join([*prefix, "*"])
    name = ".".join([*prefix, *deeper])
    assert fnmatchcase(name, pattern)  # the text match the worker used to trust
    assert Allowlist([pattern]).admits(name) == (len(deeper) == 1)


@contextlib.contextmanager
def imports_recorded() -> Iterator[list[str]]:
    """Every module name the resolver asks importlib for; nothing is really imported."""
    seen: list[str] = []

    def record(name: str, package: str | None = None) -> Any:
        seen.append(name)
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    real = allowlist_mod.importlib.import_module
    allowlist_mod.importlib.import_module = record  # type: ignore[assignment]
    try:
        yield seen
    finally:
        allowlist_mod.importlib.import_module = real


@settings(max_examples=300, deadline=None)
@given(NAMES, PATTERNS)
def test_resolver_only_tries_modules_that_could_hold_an_admitted_name(name: str, patterns: list[str]) -> None:
    allow = Allowlist(patterns)
    with imports_recorded() as seen, contextlib.suppress(FunctionNotAllowed, ModuleNotFoundError):
        allow.resolve(name)
    if not reference_admits(name, patterns):
        assert seen == []
    for module in seen:
        assert allow.may_import(module), (module, patterns)
        assert name.startswith(module + ".")
