"""Which functions a worker may run: judged on the resolved object, not on the text of its name.

A job names its function (and its callbacks) by dotted path, and resolving a path imports a
module and walks its attributes. Matched as plain text, ``worker.jobs.*`` let
``worker.jobs.os.system`` through (fnmatch's ``*`` crosses dots), and the walk reached
``os.system`` through ``worker.jobs``' own ``import os``. So here:

- **A pattern is matched segment by segment.** ``*``, ``?`` and ``[...]`` match within ONE dotted
  segment, and a name matches a pattern only when both have as many segments: ``worker.jobs.*``
  admits ``worker.jobs.cpu``, not ``worker.jobs.os.system`` (patterns are split at every ``.``).
- **Names are checked before anything is imported.** A name is two or more ASCII identifiers
  joined by dots, none of them a dunder (``__class__``, ``__globals__``); a single segment would be
  a builtin and is refused. A name outside every pattern imports nothing, and the modules that are
  imported are prefixes of an admitted name, so each of them matches the start of a pattern.
- **The resolved object must be defined where its name says.** It must be a function or a class
  whose ``__module__`` and ``__qualname__`` give back exactly the name: not an alias
  (``run = _impl``), a re-export (``from os import system``), a builtin, or anything reached through
  another module or an instance. ``module.Class.method`` passes when the method is a plain, static
  or class method defined in that class (itself defined in that module); the walk only goes
  through classes, never into another module.

Standard library only: pool children resolve their jobs' functions with it.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import types
from collections.abc import Callable, Iterable, Sequence
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from worker.errors import FunctionNotAllowed

# Longest dotted name looked at; anything longer is refused (the name is hostile input).
MAX_NAME_CHARS = 512
# Resolved functions kept per process: only names that resolved are cached, so the cache holds
# real functions of allowed modules, not names a producer made up; the cap is a safety net. The
# names a pattern admitted (which a producer can make up) are cached up to the same cap.
MAX_RESOLVED_CACHE = 4096
# Set on a Job object (in memory, never saved) once its function resolved under the allowlist:
# the metrics label a job by function name only then (worker/metrics.py).
RESOLVED_ATTRIBUTE = "poolq_resolved"


def split_name(name: object) -> list[str] | None:
    """The segments of a well-formed dotted name, or None (see the module docstring)."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        return None
    parts = name.split(".")
    if len(parts) < 2:
        return None
    for part in parts:
        if not (part.isascii() and part.isidentifier()) or (part.startswith("__") and part.endswith("__")):
            return None
    return parts


def split_pattern(pattern: str) -> tuple[str, ...]:
    """A pattern's segments; ValueError for one that could never admit a name."""
    parts = tuple(pattern.strip().split("."))
    if len(parts) < 2 or not all(parts):
        raise ValueError(
            f"pattern {pattern!r} must have two or more non-empty dotted segments, e.g. 'myapp.tasks.*' "
            "('*' matches within one segment)"
        )
    return parts


class Allowlist:
    """Compiled ``WORKER_ALLOWED_FUNCTIONS`` patterns: name checks and safe resolution."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(p.strip() for p in patterns if p.strip())
        self._split = tuple(split_pattern(p) for p in self.patterns)
        self._resolved: dict[str, Any] = {}
        self._admitted: dict[str, None] = {}  # names a pattern admits (bounded: later ones are re-checked)
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"WORKER_ALLOWED_FUNCTIONS={','.join(self.patterns)!r}"

    def admits(self, name: object) -> bool:
        """Does a pattern admit ``name``, segment by segment? Imports nothing."""
        if not isinstance(name, str):  # from JSON a job's function name can be any value
            return False
        if name in self._resolved or name in self._admitted:  # the common case: a dict look-up
            return True
        parts = split_name(name)
        ok = parts is not None and self._matches(parts)
        if ok and len(self._admitted) < MAX_RESOLVED_CACHE:
            self._admitted[str(name)] = None
        return ok

    def _matches(self, parts: Sequence[str]) -> bool:
        n = len(parts)
        return any(
            len(pat) == n and all(fnmatchcase(seg, p) for seg, p in zip(parts, pat, strict=True)) for pat in self._split
        )

    def may_import(self, module_name: str) -> bool:
        """Could ``module_name`` hold a function a pattern admits (the first segments of one)?"""
        parts = module_name.split(".")
        k = len(parts)
        return any(
            len(pat) > k and all(fnmatchcase(seg, p) for seg, p in zip(parts, pat[:k], strict=True))
            for pat in self._split
        )

    def check(self, name: object, what: str = "function") -> str:
        """Return ``name`` when a pattern admits it; raise :class:`FunctionNotAllowed` otherwise."""
        if isinstance(name, str) and (name in self._resolved or name in self._admitted):
            return name
        if not name:
            raise FunctionNotAllowed(f"job names no {what}")
        if split_name(name) is None:
            raise FunctionNotAllowed(
                f"{what} {str(name)[:200]!r} is not allowed: a name must be two or more dotted Python identifiers "
                "(module and function; no builtins, no dunders); it was not imported or run"
            )
        if not self.admits(name):
            raise FunctionNotAllowed(f"{what} {name!r} is not allowed by {self.describe()}; it was not imported or run")
        return str(name)

    def resolve(self, name: object, what: str = "function") -> Callable[..., Any]:
        """The function or class ``name`` names, defined where the name says; raises
        :class:`FunctionNotAllowed` when a pattern does not admit it or it is defined elsewhere,
        and the usual ``ImportError`` / ``AttributeError`` when it does not exist."""
        found = self._resolved.get(name) if isinstance(name, str) else None
        if found is not None:
            return found  # type: ignore[no-any-return]
        checked = self.check(name, what)
        parts = checked.split(".")
        for i in range(len(parts) - 1, 0, -1):
            module_name = ".".join(parts[:i])
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as e:
                if e.name is not None and not _is_prefix(e.name, module_name):
                    raise  # the module exists but imports something that does not
                continue
            obj = _walk(module, parts[i:], checked, what)
            if not _defined_here(obj, module_name, ".".join(parts[i:])):
                where = f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
                raise FunctionNotAllowed(
                    f"{what} {checked!r} is not allowed: it resolves to {where}, which is not a function or class "
                    f"defined in {module_name} under that name; it was not run"
                )
            with self._lock:
                if len(self._resolved) < MAX_RESOLVED_CACHE:
                    self._resolved[checked] = obj
            return obj  # type: ignore[no-any-return]
        raise ModuleNotFoundError(f"cannot resolve {checked!r}: no module of that name")


def _is_prefix(module: str, of: str) -> bool:
    return of == module or of.startswith(module + ".")


def _walk(module: types.ModuleType, attrs: Sequence[str], name: str, what: str) -> Any:
    """``module.a.b...``: every step but the last must be a class (never another module, never an
    instance: their attributes were not defined in the allowed module)."""
    obj: Any = module
    for j, attr in enumerate(attrs):
        if j and not inspect.isclass(obj):
            raise FunctionNotAllowed(
                f"{what} {name!r} is not allowed: {'.'.join(attrs[:j])} in {module.__name__} is not a class; "
                "it was not run"
            )
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise AttributeError(f"module {module.__name__!r} has no attribute {'.'.join(attrs)!r}") from None
    return obj


def _defined_here(obj: Any, module_name: str, qualname: str) -> bool:
    """Is ``obj`` a function or class whose own module and qualified name are these?"""
    target = obj
    if inspect.ismethod(obj):  # a classmethod looked up on its class
        if not inspect.isclass(obj.__self__):
            return False
        target = obj.__func__
    elif not (inspect.isfunction(obj) or inspect.isclass(obj)):
        try:  # functools.wraps-style wrappers (lru_cache...) carry the wrapped function's names
            if not callable(obj) or not inspect.isfunction(inspect.unwrap(obj)):
                return False
        except ValueError:  # a __wrapped__ cycle
            return False
    return getattr(target, "__module__", None) == module_name and getattr(target, "__qualname__", None) == qualname


def mark_resolved(job: object) -> None:
    """Record on ``job`` that its function resolved under the allowlist (see RESOLVED_ATTRIBUTE)."""
    setattr(job, RESOLVED_ATTRIBUTE, True)


def was_resolved(job: object) -> bool:
    return getattr(job, RESOLVED_ATTRIBUTE, False) is True


@lru_cache(maxsize=16)
def allowlist_for(patterns: tuple[str, ...]) -> Allowlist:
    """One compiled :class:`Allowlist` per set of patterns, shared in the process."""
    return Allowlist(patterns)


def check_allowed(func_name: str | None, patterns: Sequence[str]) -> str:
    """Return ``func_name`` when a pattern admits it (by name: nothing is imported); raise otherwise."""
    return allowlist_for(tuple(patterns)).check(func_name)
