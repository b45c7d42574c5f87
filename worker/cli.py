"""``python -m worker``: flags over environment over defaults, one clear line on bad input."""

from __future__ import annotations

import argparse
import inspect
import logging
import platform
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis
from pydantic import ValidationError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from worker import __version__, defaults
from worker.cli_parser import OneLineParser
from worker.cpus import CpuInfo, detect_cpus
from worker.flags import add_flags, describe_error, env_only_epilog
from worker.outage import StopAwareRetry, StopGate
from worker.redact import redact_logging, redact_tracebacks, redact_url, scrub, secrets_of
from worker.settings import MAX_SLOTS, WorkerSettings

log = logging.getLogger("worker")
T = TypeVar("T")

EPILOG = """\
strategies:
  thread   a thread pool in one process: use it for I/O-bound jobs (network, disk, sleeps).
           Threads share one GIL, so CPU-bound Python code gains nothing from more threads.
           Timeouts cannot kill a thread: an overdue job is failed and its thread replaced.
  process  a pool of child processes (forkserver): use it for CPU-bound jobs. One child per
           CPU by default; hard timeouts (the child is killed); a crash fails only its job.
  inline   one job at a time in the worker process: the baseline (like rq's SimpleWorker).
  hybrid   P child processes x T threads each: for mixed or unknown workloads. CPU-bound work
           gets P cores, I/O-bound work P x T slots. Hard timeouts (the child is killed; jobs
           running beside the overdue one are re-queued); a crash fails only the job that
           caused it (with several jobs in the child, each is re-run alone to find it).
  auto     a thread pool and a process pool in one worker: each function's CPU time / wall
           time is measured and the job routed: CPU-bound to processes, I/O-bound to threads.
           Hints win: job.meta['poolq_hint'] = 'cpu'|'io', @worker.composite.cpu_bound/io_bound.
           The rule is logged at start, every change of a function's class when it happens.

sizing:
  --concurrency auto sizes the pool from the CPUs this process may use (affinity and the
  cgroup CPU quota): process = CPUs, thread = CPUs x WORKER_THREADS_PER_CPU,
  hybrid = CPUs processes x WORKER_THREADS_PER_CPU threads, auto = both the thread and the
  process pools. WORKER_PROCESSES and WORKER_THREADS_PER_PROCESS override hybrid/auto's figures.

Every flag has an environment variable: REDIS_URL, WORKER_STRATEGY, WORKER_CONCURRENCY, ...
(flag --foo-bar -> WORKER_FOO_BAR). Flags win over the environment.
"""


def build_parser() -> argparse.ArgumentParser:
    """The flags of every :class:`WorkerSettings` field (worker/flags.py), then those that are not settings."""
    p = OneLineParser(
        prog="python -m worker",
        description="poolq worker: runs RQ jobs from Redis in a thread, process, hybrid, auto or inline pool.",
        epilog=EPILOG + "\n" + env_only_epilog(WorkerSettings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    add_flags(p, WorkerSettings)
    p.add_argument(
        "--check",
        action="store_true",
        help="health check: exit 0 if Redis answers (and, with --require-worker, a live worker runs on this host)",
    )
    p.add_argument(
        "--require-worker",
        action="store_true",
        help="with --check: also require a live worker registered from this host",
    )
    p.add_argument("--version", action="version", version=f"poolq worker {__version__}")
    return p


def _given_urls(overrides: dict[str, Any]) -> tuple[str, ...]:
    """Every Redis URL this run was given (flag, environment), whose secrets no message may show."""
    import os

    found = [overrides.get("redis_url"), os.environ.get("REDIS_URL"), os.environ.get("WORKER_REDIS_URL")]
    return tuple(u for u in found if isinstance(u, str) and u)


def load_settings(argv: list[str] | None) -> tuple[WorkerSettings, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in ("check", "require_worker")}
    try:
        settings = WorkerSettings(**overrides)
    except ValidationError as e:
        print(describe_error(WorkerSettings, e, _given_urls(overrides)), file=sys.stderr)
        raise SystemExit(2) from None
    return settings, args


# A connection attempt to a host that does not answer at all (dropped packets) fails after this
# long instead of the kernel's ~2 minutes, so a retry loop and a stopping worker notice it.
REDIS_CONNECT_TIMEOUT_SECONDS = 5.0


def connect(url: str, retries: int = 20) -> redis.Redis[bytes]:
    """A client that rides out short Redis outages: commands retry with capped backoff.

    The retries end early once the worker using the client is stopping (worker/outage.py:
    the ``PoolWorker`` binds the client's gate), so SIGTERM is not held up by a Redis outage.
    """
    return redis.Redis.from_url(
        url,
        retry=StopAwareRetry(ExponentialBackoff(cap=2.0, base=0.05), retries, StopGate()),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        health_check_interval=30,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
    )


def wait_for_redis(url: str, wait_s: float) -> None:
    """Block until Redis answers, up to ``wait_s`` (0: forever), then exit 1 with one line.

    Probes with a client of its own that does not retry, so the bound is the configured one
    and not the working client's retry budget.
    """
    conn = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, retry=Retry(ExponentialBackoff(), 0))
    deadline = None if wait_s == 0 else time.monotonic() + wait_s
    delay, warned = 0.2, False
    shown = redact_url(url)
    while True:
        try:
            conn.ping()
            if warned:
                log.info("Redis at %s is reachable", shown)
            return
        except redis.exceptions.RedisError as e:
            if not warned:
                limit = "forever" if deadline is None else f"up to {wait_s:g} s (WORKER_REDIS_WAIT)"
                log.error("Redis at %s is not reachable (%s); retrying for %s", shown, scrub(str(e), [url]), limit)
                warned = True
            if deadline is not None and time.monotonic() >= deadline:
                print(f"error: Redis at {shown} unreachable after {wait_s:g} s; giving up", file=sys.stderr)
                raise SystemExit(1) from None
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, defaults.REDIS_BACKOFF_MAX_SECONDS)


def check(settings: WorkerSettings, require_worker: bool) -> int:
    conn = redis.Redis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        conn.ping()
    except redis.exceptions.RedisError as e:
        url = settings.redis_url
        print(f"unhealthy: Redis at {redact_url(url)} unreachable: {scrub(str(e), [url])}", file=sys.stderr)
        return 1
    if not require_worker:
        print("ok: Redis reachable")
        return 0
    from rq.utils import utcparse
    from rq.worker import Worker

    host = socket.gethostname()
    try:
        workers = Worker.all(connection=conn)
    except redis.exceptions.RedisError as e:
        print(f"unhealthy: could not list workers: {scrub(str(e), [settings.redis_url])}", file=sys.stderr)
        return 1
    for w in workers:
        if w.hostname == host and w.last_heartbeat is not None:
            beat = w.last_heartbeat if not isinstance(w.last_heartbeat, str) else utcparse(w.last_heartbeat)
            age = time.time() - beat.timestamp()
            if age <= settings.worker_ttl_seconds + settings.heartbeat_interval_seconds:
                print(f"ok: worker {w.name} alive (heartbeat {age:.1f} s ago)")
                return 0
    print(f"unhealthy: no worker with a fresh heartbeat registered from host {host}", file=sys.stderr)
    return 1


def describe_start(settings: WorkerSettings, cpu: CpuInfo, capacity: int, name: str) -> str:
    quota = "none" if cpu.quota is None else f"{cpu.quota:g}"
    how = "auto" if settings.concurrency == "auto" else "explicit"
    return (
        f"poolq worker {name}: strategy={settings.strategy} concurrency={capacity} ({how}) "
        f"available_cpus={cpu.available} (affinity={cpu.affinity}, cgroup quota={quota}, from {cpu.source}) "
        f"queues={settings.queues} python={platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    settings, args = load_settings(argv)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("rq").setLevel(logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING)
    logging.getLogger("worker.rq").setLevel(logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING)
    urls = (settings.redis_url, *_given_urls({}))
    redact_logging(urls)  # no log line, traceback or uncaught error shows the Redis password
    redact_tracebacks(urls)
    if getattr(args, "check", False):
        return check(settings, getattr(args, "require_worker", False))
    if getattr(args, "redis_url", None) and secrets_of(args.redis_url):
        log.warning(
            "--redis-url carries a password, and a command line is visible to every user of this host "
            "(ps, /proc); pass the URL in REDIS_URL instead"
        )
    try:
        return run(settings)
    except KeyboardInterrupt:  # Ctrl-C before the worker took over SIGINT (waiting for Redis at start)
        print("interrupted", file=sys.stderr)
        return 130


def skip_resource_tracker() -> None:
    """Do not start multiprocessing's resource tracker: one Python process less (~7 MiB PSS).

    The forkserver that pool children are forked from starts a resource tracker, a separate
    interpreter that unlinks named semaphores and shared-memory blocks left behind by crashed
    processes. poolq's pools use pipes only; the tracker has nothing to track. Giving it a
    write end on /dev/null makes multiprocessing take it for running: registrations (from a job
    that itself uses multiprocessing locks or shared memory) are accepted and dropped, so such
    a job works as before but what it leaks when killed is not cleaned up for it.
    """
    import os
    from multiprocessing import resource_tracker

    tracker: Any = getattr(resource_tracker, "_resource_tracker", None)
    if tracker is not None and getattr(tracker, "_fd", "missing") is None:
        tracker._fd = os.open(os.devnull, os.O_WRONLY)


# glibc's mallopt parameter for the number of malloc arenas (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Cap glibc's malloc arenas before any thread starts (as ``MALLOC_ARENA_MAX`` would).

    glibc gives threads that allocate at the same time arenas of their own, up to 8 per CPU;
    each arena keeps its own free memory. A thread pool of 16-64 threads under the GIL gains
    nothing from them (Python's small objects come from its own allocator; the threads do not
    run Python at once) but keeps several MiB more resident: measured on the io bench with 64
    threads, peak PSS 51.7 MiB without the cap, 46.4 with 2 arenas. An explicit
    ``MALLOC_ARENA_MAX`` in the environment wins; other C libraries: nothing to do.
    """
    import contextlib
    import ctypes
    import os

    if "MALLOC_ARENA_MAX" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):  # glibc only; musl has no libc.so.6
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas)


# Settings ``run`` and ``main`` read themselves; every other one is a constructor's parameter.
READ_BY_CLI = frozenset(
    {"redis_url", "strategy", "burst", "log_level", "metrics_port", "metrics_address", "redis_wait"}
)


def build(target: Callable[..., T], values: Mapping[str, Any], /, **given: Any) -> T:
    """``target(...)`` with the settings its signature names (arq's ``get_kwargs``), ``given`` on top.

    ``values``: :meth:`WorkerSettings.parameters`. What only the running worker knows (the
    connection, the strategy, the CPUs) is ``given``. tests/test_settings_cli.py checks that
    every setting reaches one of the constructors, so a renamed parameter fails a test instead
    of silently leaving its setting at the default.
    """
    names = inspect.signature(target).parameters
    return target(**{k: v for k, v in values.items() if k in names and k not in given}, **given)


def run(settings: WorkerSettings, extra_hooks: list[Any] | None = None) -> int:
    from worker.hooks import HookChain
    from worker.pool_worker import PoolWorker
    from worker.rqcompat import install_rq_fast_paths
    from worker.strategies import STRATEGIES, StrategyConfig

    limit_malloc_arenas()
    skip_resource_tracker()
    install_rq_fast_paths()
    cpu = detect_cpus()
    values = settings.parameters()
    config = build(StrategyConfig, values, available_cpus=cpu.available)
    hooks = HookChain(extra_hooks or [])
    strategy = STRATEGIES[settings.strategy](config, hooks)
    if strategy.capacity > MAX_SLOTS:  # auto-sizing: CPUs x WORKER_THREADS_PER_CPU can exceed it
        print(
            f"invalid configuration: {strategy.name} would run {strategy.capacity} jobs at once, at most {MAX_SLOTS}: "
            f"lower WORKER_THREADS_PER_CPU (x {cpu.available} CPUs), WORKER_PROCESSES or WORKER_THREADS_PER_PROCESS, "
            "or set WORKER_CONCURRENCY",
            file=sys.stderr,
        )
        return 2
    if settings.metrics_port:
        from worker.metrics import Metrics

        metrics = build(
            Metrics, values, strategy=strategy.name, capacity=strategy.capacity, available_cpus=cpu.available
        )
        try:
            metrics.serve(settings.metrics_address, settings.metrics_port)
        except OSError as e:
            print(
                f"error: cannot serve metrics on {settings.metrics_address}:{settings.metrics_port}: {e}",
                file=sys.stderr,
            )
            return 1
        hooks.hooks.append(metrics)
    wait_for_redis(settings.redis_url, settings.redis_wait)
    conn = connect(settings.redis_url)
    worker = build(PoolWorker, values, connection=conn, strategy=strategy, cpu_info=cpu, hooks=hooks)
    log.info("%s", describe_start(settings, cpu, strategy.capacity, values["name"]))
    worker.work(burst=settings.burst)
    return 0
