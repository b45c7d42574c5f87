"""Configuration: environment variables, CLI flags on top, one clear line on bad input.

A bad value must stop the worker at start with exit code 2 and one line on stderr (argparse's
own usage error for flags it rejects), never a traceback. Whether a setting took effect is
proved by what the worker then does (where jobs ran, what it consumed), not by its log text.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis
from support.base import REPO_ROOT, free_port, wait_for
from support.rq_jobs import enqueue_many, fetch, finished_records, json_queue
from support.workers import (
    assert_ok,
    assert_one_line_error,
    run_cli,
    run_worker,
    start_worker,
    stop,
    wait_registered,
)

from worker import defaults

# ------------------------------------------------------------------------------ bad input


BAD_ENV = [
    pytest.param({"WORKER_CONCURRENCY": "abc"}, ["WORKER_CONCURRENCY", "abc"], id="concurrency-abc"),
    pytest.param({"WORKER_CONCURRENCY": "0"}, ["WORKER_CONCURRENCY"], id="concurrency-0"),
    pytest.param({"WORKER_STRATEGY": "foo"}, ["WORKER_STRATEGY", "foo"], id="strategy-foo"),
    pytest.param({"WORKER_SHUTDOWN_TIMEOUT": "-1"}, ["WORKER_SHUTDOWN_TIMEOUT"], id="shutdown-timeout-negative"),
    pytest.param({"WORKER_SERIALIZER": "yaml"}, ["WORKER_SERIALIZER"], id="serializer-yaml"),
    pytest.param({"WORKER_QUEUES": " , "}, ["WORKER_QUEUES"], id="queues-empty"),
    pytest.param({"WORKER_METRICS_PORT": "70000"}, ["WORKER_METRICS_PORT"], id="metrics-port-range"),
    pytest.param({"REDIS_URL": "http://127.0.0.1:6379"}, ["REDIS_URL"], id="redis-url-scheme"),
]


@pytest.mark.parametrize(("env", "mentions"), BAD_ENV)
def test_bad_environment_value_exits_2_with_one_line(
    redis: Redis, redis_url: str, env: dict[str, str], mentions: list[str]
) -> None:
    # A live Redis and --burst: were the value accepted, the worker would run and exit 0.
    # (No flag for a setting under test: flags win over the environment.)
    full = {"REDIS_URL": redis_url, **env}
    args = ["--burst"]
    if "WORKER_METRICS_PORT" not in env:
        args += ["--metrics-port", "0"]
    if "WORKER_QUEUES" not in env:
        args += ["--queues", "empty"]
    res = run_cli(args, full)
    line = assert_one_line_error(res, *mentions)
    assert line.startswith("invalid configuration:"), line


BAD_FLAGS = [
    pytest.param(["--concurrency", "abc"], ["concurrency", "abc"], id="concurrency-abc"),
    pytest.param(["--concurrency", "-3"], ["concurrency"], id="concurrency-negative"),
    pytest.param(["--strategy", "foo"], ["strategy", "foo"], id="strategy-foo"),
    pytest.param(["--shutdown-timeout", "-1"], ["shutdown"], id="shutdown-timeout-negative"),
    pytest.param(["--redis-url", "http://127.0.0.1:1"], ["redis"], id="redis-url-scheme"),
    pytest.param(["--bogus"], ["--bogus"], id="unknown-flag"),
]


@pytest.mark.parametrize(("args", "mentions"), BAD_FLAGS)
def test_bad_flag_exits_2_with_one_line(redis: Redis, redis_url: str, args: list[str], mentions: list[str]) -> None:
    res = run_cli(["--burst", "--metrics-port", "0", "--queues", "empty", *args], {"REDIS_URL": redis_url})
    line = assert_one_line_error(res, *mentions)
    # ours ("invalid configuration: ...") or argparse's ("python -m worker: error: ...")
    assert line.startswith("invalid configuration:") or ": error:" in line, line


# ------------------------------------------------------------------------------ help and check


def _blocks(text: str, key: str) -> list[str]:
    """The help paragraphs that start with ``key``, each with its more-indented continuation lines."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith(key + " "):
            indent = len(line) - len(stripped)
            block = [line]
            for nxt in lines[i + 1 :]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) > indent:
                    block.append(nxt)
                else:
                    break
            found.append(" ".join(" ".join(block).split()))
    return found


def test_help_shows_defaults_and_advice() -> None:
    res = run_cli(["--help"])
    assert res.returncode == 0, res.stderr
    text = res.stdout
    flat = " ".join(text.split())  # argparse wraps lines anywhere
    for default in (
        f"(default: {defaults.STRATEGY})",
        f"(default: {defaults.CONCURRENCY})",
        f"(default: {','.join(defaults.QUEUES)})",
        f"(default: {defaults.SHUTDOWN_TIMEOUT_SECONDS:g})",
        ",".join(defaults.ALLOWED_FUNCTIONS),
        defaults.REDIS_URL,
    ):
        assert default in flat, f"{default!r} missing from --help:\n{text}"
    for flag in ("--strategy", "--concurrency", "--queues", "--burst", "--name", "--redis-url", "--check"):
        assert flag in text
    # the advice: which strategy for which work
    assert any("CPU-bound" in b for b in _blocks(text, "process")), text
    assert any("I/O" in b for b in _blocks(text, "thread")), text
    assert "REDIS_URL" in text and "WORKER_CONCURRENCY" in text


def test_check_live_redis_exits_0(redis: Redis, redis_url: str) -> None:
    res = run_cli(["--check", "--redis-url", redis_url])
    assert res.returncode == 0, res.stderr
    # and from the environment alone
    res = run_cli(["--check"], {"REDIS_URL": redis_url})
    assert res.returncode == 0, res.stderr


def test_check_dead_port_exits_1() -> None:
    res = run_cli(["--check", "--redis-url", f"redis://127.0.0.1:{free_port()}/0"])
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


# ------------------------------------------------------------------------------ env and flags take effect


def test_flags_override_environment(redis: Redis, redis_url: str) -> None:
    # env alone: process strategy, jobs run in other pids
    jobs = enqueue_many(redis, "worker.jobs.io", 2, seconds=0.05)
    run = assert_ok(
        run_worker(redis_url, None, None, None, env={"WORKER_STRATEGY": "process", "WORKER_CONCURRENCY": "2"})
    )
    assert run.pid not in {r["pid"] for r in finished_records(redis, jobs, run.describe())}

    # the flag wins: thread strategy, jobs run in the worker's pid
    jobs = enqueue_many(redis, "worker.jobs.io", 2, seconds=0.05)
    run = assert_ok(
        run_worker(redis_url, "thread", None, None, env={"WORKER_STRATEGY": "process", "WORKER_CONCURRENCY": "2"})
    )
    assert {r["pid"] for r in finished_records(redis, jobs, run.describe())} == {run.pid}


def test_a_flag_replaces_an_invalid_environment_value(redis: Redis, redis_url: str) -> None:
    res = run_cli(["--check", "--redis-url", redis_url, "--concurrency", "2"], {"WORKER_CONCURRENCY": "abc"})
    assert res.returncode == 0, res.stderr


def test_environment_queues_and_allowlist(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    sentinel = f"{tmp_path}/ran"
    beta = json_queue(redis, "beta")
    job = beta.enqueue("tests.jobs.touch_sentinel", sentinel)
    other = json_queue(redis, "other").enqueue("worker.jobs.noop")
    env = {
        "REDIS_URL": redis_url,
        "WORKER_QUEUES": "alpha,beta",
        "WORKER_ALLOWED_FUNCTIONS": "worker.jobs.*,tests.jobs.*",
        "WORKER_STRATEGY": "inline",
    }
    run = assert_ok(run_worker(None, None, None, None, env=env))
    assert fetch(redis, job.id).get_status() == "finished", run.describe()
    assert fetch(redis, job.id).return_value() == sentinel
    assert fetch(redis, other.id).get_status() == "queued"  # not a queue it consumes


@pytest.mark.parametrize("how", ["flag", "env"])
def test_shutdown_timeout_is_honoured(redis: Redis, redis_url: str, how: str) -> None:
    """A 20 s job and a 0.5 s shutdown timeout: on SIGTERM the job is re-queued, not waited for."""
    args: tuple[str, ...] = ("--shutdown-timeout", "0.5") if how == "flag" else ()
    env = {"WORKER_SHUTDOWN_TIMEOUT": "0.5"} if how == "env" else None
    [job] = enqueue_many(redis, "worker.jobs.io", 1, seconds=20)
    proc = start_worker(redis_url, "thread", 1, extra_args=args, env=env)
    wait_registered(redis, proc)
    wait_for(lambda: fetch(redis, job.id).get_status() == "started", 30, what="the job to start")
    assert stop(proc, timeout=10) == 0, proc.describe()
    assert fetch(redis, job.id).get_status() == "queued", proc.describe()
    assert job.id in json_queue(redis).get_job_ids()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_redis_wait_is_honoured(how: str) -> None:
    """Redis never answers: the worker gives up after WORKER_REDIS_WAIT and exits 1."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    args = ["--redis-wait", "0.5"] if how == "flag" else []
    env = {"WORKER_REDIS_WAIT": "0.5"} if how == "env" else {}
    # a healthy worker gives up within about a second; 10 s leaves room for a loaded machine
    res = run_worker(url, None, None, None, extra_args=args, env=env, timeout=10)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr, res.stderr


# ------------------------------------------------------------------------------ settings defined once

# Every flag `python -m worker` has had; generating them from the settings model must keep each.
FLAGS = (
    *("--strategy", "--concurrency", "--queues", "-q", "--burst", "-b", "--name", "-n", "--redis-url", "-u"),
    *("--serializer", "--allowed-functions", "--webhook-hosts", "--threads-per-cpu", "--processes"),
    *("--threads-per-process", "--job-timeout-seconds", "--result-ttl-seconds", "--shutdown-timeout"),
    *("--redis-wait", "--max-jobs-per-child", "--max-child-memory-mb", "--max-redeliveries", "--max-job-bytes"),
    *("--metrics-port", "--metrics-address", "--max-function-labels", "--log-level"),
    *("--check", "--require-worker", "--version"),
)


def test_help_has_every_flag_and_every_environment_variable() -> None:
    from worker.flags import settings_of
    from worker.settings import WorkerSettings

    text = run_cli(["--help"]).stdout
    options = {word.rstrip(",") for word in text.split() if word.startswith("-")}
    assert set(FLAGS) <= options, sorted(set(FLAGS) - options)
    flat = " ".join(text.split())
    for s in settings_of(WorkerSettings):
        assert s.env in flat, s  # with a flag: "[env NAME]"; without: the environment-only list
        assert f"(default: {s.default_text})" in flat, s


def test_a_prefix_of_a_flag_is_refused() -> None:
    """argparse took ``--max-jobs 3`` for ``--max-jobs-per-child 3``; both CLIs now refuse it."""
    res = run_cli(["--check", "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "--max-jobs", "3"])
    assert "unrecognized arguments: --max-jobs" in assert_one_line_error(res)
    res = run_cli(["--check", "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "--shutdown", "1"])
    assert "unrecognized arguments: --shutdown" in assert_one_line_error(res)
    producer = run_cli(
        ["plan", "--results", "nowhere", "--workload", "io", "--arrival-rate", "3", "--slo", "1"], module="producer"
    )
    assert "unrecognized arguments: --slo" in assert_one_line_error(producer)


def test_every_setting_reaches_the_worker() -> None:
    """Settings flow into the constructors by parameter name: a renamed parameter must fail here,
    not leave its setting silently at the default."""
    import inspect

    from worker.cli import READ_BY_CLI
    from worker.metrics import Metrics
    from worker.pool_worker import PoolWorker
    from worker.settings import WorkerSettings
    from worker.strategies import StrategyConfig

    taken = set().union(*(inspect.signature(c).parameters for c in (PoolWorker, StrategyConfig, Metrics)))
    values = WorkerSettings().parameters()
    assert set(values) - taken - READ_BY_CLI == set()
    assert set(values) >= READ_BY_CLI


def test_readme_configuration_table_matches_the_settings() -> None:
    """Each setting is one row of the README's table, with the default the model has."""
    from worker.flags import settings_of
    from worker.settings import WorkerSettings

    rows = {}
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].strip("`").isupper():
            rows[cells[0].strip("`")] = cells[1].strip("`")
    documented = {s.env: s.shown for s in settings_of(WorkerSettings)}
    assert rows == documented


def test_the_strategy_names_are_the_registry() -> None:
    """One list of names: the settings' (``defaults.STRATEGIES``, the flag's choices) is the
    registry's, complete whichever module is imported first (it used to lack hybrid and auto
    until worker.composite had been imported)."""
    from worker.strategies import STRATEGIES

    assert tuple(STRATEGIES) == defaults.STRATEGIES
