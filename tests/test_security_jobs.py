"""Hostile job hashes against real workers, every strategy: what a job names is judged on what it
resolves to, callbacks obey the allowlist and work off the main thread, webhooks go only where
``WORKER_WEBHOOK_HOSTS`` allows, and the metrics' ``function`` label stays bounded.

Anyone who can write to Redis can write any job hash; these jobs are written with stock RQ
(JSON), as such a writer would. Evidence that something ran or was imported is left outside
Redis (marker files, a loopback HTTP server), so it does not depend on the worker's word.
"""

from __future__ import annotations

import http.server
import json
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Callback
from rq.registry import FailedJobRegistry
from rq.webhook import Webhook
from support import metrics as mh
from support.base import PYTHON, REPO_ROOT, RQ_CLI, free_port, wait_for
from support.rq_jobs import fetch, json_queue
from support.workers import assert_ok, run_worker, start_worker, stop, worker_env

from worker.strategies import STRATEGIES

ALL = sorted(STRATEGIES)
# hybrid: one child running the jobs on its threads; concurrency 2 everywhere.
POOL_ARGS: dict[str, tuple[str, ...]] = {"hybrid": ("--processes", "1")}
MODULE = "tests.security_jobs"
ALLOW = ("--allowed-functions", f"worker.jobs.*,{MODULE}.*")


def worker_args(strategy: str, *extra: str) -> tuple[str, ...]:
    return (*ALLOW, *POOL_ARGS.get(strategy, ()), *extra)


def failure_text(conn: Redis, job_id: str) -> str:
    res = fetch(conn, job_id).latest_result()
    return (res.exc_string or "") if res is not None else ""


def assert_refused(conn: Redis, job_id: str, *mentions: str, context: str = "") -> None:
    job = fetch(conn, job_id)
    text = failure_text(conn, job_id)
    assert job.get_status() == "failed", f"{job.func_name}: {job.get_status()} {text[-500:]}\n{context}"
    assert job_id in FailedJobRegistry("default", connection=conn).get_job_ids()
    assert "FunctionNotAllowed" in text and "not allowed" in text, text
    for m in mentions:
        assert m in text, text


# ------------------------------------------------------------------------------ functions


@pytest.mark.parametrize("strategy", ALL)
def test_functions_reached_through_an_allowed_modules_imports_never_run(
    redis: Redis, redis_url: str, strategy: str, tmp_path: Path
) -> None:
    """``worker.jobs.os.system`` (default glob), ``tests.security_jobs.subprocess.run`` and the
    re-export ``tests.security_jobs.run_alias`` (its module allowed as ``<module>.*``), and a
    bound-method job (``instance`` set in the hash): none runs (no marker file), each fails with
    the reason, and the good job after them runs."""
    q = json_queue(redis)
    markers = {k: tmp_path / k for k in ("os_system", "subprocess_run", "alias", "instance")}
    jobs = {
        "os_system": q.enqueue("worker.jobs.os.system", f"touch {markers['os_system']}"),
        "subprocess_run": q.enqueue(f"{MODULE}.subprocess.run", ["touch", str(markers["subprocess_run"])]),
        "alias": q.enqueue(f"{MODULE}.run_alias", ["touch", str(markers["alias"])]),
        "instance": q.enqueue(f"{MODULE}.touch", str(markers["instance"])),
    }
    # What a writer of the hash can put there: an instance for a "bound method" job.
    data = json.dumps([f"{MODULE}.touch", "an instance", [str(markers["instance"])], {}]).encode()
    redis.hset(jobs["instance"].key, "data", zlib.compress(data))
    good = q.enqueue(f"{MODULE}.touch", str(tmp_path / "good"))

    run = assert_ok(run_worker(redis_url, strategy, 2, extra_args=worker_args(strategy)))

    for name, path in markers.items():
        assert not path.exists(), f"{name} ran under {strategy}\n{run.stderr[-3000:]}"
    assert_refused(redis, jobs["os_system"].id, "worker.jobs.os.system", context=run.stderr)
    assert_refused(redis, jobs["subprocess_run"].id, "subprocess.run", context=run.stderr)
    assert_refused(redis, jobs["alias"].id, "subprocess.run", context=run.stderr)  # what it resolves to
    assert_refused(redis, jobs["instance"].id, "instance", context=run.stderr)
    assert fetch(redis, good.id).get_status() == "finished", run.describe()
    assert (tmp_path / "good").exists()


# ------------------------------------------------------------------------------ callbacks


@pytest.mark.parametrize("strategy", ALL)
def test_callbacks_outside_the_allowlist_are_never_imported_or_called(
    redis: Redis, redis_url: str, strategy: str, tmp_path: Path
) -> None:
    """Allowed jobs naming a callback the allowlist refuses — a module outside it (which would
    write a marker when imported and another when called), ``builtins.print``, a re-export from
    an allowed module — are refused before they run: no marker, the job's own function not run,
    the failure callback beside a refused success callback not called either."""
    import_marker, call_marker = tmp_path / "imported", tmp_path / "called"
    q = json_queue(redis)
    outside = Callback("tests.import_marker.callback")
    record_failure = Callback(f"{MODULE}.record_failure")
    jobs = {
        "success callback outside": q.enqueue(f"{MODULE}.touch", str(tmp_path / "a"), on_success=outside),
        "failure callback outside": q.enqueue(f"{MODULE}.boom", on_failure=outside),
        "stopped callback outside": q.enqueue(f"{MODULE}.touch", str(tmp_path / "b"), on_stopped=outside),
        "builtins.print": q.enqueue(
            f"{MODULE}.touch", str(tmp_path / "c"), on_success=Callback("builtins.print"), on_failure=record_failure
        ),
        "re-export": q.enqueue(
            f"{MODULE}.touch",
            str(tmp_path / "d"),
            on_success=Callback(f"{MODULE}.run_alias"),
            on_failure=record_failure,
        ),
    }
    good = q.enqueue(f"{MODULE}.touch", str(tmp_path / "good"))
    env = {"POOLQ_TEST_IMPORT_MARKER": str(import_marker), "POOLQ_TEST_CALL_MARKER": str(call_marker)}

    run = assert_ok(run_worker(redis_url, strategy, 2, extra_args=worker_args(strategy), env=env))

    assert not import_marker.exists(), f"the callback's module was imported under {strategy}"
    assert not call_marker.exists(), f"the callback was called under {strategy}"
    for what, job in jobs.items():
        assert_refused(redis, job.id, "callback", context=f"{what}\n{run.stderr[-3000:]}")
        assert redis.get(f"cb:{job.id}:failure") is None, f"{what}: the failure callback of a refused job ran"
    for name in "abcd":
        assert not (tmp_path / name).exists(), f"a job with a refused callback ran under {strategy}"
    assert fetch(redis, good.id).get_status() == "finished", run.describe()


def _callback_cases(redis: Redis, queue: str, tmp_path: Path) -> dict[str, str]:
    """The same jobs with allowed callbacks, on ``queue``: case -> job id."""
    q = json_queue(redis, queue)
    ok, fail = Callback(f"{MODULE}.record_success"), Callback(f"{MODULE}.record_failure")
    touch = f"{MODULE}.touch"
    return {
        "success": q.enqueue(touch, str(tmp_path / f"{queue}-1"), on_success=ok, on_failure=fail).id,
        "failure": q.enqueue(f"{MODULE}.boom", on_success=ok, on_failure=fail).id,
        "success callback raises": q.enqueue(
            touch, str(tmp_path / f"{queue}-2"), on_success=Callback(f"{MODULE}.raise_in_success"), on_failure=fail
        ).id,
        "success callback overruns its timeout": q.enqueue(
            touch, str(tmp_path / f"{queue}-3"), on_success=Callback(f"{MODULE}.slow_success", 1), on_failure=fail
        ).id,
        # thread strategy: failed by the monitor thread; process strategies: the child is killed
        "job times out": q.enqueue("worker.jobs.io", seconds=4, job_timeout=1, on_success=ok, on_failure=fail).id,
    }


def _error_type(text: str) -> str:
    """The exception type of "module.Type: message" (RQ's last traceback line, or what the
    failure callback recorded), without the module. The process strategies report a job's own
    exception as ``RemoteJobError("<Type>: <message>")`` (the child's traceback chained): the
    type compared is the job's own."""
    words = [w.strip() for w in text.split(":")]
    if words and words[0].rsplit(".", 1)[-1] == "RemoteJobError":
        words = words[1:]
    return words[0].rsplit(".", 1)[-1] if len(words) > 1 else ""


def _outcomes(redis: Redis, ids: dict[str, str]) -> dict[str, tuple[str, str, dict[str, str]]]:
    """case -> (status, the recorded error's type, what the callbacks wrote: for the failure
    callback the type of the error it was given)."""
    out = {}
    for case, job_id in ids.items():
        last = failure_text(redis, job_id).strip().splitlines()[-1:] or [""]
        seen = {k.decode().rsplit(":", 1)[1]: v.decode() for k in redis.keys(f"cb:{job_id}:*") if (v := redis.get(k))}
        if "failure" in seen:
            seen["failure"] = _error_type(seen["failure"])
        out[case] = (fetch(redis, job_id).get_status().value, _error_type(last[0]), seen)
    return out


@pytest.fixture
def rq_reference(redis: Redis, redis_url: str, tmp_path: Path) -> dict[str, tuple[str, str, dict[str, str]]]:
    """What stock RQ's SimpleWorker does with the callback cases (its own CLI, burst)."""
    import subprocess

    ids = _callback_cases(redis, "rq-reference", tmp_path)
    res = subprocess.run(
        [RQ_CLI, "worker", "--burst", "-w", "rq.worker.SimpleWorker", "-S", "json", "-u", redis_url, "rq-reference"],
        cwd=REPO_ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return _outcomes(redis, ids)


@pytest.mark.parametrize("strategy", ALL)
def test_allowed_callbacks_run_as_rqs_simpleworker_runs_them(
    redis: Redis,
    redis_url: str,
    strategy: str,
    tmp_path: Path,
    rq_reference: dict[str, tuple[str, str, dict[str, str]]],
) -> None:
    """Success and failure callbacks (allowed) run under every strategy, off the main thread
    too, with RQ's outcome for each case: the job's status, the error recorded (a raising or
    overdue success callback fails the job and the failure callback runs), what each callback
    saw; a job that times out runs its failure callback. Before, every job with a callback failed
    with "signal only works in main thread" except under inline (the main thread)."""
    assert rq_reference["success"] == ("finished", "", {"success": "'" + str(tmp_path / "rq-reference-1") + "'"})
    ids = _callback_cases(redis, "default", tmp_path)

    run = assert_ok(run_worker(redis_url, strategy, 2, extra_args=worker_args(strategy)))

    got = _outcomes(redis, ids)
    for case, (status, error, seen) in rq_reference.items():
        if case == "success":  # the result names the file, which differs per queue
            seen = {"success": "'" + str(tmp_path / "default-1") + "'"}
        assert got[case] == (status, error, seen), f"{case} under {strategy}\n{run.stderr[-3000:]}"


# ------------------------------------------------------------------------------ webhooks


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, str, dict[str, str]]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.requests.append(("POST", self.path, dict(self.headers)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hook_servers() -> Iterator[list[tuple[int, list[tuple[str, str, dict[str, str]]]]]]:
    """Two loopback HTTP servers: (port, requests received) each."""
    servers = []
    for _ in range(2):
        handler = type("Handler", (_Recorder,), {"requests": []})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [(int(s.server_address[1]), s.RequestHandlerClass.requests) for s in servers]  # type: ignore[attr-defined]
    for s in servers:
        s.shutdown()
        s.server_close()


SECRET = "s3cret-header-value"


@pytest.mark.parametrize("strategy", ALL)
def test_webhooks_go_only_to_allowed_hosts_and_never_for_refused_jobs(
    redis: Redis, redis_url: str, strategy: str, hook_servers: list[tuple[int, list[Any]]]
) -> None:
    """By default no webhook is sent at all. With ``WORKER_WEBHOOK_HOSTS=127.0.0.1:<port>``: a
    good job's and a failed job's webhooks arrive (RQ's behaviour, headers included); a refused
    job's does not, nor one to a host not listed, which is logged once without its headers."""
    (port, received), (other_port, other_received) = hook_servers
    q = json_queue(redis)

    def hook(path: str, status: str = "finished", to: int = port) -> list[Webhook]:
        url = f"http://127.0.0.1:{to}/{path}"
        return [Webhook(url, status, method="POST", headers={"X-Secret": SECRET})]  # type: ignore[arg-type]

    q.enqueue("worker.jobs.noop", webhooks=hook("default-off"))
    assert_ok(run_worker(redis_url, strategy, 2, extra_args=worker_args(strategy)))
    assert received == [] and other_received == [], "a webhook was sent with WORKER_WEBHOOK_HOSTS unset"

    good = q.enqueue("worker.jobs.noop", webhooks=hook("good"))
    failed = q.enqueue("worker.jobs.fail", webhooks=hook("failed", "failed"))
    refused = q.enqueue("worker.jobs.os.system", "true", webhooks=hook("refused", "failed"))
    refused_cb = q.enqueue("worker.jobs.noop", on_success=Callback("builtins.print"), webhooks=hook("refused-cb"))
    elsewhere = q.enqueue("worker.jobs.noop", webhooks=hook("elsewhere", to=other_port))
    run = assert_ok(
        run_worker(
            redis_url,
            strategy,
            2,
            extra_args=worker_args(strategy, "--webhook-hosts", f"127.0.0.1:{port}"),
        )
    )

    paths = sorted(p for _, p, _ in received)
    assert paths == ["/failed", "/good"], f"{paths}\n{run.stderr[-3000:]}"
    assert all(h.get("X-Secret") == SECRET for _, _, h in received)
    assert other_received == [], "a webhook went to a host not in WORKER_WEBHOOK_HOSTS"
    assert fetch(redis, good.id).get_status() == "finished" and fetch(redis, failed.id).get_status() == "failed"
    assert_refused(redis, refused.id)
    assert_refused(redis, refused_cb.id)
    assert fetch(redis, elsewhere.id).get_status() == "finished"
    warnings = [line for line in run.stderr.splitlines() if "webhook" in line and "not sent" in line]
    assert len(warnings) == 1 and f"127.0.0.1:{other_port}" in warnings[0], run.stderr[-3000:]
    assert SECRET not in run.stderr


# ------------------------------------------------------------------------------ the function label


def _function_labels(redis: Redis, redis_url: str, strategy: str, funcs: list[str], cap: int | None) -> set[str]:
    """Run ``funcs`` (one job each) on a worker with /metrics; the ``function`` values it exported."""
    redis.flushdb()
    port = free_port()
    extra = ("--metrics-port", str(port), *(("--max-function-labels", str(cap)) if cap else ()))
    proc = start_worker(
        redis_url,
        strategy,
        2,
        extra_args=worker_args(strategy, *extra),
        env={"WORKER_METRICS_SAMPLE_INTERVAL_SECONDS": "0.25"},
    )
    q = json_queue(redis)
    for func in funcs:
        q.enqueue(func)

    def all_ended() -> mh.Samples | None:
        s = mh.scrape(port)
        return s if s is not None and mh.total(s, "poolq_jobs_ended_total") >= len(funcs) else None

    samples = wait_for(all_ended, 90, 0.2, what=f"{len(funcs)} jobs ended in /metrics")
    stop(proc)
    ended = mh.select(samples, "poolq_jobs_ended_total")
    assert mh.total(samples, "poolq_jobs_ended_total") == len(funcs)
    return {dict(lab)["function"] for lab in ended}


@pytest.mark.parametrize("strategy", ALL)
def test_function_label_counts_only_resolved_functions_and_is_capped(
    redis: Redis, redis_url: str, strategy: str
) -> None:
    """300 jobs naming distinct functions that match the glob but do not exist, and a few real
    ones: the real ones are labelled by name, the 300 as "other". With the cap at 2 and three
    real functions: at most 2 names and "other"."""
    nope = [f"worker.jobs.nope_{i}" for i in range(300)]
    real = ["worker.jobs.noop", "worker.jobs.fail"]
    functions = _function_labels(redis, redis_url, strategy, [*nope, *real], None)
    assert functions == {"other", *real}, functions

    real.append("worker.jobs.cpu")
    functions = _function_labels(redis, redis_url, strategy, [*nope[:20], *real], 2)
    assert len(functions) <= 3 and "other" in functions, functions
    assert functions - {"other"} <= set(real), functions


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("args", "mention"),
    [
        (("--allowed-functions", "*"), "WORKER_ALLOWED_FUNCTIONS"),  # one segment: could only name a builtin
        (("--allowed-functions", "worker.jobs.*,worker..x"), "WORKER_ALLOWED_FUNCTIONS"),
        (("--webhook-hosts", "hooks.example.com/path"), "WORKER_WEBHOOK_HOSTS"),
        (("--webhook-hosts", "hooks.example.com:0"), "WORKER_WEBHOOK_HOSTS"),
        (("--max-function-labels", "0"), "WORKER_MAX_FUNCTION_LABELS"),
    ],
)
def test_bad_allowlist_webhook_or_label_settings_exit_2_with_one_line(args: tuple[str, ...], mention: str) -> None:
    import subprocess

    res = subprocess.run(
        [PYTHON, "-m", "worker", "--metrics-port", "0", *args],
        cwd=REPO_ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and mention in lines[0], res.stderr
