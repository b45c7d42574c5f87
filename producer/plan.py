"""``python -m producer plan``: replicas, CPUs and memory per strategy for an arrival rate and SLO.

For every measured configuration (strategy x slots per replica) of the workload, from an
experiment's ``results.json``:

- per-slot service rate ``mu = throughput / slots``, measured with all slots busy (a burst):
  it includes the queue's own overhead and whatever the slots contend for (one GIL, the CPUs);
- ``k`` replicas consuming one queue are ``c = k x slots`` servers of one M/M/c queue; ``k`` is
  the smallest number with a stable queue, utilisation <= ``--max-utilization`` and predicted
  p95 queue wait <= ``--slo-p95``;
- CPUs per replica: the cores the worker tree kept busy at saturation, rounded up to 0.5 (never
  more than the CPUs it was measured with); memory per replica: its peak PSS under load;
- the cheapest configuration that meets the SLO, cost = CPUs + GiB / ``--gib-per-cpu``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from producer.capacity import MEMORY_FLOOR_MIB, MEMORY_HEADROOM, MEMORY_STEP_MIB, Option, options_from, size
from producer.errors import BadInput
from producer.results import Results


@dataclass
class Plan:
    workload: str
    arrival_rate: float
    slo_p95: float | None
    max_cpus: float | None
    max_util: float
    gib_per_cpu: float
    model: str
    options: list[Option]
    recommended: Option | None
    warnings: list[str]
    assumptions: list[str]
    shared_cpus: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "arrival_rate": self.arrival_rate,
            "slo_p95_s": self.slo_p95,
            "max_cpus": self.max_cpus,
            "max_utilization": self.max_util,
            "gib_per_cpu": self.gib_per_cpu,
            "model": self.model,
            "options": [o.to_json() for o in self.options],
            "recommended": self.recommended.to_json() if self.recommended else None,
            "warnings": self.warnings,
            "assumptions": self.assumptions,
            "shared_cpus": self.shared_cpus,
            "keda": self.keda(),
            "scaling": self.scaling(),
        }

    def keda(self) -> dict[str, Any] | None:
        """The recommended line as a KEDA ScaledObject's Redis list trigger and replica bounds."""
        r = self.recommended
        if r is None:
            return None
        out: dict[str, Any] = {
            "minReplicaCount": r.replicas,
            "listLength": r.keda_list_length(self.slo_p95),
            "queue_key": "rq:queue:<queue>",
        }
        if self.shared_cpus is not None and r.cpu_per_replica > 0:
            out["maxReplicaCount"] = max(r.replicas, math.floor(self.shared_cpus / r.cpu_per_replica))
        return out

    def scaling(self) -> list[dict[str, float]]:
        """Predicted saturated jobs/s of the recommended configuration for 1, 2, 4, ... replicas."""
        r = self.recommended
        if r is None:
            return []
        ks = sorted({1, 2, 4, 8, r.replicas})
        return [{"replicas": k, "jobs_s": r.rate_with(k, self.shared_cpus)} for k in ks]


def make_plan(
    results: Results | dict[str, Any],
    workload: str,
    arrival_rate: float,
    slo_p95: float | None = None,
    max_cpus: float | None = None,
    max_util: float | None = None,
    gib_per_cpu: float = 4.0,
    model: str = "mmc",
    shared_cpus: float | None = None,
) -> Plan:
    if not math.isfinite(arrival_rate) or arrival_rate <= 0:
        raise BadInput(f"--arrival-rate must be a positive number of jobs per second, got {arrival_rate:g}")
    if slo_p95 is not None and (not math.isfinite(slo_p95) or slo_p95 <= 0):
        raise BadInput(f"--slo-p95 must be a positive number of seconds, got {slo_p95:g}")
    if max_cpus is not None and (not math.isfinite(max_cpus) or max_cpus <= 0):
        raise BadInput(f"--max-cpus must be a positive number, got {max_cpus:g}")
    if max_util is None:
        max_util = 0.95 if slo_p95 is not None else 0.8
    if not 0 < max_util < 1:
        raise BadInput(f"--max-utilization must be between 0 and 1 (exclusive), got {max_util:g}")
    if gib_per_cpu <= 0:
        raise BadInput("--gib-per-cpu must be positive")
    if model not in ("mmc", "mgc"):
        raise BadInput(f"--model must be mmc or mgc, got {model!r}")
    if shared_cpus is not None and (not math.isfinite(shared_cpus) or shared_cpus <= 0):
        raise BadInput(f"--shared-cpus must be a positive number, got {shared_cpus:g}")
    if not isinstance(results, Results):
        results = Results.from_json(results)  # a results.json object
    opts = options_from(results, workload)
    if not opts:
        raise BadInput(f"no {workload!r} cell finished any job: nothing to plan from")
    warnings: list[str] = []
    for o in opts:
        size(o, arrival_rate, slo_p95, max_util, model)
        if max_cpus is not None and o.feasible and o.total_cpus > max_cpus:
            o.feasible = False
            o.why_not = f"needs {o.total_cpus:g} CPUs > --max-cpus {max_cpus:g}"
        ceiling = o.cpu_ceiling(shared_cpus)
        if o.feasible and arrival_rate > ceiling * max_util:
            o.feasible = False
            o.why_not = (
                f"{shared_cpus:g} shared CPUs carry at most {ceiling:,.1f} jobs/s "
                f"({(o.cpu_s_per_job or 0) * 1000:.1f} ms CPU per job), whatever the replicas"
            )
        if o.problems:
            o.notes.append("measured with problems: " + "; ".join(o.problems)[:200])
        if o.replicas > 1:
            o.notes.append(f"{o.replicas} replicas: extrapolated from one measured replica")
    meeting = [o for o in opts if o.feasible]
    recommended = min(meeting, key=lambda o: (o.cost(gib_per_cpu), o.p95_wait)) if meeting else None

    best_measured = max(o.replica_rate for o in opts)
    all_rates = [float(r.figures.throughput_jobs_s) for r in results.summary if r.figures.throughput_jobs_s]
    if arrival_rate > best_measured:
        warnings.append(
            f"{arrival_rate:g} jobs/s is more than any one {workload} worker was measured to do "
            f"({best_measured:,.1f} jobs/s): the plan assumes replicas add up linearly, which the data does not show"
        )
    if all_rates and arrival_rate > max(all_rates):
        warnings.append(
            f"no cell of these results pushed Redis beyond {max(all_rates):,.0f} jobs/s: at {arrival_rate:g} jobs/s "
            "Redis (and the producers) may become the bottleneck, which this model ignores"
        )
    small = [o.label for o in opts if o.count * o.runs < 100]
    if small:
        warnings.append(f"few jobs measured for {', '.join(small)} (< 100): the service rates are rough")
    shaky = [o.label for o in opts if o.problems]
    if shaky:
        warnings.append(f"cells with problems (failed jobs, timeouts) for {', '.join(shaky)}")
    cs2s = [o.cs2 for o in opts if o.cs2 is not None]
    if cs2s and max(abs(c - 1.0) for c in cs2s) > 0.5:
        lo, hi = min(cs2s), max(cs2s)
        warnings.append(
            f"measured service times are not exponential (CV² {lo:.2f}..{hi:.2f}, exponential = 1): M/M/c "
            "over-estimates waits of regular jobs (CV² < 1) and under-estimates heavy tails; see the M/G/c column"
        )
    machine = results.meta.available_cpus
    if slo_p95 is not None and recommended is None:
        warnings.append("no strategy meets the SLO within the limits given")
    assumptions = [
        "Arrivals are Poisson at the given rate; one FIFO queue is shared by all replicas (RQ's list); "
        "every slot of every replica takes the next job as soon as it is free.",
        "Service times are exponential (M/M/c) with the per-slot rate measured at saturation: throughput of one "
        "replica / its slots. That rate includes the queue's overhead and the slots' contention (threads share "
        "one GIL, processes the CPUs): for contended slots the model is pessimistic at low load.",
        f"A replica gets the CPUs it kept busy when saturated (rounded up to 0.5, at most the {machine} it was "
        "measured with) and needs its peak PSS under load; replicas scale linearly (no shared bottleneck but Redis, "
        "which is not modelled).",
        f"Replicas are added until utilisation <= {max_util:g}"
        + (
            f" and the predicted p95 queue wait <= {slo_p95:g} s "
            + ("(M/M/c)" if model == "mmc" else "(M/G/c: Erlang C's P(wait), the wait scaled by (1 + CV²) / 2)")
            if slo_p95 is not None
            else ""
        )
        + f"; cost = CPUs + GiB / {gib_per_cpu:g} (a typical cloud price ratio).",
        "Queue wait is started_at - enqueued_at; end-to-end adds the run time.",
    ]
    if any(o.cpu_limit is not None for o in opts):
        assumptions[2] = (  # instead of "the CPUs it kept busy ... its peak PSS"
            "Measured in containers (--docker): a replica gets the CPU limit it was measured under and a memory "
            f"limit of its container's peak working set under load x {MEMORY_HEADROOM:g}, rounded up to "
            f"{MEMORY_STEP_MIB} MiB, at least {MEMORY_FLOOR_MIB} MiB; the same strategy under different limits is "
            "a different option (more small containers or fewer big ones); replicas scale linearly (no shared "
            "bottleneck but Redis, which is not modelled)."
        )
    if shared_cpus is not None:
        assumptions.append(
            f"The replicas share {shared_cpus:g} CPUs: together they do at most {shared_cpus:g} / "
            "(CPU seconds per job) jobs/s, the ceiling measured when replicas outnumber the CPUs (docs/scaling.md)."
        )
    return Plan(workload, arrival_rate, slo_p95, max_cpus, max_util, gib_per_cpu, model, opts, recommended, warnings,
                assumptions, shared_cpus)  # fmt: skip


def render(plan: Plan) -> str:
    def num(x: float, fmt: str) -> str:
        return "—" if x is None or not math.isfinite(x) else format(x, fmt)

    slo = f", SLO p95 queue wait <= {plan.slo_p95:g} s" if plan.slo_p95 is not None else ""
    cap = f", at most {plan.max_cpus:g} CPUs" if plan.max_cpus is not None else ""
    lines = [f"Plan for {plan.arrival_rate:g} {plan.workload} jobs/s{slo}{cap}:", ""]
    head = (
        f"{'strategy':<14} {'slots':>5} {'mu/slot':>8} {'replicas':>8} {'CPUs':>6} {'memory':>10} "
        f"{'util':>5} {'P(wait)':>7} {'p95 wait':>9} {'M/G/c p95':>9}  note"
    )
    lines += [head, "-" * len(head)]
    for o in sorted(plan.options, key=lambda o: (not o.feasible, o.cost(plan.gib_per_cpu))):
        mark = "  <- recommended" if o is plan.recommended else ""
        note = o.why_not if not o.feasible else ("; ".join(o.notes) if o.notes else "")
        if not o.replicas:
            lines.append(f"{o.name:<14} {o.slots:>5} {o.mu:>8.2f} {'—':>8}  {note}")
            continue
        lines.append(
            f"{o.name:<14} {o.slots:>5} {o.mu:>8.2f} {o.replicas:>8} {o.total_cpus:>6.1f} "
            f"{num(o.total_mem_mib, ',.0f') + ' MiB':>10} {o.rho:>5.2f} {o.p_wait:>7.3f} "
            f"{num(o.p95_wait, '.3f') + ' s':>9} {num(o.p95_wait_mgc, '.3f') + ' s':>9}  {note}{mark}"
        )
    lines.append("")
    if plan.recommended:
        r = plan.recommended
        lines.append(
            f"Recommendation: {r.replicas} x {r.strategy} worker(s) with {r.slots} slot(s) each "
            f"(--strategy {r.strategy} --concurrency {r.slots}): {r.total_cpus:g} CPUs, "
            f"{num(r.total_mem_mib, ',.0f')} MiB, utilisation {r.rho:.2f}, predicted p95 queue wait "
            f"{num(r.p95_wait, '.3f')} s (M/M/c; {num(r.p95_wait_mgc, '.3f')} s with the measured service-time "
            f"variability, M/G/c)."
        )
        if r.cpu_limit is not None:
            m = f"{r.mem_per_replica_mib:.0f}m" if math.isfinite(r.mem_per_replica_mib) else "(not measured)"
            lines.append(
                f"Per container: {r.cpu_limit:g} CPU(s), memory limit {m} (docker run --cpus {r.cpu_limit:g} "
                f"--memory {m}; compose cpus: {r.cpu_limit:g}, mem_limit: {m}; Kubernetes cpu: {r.cpu_limit:g}, "
                f"memory: {m.removesuffix('m')}Mi); measured peak {num(r.container_mem_peak_mib or math.nan, '.0f')} "
                f"MiB, the worker detecting {math.ceil(r.cpu_limit)} CPU(s) and sizing its pool from them."
            )
        k = plan.keda()
        if k is not None:
            length = k["listLength"]
            lines.append(
                f"KEDA (deploy/kubernetes/optional/keda.yaml): minReplicaCount {k['minReplicaCount']}"
                + (f", maxReplicaCount {k['maxReplicaCount']}" if "maxReplicaCount" in k else "")
                + (
                    f", Redis list trigger listLength {length} (= ceil({r.replica_rate:,.1f} jobs/s per replica x "
                    f"{plan.slo_p95:g} s SLO): a backlog of that many jobs per replica drains within the SLO)."
                    if length is not None
                    else "; give --slo-p95 for the list trigger's listLength."
                )
            )
        shared = f" on {plan.shared_cpus:g} shared CPUs" if plan.shared_cpus is not None else ""
        lines.append(
            f"Saturated throughput by replicas{shared}: "
            + ", ".join(f"{int(p['replicas'])}: {p['jobs_s']:,.1f} jobs/s" for p in plan.scaling())
            + ("" if shared else " (linear: each replica with its own CPUs; --shared-cpus N caps it)")
            + "."
        )
    else:
        lines.append("Recommendation: none — no configuration meets the request (see the notes).")
    lines += ["", "Assumptions:"] + [f"- {a}" for a in plan.assumptions]
    if plan.warnings:
        lines += ["", "Warnings:"] + [f"- {w}" for w in plan.warnings]
    return "\n".join(lines) + "\n"
