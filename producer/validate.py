"""``python -m producer validate``: run the planner's recommendation and compare its prediction.

1. ``plan`` from ``--results`` for ``--workload`` at ``--arrival-rate`` (and ``--slo-p95``...);
2. start the recommended number of local workers with the recommended strategy and slots, all
   consuming one fresh queue (Redis: ``REDIS_URL``, or a private redis-server);
3. send ``--count`` jobs of the same workload as Poisson arrivals at that rate;
4. measure queue waits (started_at - enqueued_at) from RQ's timestamps and compare the measured
   p95 (and mean, and the share of jobs that waited) with the prediction (M/M/c and M/G/c).

Writes ``validation.json`` and ``validation.md`` to ``--out``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from producer.enqueue import connect, enqueue, make_progress
from producer.erlang import MMc, mgc_mean_wait, mgc_wait_quantile
from producer.measure import job_times, summarize, wait_done
from producer.plan import Plan, make_plan
from producer.plan import render as render_plan
from producer.processes import LocalRedis, LocalWorker, reachable
from producer.records import strict_json
from producer.results import load_results
from producer.settings import from_args
from producer.stats import percentile
from producer.workloads import build_spec
from worker.redact import redact_url

WAITED_THRESHOLD_S = 0.005  # a job "waited" when its wait exceeds the dequeue overhead


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(
    results_dir: Path,
    workload: str,
    arrival_rate: float,
    count: int,
    out: Path,
    redis_url: str,
    slo_p95: float | None = None,
    max_cpus: float | None = None,
    max_util: float | None = None,
    seed: int = 1,
    progress: str = "auto",
    strategy: str | None = None,
    model: str = "mmc",
) -> dict[str, Any]:
    results = load_results(results_dir)
    plan: Plan = make_plan(results, workload, arrival_rate, slo_p95, max_cpus, max_util, model=model)
    print(render_plan(plan))
    chosen = plan.recommended
    if strategy is not None:
        chosen = next((o for o in plan.options if o.label == strategy or o.strategy == strategy), None)
    if chosen is None or not chosen.replicas:
        raise SystemExit("validate: the plan has no configuration to run")
    kwargs = results.meta.spec_kwargs.get(workload)
    spec = build_spec(workload, kwargs or {})
    local_redis: LocalRedis | None = None
    if not reachable(redis_url):
        local_redis = LocalRedis()
        log(f"REDIS_URL {redact_url(redis_url)} is unreachable: started redis-server on 127.0.0.1:{local_redis.port}")
    url = local_redis.url if local_redis else redis_url
    out.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:6]
    queue = f"poolq-validate-{run_id}"
    workers: list[LocalWorker] = []
    try:
        conn = connect(url)
        for i in range(chosen.replicas):
            workers.append(LocalWorker(url, chosen.strategy, str(chosen.slots), queue, f"{queue}-w{i}", out))
        for w in workers:
            w.wait_registered(conn)
        warm = enqueue(conn, queue, build_spec("noop"), chosen.replicas * chosen.slots, result_ttl=60)
        wait_done(conn, warm.job_ids, 120)
        log(
            f"running {count} {spec.describe()} jobs as Poisson arrivals at {arrival_rate:g}/s against "
            f"{chosen.replicas} x {chosen.label} (about {count / arrival_rate:.0f} s)"
        )
        rep = enqueue(
            conn,
            queue,
            spec,
            count,
            arrival="poisson",
            rate=arrival_rate,
            seed=seed,
            batch_size=500,
            result_ttl=3600,
            progress=make_progress(progress, count, "enqueue"),
        )
        done = wait_done(conn, rep.job_ids, count / arrival_rate * 4 + 120)
        times = job_times(conn, rep.job_ids)
    finally:
        for w in workers:
            w.stop()
        if local_redis is not None:
            local_redis.stop()
    summary = summarize(times)
    waits = sorted(t.wait for t in times if t.wait is not None and t.status == "finished")
    runs = [t.run for t in times if t.run is not None and t.status == "finished"]
    busy = sum(runs)
    span = summary.makespan_s or math.nan
    measured: dict[str, Any] = {
        "jobs": len(times),
        "finished": summary.finished,
        "arrival_rate_achieved": rep.achieved_rate,
        "p95_wait_s": percentile(waits, 95),
        "p50_wait_s": percentile(waits, 50),
        "p99_wait_s": percentile(waits, 99),
        "mean_wait_s": float(np.mean(waits)) if waits else math.nan,
        "share_waited": (sum(1 for w in waits if w > WAITED_THRESHOLD_S) / len(waits)) if waits else math.nan,
        "run_mean_s": float(np.mean(runs)) if runs else math.nan,
        "busy_ratio_run_time": busy / (span * chosen.replicas * chosen.slots) if span and span > 0 else math.nan,
        "all_done": done,
    }
    mm = MMc(arrival_rate, chosen.mu, chosen.replicas * chosen.slots)
    model_achieved = MMc(rep.achieved_rate, chosen.mu, chosen.replicas * chosen.slots)
    cs2 = chosen.cs2 if chosen.cs2 is not None else 1.0
    predicted: dict[str, Any] = {
        "model": f"M/M/{mm.c}",
        "lam": arrival_rate,
        "mu_per_slot": chosen.mu,
        "servers": mm.c,
        "rho": mm.rho,
        "p_wait": mm.p_wait,
        "mean_wait_s": mm.mean_wait,
        "p95_wait_s": mm.wait_quantile(0.95),
        "cs2": cs2,
        "mgc_mean_wait_s": mgc_mean_wait(mm, cs2),
        "mgc_p95_wait_s": mgc_wait_quantile(mm, 0.95, cs2),
        "p95_wait_s_at_achieved_rate": model_achieved.wait_quantile(0.95),
        "mgc_p95_wait_s_at_achieved_rate": mgc_wait_quantile(model_achieved, 0.95, cs2),
    }
    # The plan's mu is the slot time at saturation (dequeue and bookkeeping included): a pessimistic
    # bound. Service = run time alone (started_at -> ended_at) is the optimistic one.
    if chosen.run_mean_s:
        lo = MMc(arrival_rate, 1.0 / chosen.run_mean_s, mm.c)
        if lo.stable:
            predicted["optimistic_mu_per_slot"] = 1.0 / chosen.run_mean_s
            predicted["optimistic_p95_wait_s"] = lo.wait_quantile(0.95)
            predicted["optimistic_mgc_p95_wait_s"] = mgc_wait_quantile(lo, 0.95, cs2)
            predicted["optimistic_p_wait"] = lo.p_wait

    def err(pred: float, meas: float) -> float:
        return (meas - pred) / pred * 100.0 if pred and math.isfinite(pred) and pred > 0 else math.nan

    verdict = {
        "mmc_p95_error_pct": err(predicted["p95_wait_s"], measured["p95_wait_s"]),
        "mgc_p95_error_pct": err(predicted["mgc_p95_wait_s"], measured["p95_wait_s"]),
    }
    verdict["mmc_within_25pct"] = abs(verdict["mmc_p95_error_pct"]) <= 25
    verdict["mgc_within_25pct"] = abs(verdict["mgc_p95_error_pct"]) <= 25
    data = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "results": str(results_dir),
        "workload": workload,
        "spec": spec.describe(),
        "count": count,
        "seed": seed,
        "configuration": {"strategy": chosen.strategy, "slots": chosen.slots, "replicas": chosen.replicas},
        "plan": plan.to_json(),
        "predicted": predicted,
        "measured": measured,
        "verdict": verdict,
        "enqueue": rep.to_json(),
    }
    (out / "validation.json").write_text(json.dumps(strict_json(data), indent=1) + "\n")
    text = render(data)
    (out / "validation.md").write_text(text)
    print(text)
    return data


def render(d: dict[str, Any]) -> str:
    p, m, v, c = d["predicted"], d["measured"], d["verdict"], d["configuration"]

    def s(x: Any, digits: int = 3) -> str:
        return "—" if x is None or not math.isfinite(float(x)) else f"{float(x):.{digits}f}"

    return "\n".join(
        [
            f"Validation: {d['count']} {d['spec']} jobs, Poisson at {p['lam']:g}/s (achieved "
            f"{m['arrival_rate_achieved']:.2f}/s), against {c['replicas']} x {c['strategy']} worker(s) with "
            f"{c['slots']} slot(s): {p['servers']} servers, mu = {p['mu_per_slot']:.3f}/s per slot, "
            f"utilisation {p['rho']:.2f}, service CV² {p['cs2']:.2f}.",
            "",
            "| | predicted M/M/c | predicted M/G/c (Allen-Cunneen) | measured |",
            "|---|---|---|---|",
            f"| p95 queue wait s | {s(p['p95_wait_s'])} | {s(p['mgc_p95_wait_s'])} | {s(m['p95_wait_s'])} |",
            f"| mean queue wait s | {s(p['mean_wait_s'])} | {s(p['mgc_mean_wait_s'])} | {s(m['mean_wait_s'])} |",
            f"| share of jobs that waited | {s(p['p_wait'], 2)} | {s(p['p_wait'], 2)} | {s(m['share_waited'], 2)} "
            f"(wait > {WAITED_THRESHOLD_S * 1000:g} ms) |",
            f"| p95 error vs measured | {s(v['mmc_p95_error_pct'], 1)}% | {s(v['mgc_p95_error_pct'], 1)}% | |",
            *(
                [
                    f"| optimistic bound: p95 with mu = 1 / run time ({p['optimistic_mu_per_slot']:.2f}/s) "
                    f"| {s(p['optimistic_p95_wait_s'])} | {s(p['optimistic_mgc_p95_wait_s'])} | |",
                ]
                if p.get("optimistic_p95_wait_s") is not None
                else []
            ),
            "",
            f"Within ±25%: M/M/c {'yes' if v['mmc_within_25pct'] else 'no'}, "
            f"M/G/c {'yes' if v['mgc_within_25pct'] else 'no'}. At the arrival rate actually achieved the "
            f"prediction would be {s(p['p95_wait_s_at_achieved_rate'])} s (M/M/c), "
            f"{s(p['mgc_p95_wait_s_at_achieved_rate'])} s (M/G/c).",
            "",
        ]
    )


def main_args(args: Any) -> int:
    settings = from_args(args)
    out = args.out or Path("results") / f"validate-{time.strftime('%Y%m%d-%H%M%S')}"
    run(
        Path(args.results), args.workload, args.arrival_rate, args.count, Path(out), settings.redis_url,
        slo_p95=args.slo_p95, max_cpus=args.max_cpus, max_util=args.max_utilization, seed=args.seed,
        progress=settings.progress, strategy=args.strategy, model=args.model,
    )  # fmt: skip
    return 0
