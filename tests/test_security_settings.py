"""Secrets never printed or exported; settings validated as a whole; SIGTERM while Redis is down.

- The Redis password (a distinctive string) appears nowhere a worker writes: its stdout and
  stderr (start-up retries, shutdown, DEBUG logs), ``--check`` output (kept by ``docker inspect``
  and Kubernetes pod events), invalid-settings lines, a ``/metrics`` scrape, and Redis itself
  (the worker hash ``rq info`` reads, and every other key).
- Every value that used to pass validation and then break (a traceback, a dead sampler thread,
  a live worker's jobs re-run by another) is refused at start: exit 2, one line on stderr
  naming the variable or flag, from the environment and from flags alike.
- A worker told to stop while Redis is unreachable exits within its shutdown timeout (plus
  a few seconds), says in one line what it left to recovery, and once Redis is back another
  worker's recovery finishes every job.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from redis import Redis
from support.base import free_port, wait_for
from support.redis_server import RedisServer
from support.rq_jobs import enqueue_many, fetch, json_queue
from support.workers import assert_one_line_error, run_cli, start_worker, stop, wait_registered

from worker import defaults
from worker.recovery import REDELIVERIES_FIELD
from worker.redact import redact_url, scrub

PASSWORD = "pq-S3cret-7f1d"


class PasswordRedis(RedisServer):
    """A redis-server with ``requirepass``; :attr:`url` carries the password."""

    def __init__(self, workdir: Path, password: str = PASSWORD, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.password = password

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [*super().command(), "--requirepass", self.password]


@pytest.fixture
def secure_redis(tmp_path: Path) -> Any:
    server = PasswordRedis(tmp_path / "redis-secure")
    yield server
    server.stop()


def assert_no_password(text: str, where: str) -> None:
    assert PASSWORD not in text, f"the Redis password appears in {where}:\n{text[-4000:]}"


def all_of_redis(conn: Redis) -> str:
    """Every key and value in the database, as text: what a reader of Redis could see."""
    parts: list[str] = []
    for key in conn.scan_iter(count=1000):
        kind = conn.type(key).decode()
        parts.append(key.decode(errors="replace"))
        if kind == "string":
            value: Any = conn.get(key)
        elif kind == "hash":
            value = conn.hgetall(key)
        elif kind == "list":
            value = conn.lrange(key, 0, -1)
        elif kind == "set":
            value = conn.smembers(key)
        elif kind == "zset":
            value = conn.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = conn.xrange(key)
        else:
            value = kind
        parts.append(repr(value))
    return "\n".join(parts)


# ------------------------------------------------------------------------------ redaction


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{PASSWORD}@h:6379/0", "redis://:***@h:6379/0"),
        (f"redis://user:{PASSWORD}@h:6379/0", "redis://user:***@h:6379/0"),
        (f"rediss://{PASSWORD}@h/1", "rediss://***@h/1"),  # a password written without its colon
        (f"redis://h:6379/0?db=1&password={PASSWORD}", "redis://h:6379/0?db=1&password=***"),
        (f"unix://:{PASSWORD}@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("redis://:pq-S3c/ret#7f@1d@h:1/0", "redis://:***@h:1/0"),  # unencoded / # @ in the password
        ("redis://:@redis:6379/0", "redis://:@redis:6379/0"),  # compose without REDIS_PASSWORD
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (f"redis://:{PASSWORD}@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        (f"{PASSWORD}:6379", "<unparseable URL>"),
        (f"redis://:{PASSWORD}@[::1/0", "<unparseable URL>"),
    ],
)
def test_redact_url_hides_the_password_and_nothing_else(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_masks_a_urls_secrets_as_written_and_decoded() -> None:
    url = "redis://:p%40ss-7f1d@h:1/0"
    text = f"could not reach {url}; AUTH p@ss-7f1d failed; also p%40ss-7f1d"
    out = scrub(text, [url])
    assert "p@ss-7f1d" not in out and "p%40ss-7f1d" not in out, out
    assert "redis://:***@h:1/0" in out, out


# ------------------------------------------------------------------------------ the password is never shown


def test_password_never_appears_in_worker_output_metrics_or_redis(secure_redis: PasswordRedis) -> None:
    """Started before Redis answers (the "not reachable" lines), then runs jobs at DEBUG level;
    its whole output, a /metrics scrape and every key in Redis are searched for the password."""
    port = free_port()
    proc = start_worker(
        None,
        "thread",
        2,
        extra_args=["--metrics-port", str(port), "--log-level", "DEBUG"],
        env={"REDIS_URL": secure_redis.url, "WORKER_REDIS_WAIT": "60"},
    )
    wait_for(lambda: "not reachable" in proc.output() or proc.poll() is not None, 30, what="the retry line")
    assert proc.poll() is None, proc.describe()
    secure_redis.start()
    conn = secure_redis.client()
    try:
        wait_registered(conn, proc)
        jobs = enqueue_many(conn, "worker.jobs.noop", 5)
        wait_for(lambda: all(fetch(conn, j.id).get_status() == "finished" for j in jobs), 30, what="the jobs")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            scrape = resp.read().decode()
        assert "poolq_worker_info" in scrape, scrape[:2000]
        assert_no_password(scrape, "/metrics")
        stored = all_of_redis(conn)
        assert f"rq:worker:{proc.name}" in stored, stored[:2000]
        assert_no_password(stored, "Redis (the worker hash rq info reads, and every other key)")
        assert stop(proc, timeout=30) == 0, proc.describe()
    finally:
        conn.close()
    assert_no_password(proc.output(), "the worker's output")
    assert "redis://:***@127.0.0.1" in proc.output(), proc.describe()  # the URL is shown, redacted


@pytest.mark.parametrize("case", ["wrong-password", "unreachable"])
def test_check_never_prints_the_password(secure_redis: PasswordRedis, case: str) -> None:
    if case == "wrong-password":
        secure_redis.password = "the-servers-own"  # not the one in the URL
        secure_redis.start()
        url = f"redis://:{PASSWORD}@127.0.0.1:{secure_redis.port}/0"
    else:
        url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    for args, env in ((["--check"], {"REDIS_URL": url}), (["--check", "--redis-url", url], {})):
        res = run_cli(args, env)
        assert res.returncode == 1, res
        assert_no_password(res.stdout + res.stderr, f"--check output ({case})")
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "redis://:***@127.0.0.1" in res.stderr, res.stderr


@pytest.mark.parametrize("password", [PASSWORD, "pq@S3cret:7f1d"], ids=["plain", "unencoded-at-and-colon"])
def test_check_with_the_right_password_says_ok(secure_redis: PasswordRedis, password: str) -> None:
    """redis-py reads an unencoded @ or : in the password correctly; the URL check must too."""
    secure_redis.password = password
    secure_redis.start()
    res = run_cli(["--check"], {"REDIS_URL": secure_redis.url})
    assert res.returncode == 0, res
    assert password not in res.stdout + res.stderr, res


def test_wrong_password_at_start_is_retried_without_showing_it(secure_redis: PasswordRedis) -> None:
    secure_redis.password = "the-servers-own"
    secure_redis.start()
    url = f"redis://:{PASSWORD}@127.0.0.1:{secure_redis.port}/0"
    res = run_cli(["--metrics-port", "0", "--redis-wait", "0.5", "--burst"], {"REDIS_URL": url})
    assert res.returncode == 1, res
    assert_no_password(res.stdout + res.stderr, "the worker's start-up output")
    assert "redis://:***@127.0.0.1" in res.stderr, res.stderr


@pytest.mark.parametrize(
    "url",
    [
        f"http://:{PASSWORD}@127.0.0.1:6379/0",  # wrong scheme
        f"redis://:{PASSWORD}@127.0.0.1:notaport/0",  # a port that is not a number
        f"{PASSWORD}",  # not a URL at all (a password pasted into REDIS_URL)
    ],
)
@pytest.mark.parametrize("how", ["env", "flag"])
def test_an_invalid_redis_url_is_one_line_without_its_password(url: str, how: str) -> None:
    args = ["--burst", "--metrics-port", "0", "--redis-wait", "1"]
    res = run_cli([*args, "--redis-url", url] if how == "flag" else args, {"REDIS_URL": url} if how == "env" else {})
    line = assert_one_line_error(res, "REDIS_URL")
    assert_no_password(res.stdout + res.stderr, "the invalid-settings line")
    assert "***" in line or "<unparseable URL>" in line, line


# ------------------------------------------------------------------------------ settings validated as a whole


ARABIC_2 = "\u0662"  # ARABIC-INDIC DIGIT TWO: int() and str.isdigit() take it for 2
ARABIC_1 = "\u0661"

# Each was accepted before and then broke (a traceback, a dead sampler thread, a live worker's
# jobs re-run) or silently meant something else.
BAD_ENV = [
    pytest.param({"WORKER_MAINTENANCE_INTERVAL_SECONDS": "inf"}, id="maintenance-inf"),
    pytest.param({"WORKER_METRICS_SAMPLE_INTERVAL_SECONDS": "inf"}, id="sample-interval-inf"),
    pytest.param({"WORKER_RECOVERY_INTERVAL_SECONDS": "inf"}, id="recovery-interval-inf"),
    pytest.param({"WORKER_SHUTDOWN_TIMEOUT": "inf"}, id="shutdown-timeout-inf"),
    pytest.param({"WORKER_REDIS_WAIT": "1e999"}, id="redis-wait-overflow"),
    pytest.param({"WORKER_MAX_CHILD_MEMORY_MB": "inf"}, id="child-memory-inf"),
    pytest.param({"WORKER_JOB_TIMEOUT_SECONDS": "99999999999"}, id="job-timeout-huge"),
    pytest.param({"WORKER_RESULT_TTL_SECONDS": "99999999999"}, id="result-ttl-huge"),
    pytest.param({"WORKER_MAX_REDELIVERIES": "1000000"}, id="redeliveries-huge"),
    pytest.param({"WORKER_CONCURRENCY": ARABIC_2}, id="concurrency-arabic-digit"),
    pytest.param({"WORKER_WORKER_TTL_SECONDS": "5"}, id="ttl-below-heartbeats"),
    pytest.param({"WORKER_METRICS_ADDRESS": ""}, id="metrics-address-empty"),  # bound every interface
    pytest.param({"WORKER_METRICS_ADDRESS": "0"}, id="metrics-address-0"),  # so did "0" (inet_aton shorthand)
    pytest.param({"WORKER_NAME": "two words"}, id="name-with-space"),
    pytest.param({"WORKER_PROCESSES": "1000", "WORKER_THREADS_PER_PROCESS": "1000"}, id="hybrid-slots-huge"),
    pytest.param({"REDIS_URL": "redis://127.0.0.1:notaport/0"}, id="redis-url-port-text"),
    pytest.param({"REDIS_URL": "redis://127.0.0.1:0/0"}, id="redis-url-port-0"),
    pytest.param({"REDIS_URL": "redis://127.0.0.1:6379/x"}, id="redis-url-db-text"),
    pytest.param({"REDIS_URL": f"redis://127.0.0.1:6379/{ARABIC_1}"}, id="redis-url-db-arabic"),
    pytest.param({"REDIS_URL": "redis://127.0.0.1:6379/0?foo=bar"}, id="redis-url-unknown-option"),
    pytest.param({"REDIS_URL": "redis://"}, id="redis-url-no-host"),
    pytest.param({"REDIS_URL": "unix://"}, id="redis-url-unix-no-path"),
]


@pytest.mark.parametrize("env", BAD_ENV)
def test_bad_environment_value_exits_2_with_one_line(redis_url: str, env: dict[str, str]) -> None:
    """A live Redis and --burst: were the value accepted, the worker would run and exit 0."""
    full = {"REDIS_URL": redis_url, **env}
    args = ["--burst", "--queues", "empty"]
    if "WORKER_REDIS_WAIT" not in env:  # bounded, should a bad URL be taken (flags win: not for its own case)
        args += ["--redis-wait", "2"]
    if "WORKER_METRICS_ADDRESS" not in env:
        args += ["--metrics-port", "0"]
    else:
        args += ["--metrics-port", str(free_port())]
    res = run_cli(args, full)
    line = assert_one_line_error(res, sorted(env)[-1] if len(env) > 1 else next(iter(env)))
    assert line.startswith("invalid configuration:"), line


BAD_FLAGS = [
    pytest.param(["--max-redeliveries", ARABIC_1], "--max-redeliveries", id="redeliveries-arabic-digit"),
    pytest.param(["--metrics-port", ARABIC_2 + "0"], "--metrics-port", id="metrics-port-arabic-digits"),
    pytest.param(["--concurrency", ARABIC_2], "--concurrency", id="concurrency-arabic-digit"),
    pytest.param(["--shutdown-timeout", "inf"], "--shutdown-timeout", id="shutdown-timeout-inf"),
    pytest.param(["--redis-wait", "inf"], "--redis-wait", id="redis-wait-inf"),
    pytest.param(["--max-child-memory-mb", "inf"], "--max-child-memory-mb", id="child-memory-inf"),
    pytest.param(["--job-timeout-seconds", "99999999999"], "--job-timeout-seconds", id="job-timeout-huge"),
    pytest.param(["--threads-per-cpu", ARABIC_2], "--threads-per-cpu", id="threads-per-cpu-arabic-digit"),
    pytest.param(["--redis-url", "redis://127.0.0.1:0/0"], "--redis-url", id="redis-url-port-0"),
    pytest.param(["--redis-url", "redis://127.0.0.1:6379/x"], "--redis-url", id="redis-url-db-text"),
]


@pytest.mark.parametrize(("args", "flag"), BAD_FLAGS)
def test_bad_flag_value_exits_2_with_one_line(redis_url: str, args: list[str], flag: str) -> None:
    base = ["--burst", "--metrics-port", "0", "--queues", "empty", "--redis-wait", "2", "--redis-url", redis_url]
    res = run_cli([*base, *args])  # later flags win
    line = assert_one_line_error(res, flag)
    assert line.startswith("invalid configuration:"), line


def test_auto_sizing_beyond_the_slot_limit_is_refused(redis_url: str) -> None:
    """1024 hybrid children x 8 threads each: refused in one line before any child starts."""
    env = {"REDIS_URL": redis_url, "WORKER_STRATEGY": "hybrid", "WORKER_PROCESSES": "1024"}
    res = run_cli(["--burst", "--metrics-port", "0", "--queues", "empty"], env)
    assert_one_line_error(res, "8192", "WORKER_PROCESSES")


def test_worker_ttl_below_twice_the_heartbeat_is_refused_with_the_reason(redis_url: str) -> None:
    """A TTL below the heartbeat interval let a second worker's recovery re-run a live worker's
    jobs again and again; the refusal says what is needed and why."""
    env = {"REDIS_URL": redis_url, "WORKER_HEARTBEAT_INTERVAL_SECONDS": "10", "WORKER_WORKER_TTL_SECONDS": "15"}
    res = run_cli(["--burst", "--metrics-port", "0", "--queues", "empty"], env)
    line = assert_one_line_error(res, "WORKER_WORKER_TTL_SECONDS", "WORKER_HEARTBEAT_INTERVAL_SECONDS", "21")
    assert "taken for dead" in line, line
    # the tests' own fast-recovery settings (heartbeat 1 s, TTL 3 s) are within the rule
    ok = {"REDIS_URL": redis_url, "WORKER_HEARTBEAT_INTERVAL_SECONDS": "1", "WORKER_WORKER_TTL_SECONDS": "3"}
    assert run_cli(["--check"], ok).returncode == 0
    # and so are the defaults
    assert defaults.WORKER_TTL_SECONDS >= 2 * defaults.HEARTBEAT_INTERVAL_SECONDS + 1


# ------------------------------------------------------------------------------ SIGTERM while Redis is down

SHUTDOWN_S = 2.0
# The worker must be gone within its shutdown timeout + 2 s; the rest is room for a loaded
# machine (the old code was still running 90 s after SIGTERM).
EXIT_ALLOWANCE_S = 8.0
FAST_RECOVERY = {"WORKER_HEARTBEAT_INTERVAL_SECONDS": "1", "WORKER_WORKER_TTL_SECONDS": "3"}


def _strategies() -> list[str]:
    from worker.strategies import STRATEGIES

    return list(STRATEGIES)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", _strategies())
def test_sigterm_while_redis_is_down_exits_and_leaves_the_jobs_to_recovery(
    make_redis_server: Any, strategy: str
) -> None:
    server = make_redis_server(appendonly=True)
    conn = server.client()
    n = 30
    jobs = enqueue_many(conn, "worker.jobs.io", n, seconds=0.3)
    env = {"WORKER_SHUTDOWN_TIMEOUT": str(SHUTDOWN_S), **FAST_RECOVERY}
    a = start_worker(server.url, strategy, 3, env=env)
    wait_registered(conn, a)
    wait_for(
        lambda: sum(fetch(conn, j.id).get_status() == "finished" for j in jobs) >= 3, 60, what="a few jobs to finish"
    )
    conn.close()
    server.kill()  # Redis gone (SIGKILL) while jobs run
    time.sleep(0.3)
    t0 = time.monotonic()
    a.send_signal(signal.SIGTERM)
    try:
        code = a.wait(timeout=SHUTDOWN_S + 2 + EXIT_ALLOWANCE_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"worker still running {time.monotonic() - t0:.1f} s after SIGTERM: {a.describe()}"
        ) from None
    assert code == 0, a.describe()
    left = [line for line in a.output().splitlines() if "left to recovery" in line]
    assert len(left) == 1, a.describe()

    server.start()  # same port, same AOF: every write acknowledged before the kill is back
    conn = server.client()
    try:
        b = start_worker(server.url, strategy, 3, env=FAST_RECOVERY)
        wait_registered(conn, b)

        def all_finished() -> bool:
            return all(fetch(conn, j.id).get_status() == "finished" for j in jobs)

        wait_for(all_finished, 60, what=f"all {n} jobs to finish after recovery")
        assert stop(b, timeout=30) == 0, b.describe()
        assert json_queue(conn).count == 0
        # the jobs A was running when Redis went away came back through recovery (not lost)
        recovered = [j.id for j in jobs if conn.hget(f"rq:job:{j.id}", REDELIVERIES_FIELD)]
        assert recovered, f"no job was recovered; A:\n{a.output()[-3000:]}\nB:\n{b.output()[-3000:]}"
    finally:
        conn.close()


def test_idle_worker_stops_at_once_while_redis_is_down(make_redis_server: Any) -> None:
    """Nothing running, Redis gone: nothing to wait for, so no waiting for the shutdown timeout."""
    server = make_redis_server(appendonly=False)
    conn = server.client()
    a = start_worker(server.url, "thread", 2, env={"WORKER_SHUTDOWN_TIMEOUT": "60"})
    wait_registered(conn, a)
    conn.close()
    server.kill()
    time.sleep(0.5)
    a.send_signal(signal.SIGINT)
    try:
        code = a.wait(timeout=2 + EXIT_ALLOWANCE_S)  # well below its 60 s shutdown timeout
    except subprocess.TimeoutExpired:
        raise AssertionError(f"idle worker did not exit on SIGINT with Redis down: {a.describe()}") from None
    assert code == 0, a.describe()
    assert "Traceback" not in a.output(), a.describe()


def test_the_worker_clients_retries_end_when_its_gate_says_stop() -> None:
    """The worker's client (worker/cli.py connect) retries a failing command 20 times, unless
    its stop gate (bound by the PoolWorker) says the worker is stopping: then it fails at once.
    Every connection redis-py makes gets a copy of the retry policy with the same gate."""
    import copy

    from worker.cli import connect
    from worker.outage import StopAwareRetry

    conn = connect(f"redis://127.0.0.1:{free_port()}/0")
    retry = conn.connection_pool.connection_kwargs["retry"]
    assert isinstance(retry, StopAwareRetry)
    assert copy.deepcopy(retry).gate is retry.gate
    attempts = 0

    def refused() -> None:
        nonlocal attempts
        attempts += 1
        raise redis_lib.exceptions.ConnectionError("refused")

    stopping = False
    retry.gate.bind(lambda: stopping, lambda: float("inf"))
    retry._backoff = __import__("redis.backoff").backoff.NoBackoff()
    with pytest.raises(redis_lib.exceptions.ConnectionError):
        retry.call_with_retry(refused, lambda _e: None)
    assert attempts == 21  # running: one try and 20 retries
    attempts, stopping = 0, True
    with pytest.raises(redis_lib.exceptions.ConnectionError):
        retry.call_with_retry(refused, lambda _e: None)
    assert attempts == 1  # stopping: no retry
    conn.close()


# ------------------------------------------------------------------------------ the producer


def run_producer(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(args, env, timeout=60, module="producer")


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param([], {"REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:notaport/0"}, id="env-bad-port"),
        pytest.param(["--redis-url", f"http://:{PASSWORD}@127.0.0.1:6379/0"], {}, id="flag-bad-scheme"),
        pytest.param(["--redis-url", f"redis://:{PASSWORD}@127.0.0.1:1/0"], {}, id="flag-unreachable"),
    ],
)
def test_producer_never_prints_the_password(args: list[str], env: dict[str, str]) -> None:
    res = run_producer(["enqueue", "--workload", "noop", "--count", "1", *args], env)
    assert res.returncode == 2, res
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert_no_password(res.stdout + res.stderr, "the producer's error line")
    assert "***" in res.stderr, res.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--count", ARABIC_2], id="count-arabic-digit"),
        pytest.param(["--count", "1", "--rate", "inf"], id="rate-inf"),
        pytest.param(["--count", "1", "--batch-size", ARABIC_2], id="batch-size-arabic-digit"),
        pytest.param(["--count", "1", "--job-timeout", ARABIC_2], id="job-timeout-arabic-digit"),
    ],
)
def test_producer_number_flags_are_ascii_and_finite(redis_url: str, args: list[str]) -> None:
    res = run_producer(["enqueue", "--workload", "noop", "--queue", "untouched", *args], {"REDIS_URL": redis_url})
    assert res.returncode == 2, res
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert args[-2] in res.stderr, res.stderr


def test_producer_starts_its_workers_without_the_url_on_their_command_line(secure_redis: PasswordRedis) -> None:
    """Any user of the host can read a command line (ps); the URL goes in the environment."""
    import psutil

    from producer.processes import LocalWorker

    secure_redis.start()
    conn = secure_redis.client()
    worker = LocalWorker(secure_redis.url, "thread", "1", "security-q", "security-w")
    try:
        worker.wait_registered(conn)
        assert_no_password(" ".join(psutil.Process(worker.pid).cmdline()), "the worker's command line")
    finally:
        worker.stop()
        conn.close()
