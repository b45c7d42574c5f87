"""The worker's shortcuts around RQ give RQ's results: timestamps, serializers, function lookup.

``install_rq_fast_paths`` (worker/rqcompat.py) replaces three RQ helpers in the worker
process; ``worker.allowlist.Allowlist.resolve`` replaces RQ's ``import_attribute`` (in pool
children and in the worker). These tests compare them with RQ's own functions. (The lifecycle writes themselves are
checked end to end, with stock RQ reading them back, in tests/test_core.py.)
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import rq.job
import rq.serializers
import rq.utils
from rq.serializers import JSONSerializer

from worker.allowlist import Allowlist
from worker.rqcompat import install_rq_fast_paths

NAMES = ("resolve_serializer", "utcparse", "utcformat")


@pytest.fixture
def rq_originals() -> Iterator[dict[str, Any]]:
    """RQ's own functions; every rq module's names are put back afterwards."""
    saved = {
        (mod_name, name): getattr(mod, name)
        for mod_name, mod in list(sys.modules.items())
        if mod_name == "rq" or mod_name.startswith("rq.")
        for name in NAMES
        if hasattr(mod, name)
    }
    originals = {
        "resolve_serializer": rq.serializers.resolve_serializer,
        "utcparse": rq.utils.utcparse,
        "utcformat": rq.utils.utcformat,
    }
    install_rq_fast_paths()
    yield originals
    for (mod_name, name), value in saved.items():
        setattr(sys.modules[mod_name], name, value)


def test_timestamps_are_rqs(rq_originals: dict[str, Any]) -> None:
    utc = dt.UTC
    cases = [
        dt.datetime(2026, 11, 22, 6, 21, 18, 123456, tzinfo=utc),
        dt.datetime(2026, 11, 22, 6, 21, 18, 0, tzinfo=utc),
        dt.datetime(1999, 1, 2, 3, 4, 5, 6),  # naive, as RQ sometimes has them
        dt.datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        dt.datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=utc),  # before year 1000: RQ's own
        dt.datetime.now(utc),
    ]
    fast_format, fast_parse = rq.utils.utcformat, rq.utils.utcparse
    assert fast_format is not rq_originals["utcformat"]
    for value in cases:
        text = rq_originals["utcformat"](value)
        assert fast_format(value) == text
        if value.year >= 1000:
            parsed, expected = fast_parse(text), rq_originals["utcparse"](text)
            assert (parsed, parsed.tzinfo) == (expected, expected.tzinfo)
    # Other shapes take RQ's own path: the same result or the same error.
    assert fast_parse("2026-11-22T06:21:18Z") == rq_originals["utcparse"]("2026-11-22T06:21:18Z")
    for bad in ("yesterday-ish", "2026-11-22T06:21:18.123456+02:00", "2026-11-22", "2026-13-22T06:21:18.123456Z"):
        with pytest.raises(ValueError):
            rq_originals["utcparse"](bad)
        with pytest.raises(ValueError):
            fast_parse(bad)


def test_serializer_lookup_is_rqs(rq_originals: dict[str, Any]) -> None:
    fast = rq.serializers.resolve_serializer
    assert fast is not rq_originals["resolve_serializer"]
    for arg in (JSONSerializer, "rq.serializers.JSONSerializer", None):
        assert fast(arg) is rq_originals["resolve_serializer"](arg)
        assert fast(arg) is fast(arg)

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def dumps(self, obj: Any) -> bytes:
            return b""

        def loads(self, data: bytes) -> Any:
            return None

    u = Unhashable()
    assert fast(u) is u
    with pytest.raises(NotImplementedError):
        fast(object())
    assert rq.job.resolve_serializer is fast  # replaced where RQ imported it by name


def test_child_function_lookup_is_rqs() -> None:
    """For what the allowlist admits, the resolver finds the very object RQ's lookup finds (the
    names it refuses are tested in tests/test_allowlist.py), and fails as RQ's does on the rest."""
    allow = Allowlist(("worker.jobs.*", "json.*", "json.decoder.*", "no_such_package_for_poolq.*"))
    for name in ("worker.jobs.noop", "worker.jobs.cpu", "json.dumps", "json.decoder.JSONDecoder"):
        assert allow.resolve(name) is rq.utils.import_attribute(name), name
    with pytest.raises(AttributeError):
        allow.resolve("worker.jobs.no_such_function")
    with pytest.raises(ModuleNotFoundError):
        allow.resolve("no_such_package_for_poolq.func")


def test_prepare_resent_after_a_lost_reply_is_a_no_op(redis: Any) -> None:
    """The prepare step's Lua guard: the first send moves the job out of the intermediate list and
    writes its execution; a resend of the same writes (the reply was lost, the worker retries)
    answers 1 and writes nothing twice; a different execution (a recovery took the job meanwhile)
    is refused. Without the second rule a lost reply left the job started but never run."""
    from worker.lifecycle.scripts import APPLY_LUA

    script = redis.register_script(APPLY_LUA)
    redis.rpush("rq:intermediate:q", "job-1")

    def argv(execution_key: str) -> list[Any]:
        return ["first", 4, "LREM", "rq:intermediate:q", 1, "job-1", 2, "INCR", "writes", 4, "HSET", execution_key,
                "worker", "w1"]  # fmt: skip

    assert script(keys=["rq:execution:job-1:a"], args=argv("rq:execution:job-1:a")) == 1
    assert redis.llen("rq:intermediate:q") == 0 and redis.get("writes") == b"1"
    assert script(keys=["rq:execution:job-1:a"], args=argv("rq:execution:job-1:a")) == 1  # the resend
    assert redis.get("writes") == b"1"  # not applied twice
    assert script(keys=["rq:execution:job-1:b"], args=argv("rq:execution:job-1:b")) == 0  # someone else's
    assert redis.get("writes") == b"1" and not redis.exists("rq:execution:job-1:b")
