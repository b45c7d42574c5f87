"""``python -m producer``: enqueue, experiment, plan, validate, report.

Bad input (a flag, a value, an unreachable Redis) gets one line on stderr and exit code 2,
before anything is enqueued.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from producer.errors import BadInput
from producer.settings import from_args
from worker.cli_parser import OneLineParser

EPILOG = """\
examples:
  python -m producer enqueue --workload cpu --count 1000 --param ms=20
  python -m producer enqueue --workload io --count 5000 --rate 200 --arrival poisson --param seconds=0.05
  python -m producer experiment --local --strategies thread,process,inline --workloads cpu,io --count 200 \\
      --out results/experiment-1
  python -m producer experiment --docker --cpus 1,2 --memory 512m --strategies thread,process --workloads cpu,io \\
      --out results/containers-1
  python -m producer plan --results results/experiment-1 --arrival-rate 300 --workload io --slo-p95 0.5
  python -m producer validate --results results/experiment-1 --workload io --arrival-rate 60 --count 3000

environment: REDIS_URL, PRODUCER_QUEUE, PRODUCER_BATCH_SIZE, PRODUCER_PROGRESS (auto|bar|lines|off),
PRODUCER_RESULT_TTL_SECONDS, PRODUCER_WORKER_METRICS; flags win. See docs/producer.md.
"""


def build_parser() -> argparse.ArgumentParser:
    from producer.workloads import WORKLOADS

    p = OneLineParser(
        prog="python -m producer",
        description="poolq producer: load generation, experiments, reports and capacity planning.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    # Listed for --help; main() hands `demo ...` to producer/demo.py before parsing.
    sub.add_parser("demo", help="a steady, bounded demo load to every strategy queue (the compose producer)")
    sub.required = True
    workloads = ",".join(WORKLOADS)

    e = sub.add_parser("enqueue", help="enqueue N jobs of a built-in workload")
    e.add_argument("--workload", "-w", required=True, metavar="W", help=f"one of {workloads}")
    e.add_argument("--count", "-n", required=True, type=int, metavar="N", help="number of jobs")
    e.add_argument("--rate", "-r", type=float, metavar="R", help="jobs per second (default: all at once)")
    e.add_argument("--arrival", choices=("burst", "constant", "poisson"), help="burst (no --rate), constant or poisson")
    e.add_argument("--queue", "-q", help="queue name (default: PRODUCER_QUEUE or 'default')")
    e.add_argument(
        "--param", "-p", action="append", default=[], metavar="K=V",
        help="job argument; V is JSON or text, @FILE reads it, exp:MEAN draws per job (repeatable)",
    )  # fmt: skip
    e.add_argument("--job-timeout", type=int, metavar="S", help="RQ job_timeout in whole seconds")
    e.add_argument("--result-ttl", type=int, metavar="S", help="seconds RQ keeps results (default: RQ's 500)")
    e.add_argument("--seed", type=int, help="seed of the Poisson arrivals and exp:MEAN parameters")
    e.add_argument("--redis-url", metavar="URL", help="Redis (default: REDIS_URL)")
    e.add_argument("--batch-size", type=int, metavar="N", help="jobs per pipeline (default: 500)")
    e.add_argument("--progress", choices=("auto", "bar", "lines", "off"), help="progress display")
    e.add_argument("--json", action="store_true", help="print the final report as JSON instead of a line")

    x = sub.add_parser("experiment", help="run strategies x workloads and write results, report and charts")
    x.add_argument("--local", action="store_true", help="start redis-server (if needed) and the workers here")
    x.add_argument(
        "--strategies", default="thread,process,inline",
        help="any of thread,process,inline,hybrid,auto (default: %(default)s); hybrid and auto for mixed work",
    )  # fmt: skip
    x.add_argument("--workloads", default="cpu,io,mixed,alloc", help="default: %(default)s")
    x.add_argument("--count", "-n", default="100", metavar="N|W=N,...", help="jobs per cell (default: 100)")
    x.add_argument(
        "--concurrency", metavar="SPEC",
        help="slots per worker: thread=16,process=auto+8,process:io=16 (default: thread=auto,process=auto)",
    )  # fmt: skip
    x.add_argument("--repeats", type=int, default=1, help="runs of every cell (default: 1)")
    x.add_argument("--out", "-o", required=True, type=Path, metavar="DIR", help="directory for the results")
    x.add_argument("--param", "-p", action="append", default=[], metavar="W.K=V", help="e.g. io.seconds=0.1")
    x.add_argument("--no-startup", action="store_true", help="skip the start-up measurements (--local)")
    x.add_argument("--no-timeouts", action="store_true", help="skip the killability measurements (--local)")
    x.add_argument("--timeout-job-seconds", type=float, default=4.0, help="length of the overdue job (default: 4)")
    x.add_argument("--job-timeout", type=int, default=1, help="its job_timeout, seconds (default: 1)")
    x.add_argument(
        "--worker-metrics", metavar="S=URL,...",
        help="running workers' /metrics per strategy (default: PRODUCER_WORKER_METRICS)",
    )  # fmt: skip
    x.add_argument("--sample-interval", type=float, default=0.1, help="process-tree sampling, s (default: 0.1)")
    x.add_argument(
        "--metrics-settle", type=float, default=2.5, metavar="S",
        help="running workers: wait this long after a cell for their metrics sampler (default: 2.5)",
    )  # fmt: skip
    x.add_argument(
        "--quiet-below", type=float, metavar="CORES",
        help="--local: before each cell, wait until other programs use fewer cores than this (a shared machine)",
    )  # fmt: skip
    x.add_argument("--quiet-wait", type=float, default=120.0, metavar="S", help="wait at most this long (default: 120)")
    x.add_argument("--cell-timeout", type=float, default=600.0, help="seconds a cell may take (default: 600)")
    x.add_argument("--redis-url", metavar="URL", help="Redis (default: REDIS_URL)")
    d = x.add_argument_group(
        "containers (--docker)",
        "every cell in a worker container the producer starts from the host through the Docker SDK, under a CPU "
        "and memory limit; see docs/container-experiments.md",
    )
    d.add_argument("--docker", action="store_true", help="run each cell in a fresh worker container")
    d.add_argument("--image", metavar="IMAGE", help="worker image (default: poolq:local, as compose builds it)")
    d.add_argument("--cpus", metavar="C[,C...]", help="CPU limits, one cell each (default: 1), e.g. 1,2 or 0.5")
    d.add_argument("--memory", metavar="SIZE", help="memory limit of a worker container (default: 1g), e.g. 512m")
    d.add_argument(
        "--network", metavar="NET",
        help="an existing Docker network whose Redis to use (with --redis-url as the containers reach it, e.g. "
        "the compose stack's poolq_default and redis://redis:6379/0); default: a network and Redis of its own",
    )  # fmt: skip
    d.add_argument("--redis-image", metavar="IMAGE", help="image of its own Redis (default: redis:7.2.5)")
    d.add_argument("--health-timeout", type=float, default=180.0, metavar="S",
                   help="seconds a worker container may take to become healthy (default: 180)")  # fmt: skip

    pl = sub.add_parser("plan", help="replicas, CPUs and memory per strategy for an arrival rate (M/M/c)")
    pl.add_argument("--results", required=True, type=Path, metavar="DIR", help="an experiment's output directory")
    pl.add_argument("--arrival-rate", required=True, type=float, metavar="R", help="jobs per second")
    pl.add_argument("--workload", "-w", required=True, metavar="W", help="a workload measured in the results")
    pl.add_argument("--slo-p95", type=float, metavar="S", help="p95 queue wait to meet, seconds")
    pl.add_argument("--max-cpus", type=float, metavar="C", help="CPUs available in all")
    pl.add_argument("--max-utilization", type=float, metavar="U", help="default 0.95 with an SLO, else 0.8")
    pl.add_argument("--gib-per-cpu", type=float, default=4.0, help="price of 1 CPU in GiB (default: 4)")
    pl.add_argument(
        "--model", choices=("mmc", "mgc"), default="mmc",
        help="size for the SLO with M/M/c (default) or M/G/c (the measured service-time variability)",
    )  # fmt: skip
    pl.add_argument(
        "--shared-cpus", type=float, metavar="N",
        help="the replicas share N CPUs (one host): cap their sum at N / CPU seconds per job (default: no cap)",
    )  # fmt: skip
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")

    v = sub.add_parser("validate", help="run the plan's recommendation with Poisson load; predicted vs measured")
    v.add_argument("--results", required=True, type=Path, metavar="DIR")
    v.add_argument("--workload", "-w", required=True, metavar="W")
    v.add_argument("--arrival-rate", required=True, type=float, metavar="R")
    v.add_argument("--count", "-n", type=int, default=3000, help="jobs (default: 3000)")
    v.add_argument("--slo-p95", type=float, metavar="S")
    v.add_argument("--max-cpus", type=float, metavar="C")
    v.add_argument("--max-utilization", type=float, metavar="U")
    v.add_argument("--strategy", help="run this option (e.g. thread or thread x4) instead of the recommendation")
    v.add_argument("--model", choices=("mmc", "mgc"), default="mmc", help="sizing model of the plan (default: mmc)")
    v.add_argument("--seed", type=int, default=1)
    v.add_argument("--out", "-o", type=Path, metavar="DIR", help="default: results/validate-<time>")
    v.add_argument("--redis-url", metavar="URL")
    v.add_argument("--progress", choices=("auto", "bar", "lines", "off"), help="progress display")

    r = sub.add_parser("report", help="redraw report.md and the charts from a results directory")
    r.add_argument("--results", required=True, type=Path, metavar="DIR")
    strict_numbers(p)
    return p


def strict_numbers(parser: argparse.ArgumentParser) -> None:
    """Number flags read as the worker's settings are: ASCII digits, finite (worker/config_values.py).

    argparse's ``type=int``/``type=float`` are Python's ``int()``/``float()``, which take other
    scripts' digits, ``inf`` and ``nan`` (``--rate inf``, ``--count`` in Arabic-Indic digits).
    Every subcommand's flags, including ones added later, get the strict versions.
    """
    from worker.config_values import arg_float, arg_int

    for action in parser._actions:
        if action.type is int:
            action.type = arg_int
        elif action.type is float:
            action.type = arg_float
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                strict_numbers(sub)


def cmd_enqueue(args: argparse.Namespace) -> int:
    import redis

    from producer.arrivals import resolve_arrival
    from producer.enqueue import connect, enqueue, make_progress
    from producer.workloads import build_spec

    settings = from_args(args)
    spec = build_spec(args.workload, list(args.param))
    if args.count <= 0:
        raise BadInput(f"--count must be a positive number of jobs, got {args.count}")
    arrival = resolve_arrival(args.arrival, args.rate)
    if args.job_timeout is not None and args.job_timeout <= 0:
        raise BadInput(f"--job-timeout must be a positive number of seconds, got {args.job_timeout}")
    if args.result_ttl is not None and args.result_ttl <= 0:
        raise BadInput(f"--result-ttl must be a positive number of seconds, got {args.result_ttl}")
    conn = connect(settings.redis_url)
    label = f"{args.workload} -> {settings.queue}"
    try:
        report = enqueue(
            conn, settings.queue, spec, args.count, arrival=arrival, rate=args.rate, seed=args.seed,
            batch_size=settings.batch_size, job_timeout=args.job_timeout, result_ttl=args.result_ttl,
            progress=make_progress(settings.progress, args.count, label),
        )  # fmt: skip
    except redis.exceptions.RedisError as e:
        print(f"error: Redis failed while enqueueing: {e}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(report.summary())
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from producer import experiment, options
    from producer.backends import select
    from producer.workloads import WORKLOADS

    settings = from_args(args)
    strategies = options.parse_list(args.strategies, options.STRATEGIES, "strategies", "strategy")
    workloads = options.parse_list(args.workloads, list(WORKLOADS), "workloads", "workload")
    if args.repeats < 1:
        raise BadInput(f"--repeats must be >= 1, got {args.repeats}")
    if args.sample_interval <= 0 or args.cell_timeout <= 0 or args.metrics_settle < 0:
        raise BadInput("--sample-interval and --cell-timeout must be positive, --metrics-settle not negative")
    if args.job_timeout < 1 or args.timeout_job_seconds <= args.job_timeout:
        raise BadInput("--job-timeout must be >= 1 and shorter than --timeout-job-seconds")
    docker_opts = None
    docker_flags = [f"--{n.replace('_', '-')}" for n in ("image", "cpus", "memory", "network", "redis_image")
                    if getattr(args, n) is not None]  # fmt: skip
    if args.docker:
        if args.local:
            raise BadInput("--docker and --local exclude each other: --docker starts worker containers, --local "
                           "worker processes")  # fmt: skip
        if args.worker_metrics:
            raise BadInput("--worker-metrics is for running workers; --docker scrapes the containers it starts")
        docker_opts = options.docker_options(args.cpus, args.memory, args.image, args.redis_image, args.network,
                                             args.redis_url, args.health_timeout)  # fmt: skip
    elif docker_flags:
        raise BadInput(f"{docker_flags[0]} is for container experiments: add --docker")
    metrics = options.parse_worker_metrics(settings.worker_metrics) if docker_opts is None else {}
    if metrics and args.local:
        raise BadInput("--worker-metrics is for running workers; --local measures its own workers' process trees")
    opts = options.Options(
        strategies=strategies,
        workloads=workloads,
        counts=options.parse_counts(args.count, workloads),
        concurrency=options.parse_concurrency(args.concurrency, strategies, workloads),
        out=args.out,
        local=args.local,
        repeats=args.repeats,
        params=options.parse_params(args.param, workloads),
        worker_metrics=metrics,
        startup=not args.no_startup,
        timeouts=not args.no_timeouts,
        timeout_job_seconds=args.timeout_job_seconds,
        job_timeout=args.job_timeout,
        sample_interval=args.sample_interval,
        cell_timeout=args.cell_timeout,
        metrics_settle=args.metrics_settle,
        quiet_below=args.quiet_below,
        quiet_wait=args.quiet_wait,
        redis_url=settings.redis_url,
        batch_size=settings.batch_size,
        result_ttl=settings.result_ttl_seconds,
        argv=sys.argv[1:],
        docker=docker_opts,
    )
    backend = select(opts)
    backend.preflight()  # Redis, running workers, the engine, images, limits: refused before anything starts
    if not backend.interrupt_on_sigterm:
        results = experiment.run(opts, backend)
        return 130 if results.meta.interrupted else 0

    def on_term(signum: int, frame: Any) -> None:  # SIGTERM like Ctrl-C: the backend removes what it started
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        results = experiment.run(opts, backend)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 130 if results.meta.interrupted else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from producer.plan import make_plan, render
    from producer.records import strict_json
    from producer.results import load_results

    results = load_results(args.results)
    plan = make_plan(
        results, args.workload, args.arrival_rate, args.slo_p95, args.max_cpus, args.max_utilization, args.gib_per_cpu,
        args.model, args.shared_cpus,
    )  # fmt: skip
    if args.json:
        print(json.dumps(strict_json(plan.to_json()), indent=1))
    else:
        print(render(plan), end="")
    return 0 if plan.recommended is not None else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from producer.validate import main_args

    if args.count <= 0:
        raise BadInput(f"--count must be positive, got {args.count}")
    return main_args(args)


def cmd_report(args: argparse.Namespace) -> int:
    from producer import charts, report
    from producer.results import load_results

    results = load_results(args.results)
    charts.write_all(args.results, results)
    (args.results / "report.md").write_text(report.render(results, args.results))
    print(f"wrote {args.results / 'report.md'}")
    return 0


COMMANDS = {
    "enqueue": cmd_enqueue,
    "experiment": cmd_experiment,
    "plan": cmd_plan,
    "validate": cmd_validate,
    "report": cmd_report,
}


def _env_urls() -> list[str]:
    import os

    return [u for u in (os.environ.get("REDIS_URL"), os.environ.get("PRODUCER_REDIS_URL")) if u]


# What the producer's extra brings (requirements-producer.txt); imported lazily by the commands.
EXTRA_MODULES = frozenset({"numpy", "matplotlib", "rich"})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:  # the compose stack's steady demo load: see producer/demo.py
        from producer import demo

        return demo.main(argv[1:])
    args = build_parser().parse_args(argv)
    from worker.redact import redact_tracebacks

    redact_tracebacks(u for u in (getattr(args, "redis_url", None), *_env_urls()) if u)
    try:
        return COMMANDS[args.command](args)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:
        from producer.settings import describe_error

        print(describe_error(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:  # a plain `pip install poolq` is the worker alone
        if (e.name or "").split(".")[0] not in EXTRA_MODULES:
            raise
        print(f"error: {e.name} is not installed: the producer needs `pip install 'poolq[producer]'`", file=sys.stderr)
        return 2
