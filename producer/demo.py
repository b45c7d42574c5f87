"""``python -m producer.demo``: a steady, bounded demo load for ``docker compose up``.

Sends a mix of CPU and I/O jobs to every strategy queue at a fixed total rate, so each
worker service has the same work and the Grafana dashboards fill within a minute. It stops
after ``--duration`` seconds (and on SIGTERM/SIGINT): every load loop here is bounded.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import signal
import sys
import time
from types import FrameType

import redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from worker.cli_parser import OneLineParser
from worker.config_values import arg_float, arg_int, check_redis_url
from worker.redact import redact_url, scrub

log = logging.getLogger("producer.demo")

# (function, kwargs): the mix every queue receives, in turn. One job in ten fails (and is
# retried once) so the failure and retry panels show something too.
MIX: tuple[tuple[str, dict[str, float | str]], ...] = (
    ("worker.jobs.cpu", {"ms": 20.0}),
    ("worker.jobs.io", {"seconds": 0.05}),
    ("worker.jobs.mixed", {"cpu_ms": 5.0, "io_seconds": 0.02}),
    ("worker.jobs.io", {"seconds": 0.2}),
    ("worker.jobs.noop", {}),
    ("worker.jobs.cpu", {"ms": 5.0}),
    ("worker.jobs.io", {"seconds": 0.05}),
    ("worker.jobs.fail", {"message": "demo failure"}),
    ("worker.jobs.io", {"seconds": 0.1}),
    ("worker.jobs.noop", {}),
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m producer.demo", description=__doc__.splitlines()[0])
    p.add_argument("--queues", default="thread,process", help="queues to feed (default: thread,process)")
    p.add_argument("--rate", type=arg_float, default=20.0, help="jobs per second per queue (default: 20)")
    p.add_argument("--duration", type=arg_float, default=3600.0, help="seconds to run, then exit 0 (default: 3600)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument(
        "--max-backlog",
        type=arg_int,
        default=2000,
        help="pause while a queue holds more than this many jobs (default: 2000)",
    )
    args = p.parse_args(argv)
    if not 0 < args.rate <= 10_000:
        p.error("--rate must be > 0 and <= 10000")
    if args.duration <= 0:
        p.error("--duration must be > 0")
    try:
        check_redis_url(args.redis_url)
    except ValueError as e:
        p.error(f"--redis-url / REDIS_URL {redact_url(args.redis_url)!r}: {e}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    conn = redis.Redis.from_url(args.redis_url)
    try:
        conn.ping()
    except redis.exceptions.RedisError as e:
        url = args.redis_url
        print(f"error: Redis at {redact_url(url)} unreachable: {scrub(str(e), [url])}", file=sys.stderr)
        return 2
    queues = [Queue(q, connection=conn, serializer=JSONSerializer) for q in args.queues.split(",") if q]
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("demo load: %.1f jobs/s to each of %s for %.0f s", args.rate, args.queues, args.duration)
    start = time.monotonic()
    tick = 1.0
    carry = 0.0
    sent = 0
    next_log = start + 60.0
    mix = itertools.cycle(MIX)
    while not stop and time.monotonic() - start < args.duration:
        t0 = time.monotonic()
        carry += args.rate * tick
        n, carry = int(carry), carry - int(carry)
        try:
            for q in queues:
                if q.count > args.max_backlog:
                    continue
                batch = [
                    Queue.prepare_data(
                        func,
                        kwargs=dict(kw),
                        result_ttl=300,
                        failure_ttl=3600,
                        retry=Retry(max=1) if func.endswith(".fail") else None,
                    )
                    for func, kw in itertools.islice(mix, n)
                ]
                q.enqueue_many(batch)
                sent += len(batch)
        except redis.exceptions.RedisError as e:
            log.warning("Redis error (%s); retrying next tick", e)
        if time.monotonic() >= next_log:
            next_log += 60.0
            log.info("sent %d jobs so far", sent)
        time.sleep(max(0.0, tick - (time.monotonic() - t0)))
    log.info("demo load done: %d jobs sent", sent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
