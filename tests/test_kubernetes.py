"""deploy/kubernetes/ validated offline (issue 8), and checked against the worker's own rules.

- Core kinds (Deployment, StatefulSet, Service, Secret): ``kubernetes-validate`` in strict mode
  (unknown fields are errors), against the oldest and the newest Kubernetes schema it bundles.
- CRDs (KEDA's ScaledObject and TriggerAuthentication, the Prometheus Operator's
  ServiceMonitor): the ``cloudcoil-models-keda`` / ``-prometheus-operator`` pydantic models,
  generated from those projects' CRD schemas; made strict here (a key the model does not know,
  e.g. a misspelt field, is an error).
- A document of any other kind fails the test: nothing is skipped.

Then what a schema cannot know: the CPU limit of each worker Deployment gives, through the
worker's own cgroup-quota sizing (``worker.cpus``) and strategy sizing, the pool size it
declares; probes, ports, grace period and environment agree with the worker's settings; each
ScaledObject watches its Deployment's queue (``rq:queue:<name>``) with ``listLength = ceil(replica
rate x queue-wait SLO)`` (docs/scaling.md); the Secret's URL and KEDA address name one server.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as monitoring
from pydantic import BaseModel

from worker import defaults
from worker.cpus import detect_cpus
from worker.settings import WorkerSettings
from worker.strategies import STRATEGIES, StrategyConfig

ROOT = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
CRD_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
}
CORE_KINDS = {"Deployment", "StatefulSet", "Service", "Secret"}
DEPLOYED_STRATEGIES = [s for s in defaults.STRATEGIES if s != "inline"]  # inline is a baseline, not a deployment


def manifest_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in documents() if d["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def unknown_keys(given: Any, kept: Any, path: str = "") -> list[str]:
    """Keys of ``given`` that the model did not keep (it ignores what it does not know)."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path or "."]
        out = []
        for k, v in given.items():
            if k not in kept:
                out.append(f"{path}.{k}")
            else:
                out += unknown_keys(v, kept[k], f"{path}.{k}")
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [
            x for i, (g, k) in enumerate(zip(given, kept, strict=False)) for x in unknown_keys(g, k, f"{path}[{i}]")
        ]
    return []


def k8s_versions() -> list[str]:
    """The oldest and the newest Kubernetes versions whose schemas the package bundles."""
    from kubernetes_validate.utils import all_versions

    versions = sorted(set(all_versions()), key=lambda v: tuple(int(x) for x in v.split(".")))
    return [versions[0], versions[-1]]


# ---------------------------------------------------------------------------------------------
# schemas


def test_there_is_something_to_validate() -> None:
    kinds = {d["kind"] for _, d in documents()}
    assert {"Deployment", "StatefulSet", "Service", "Secret", "ScaledObject", "TriggerAuthentication"} <= kinds
    assert "ServiceMonitor" in kinds


@pytest.mark.parametrize("version", k8s_versions())
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_validates(path: Path, version: str) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        where = f"{path.relative_to(ROOT)}: {key[1]}/{doc.get('metadata', {}).get('name')}"
        if key in CRD_MODELS:
            model = CRD_MODELS[key].model_validate(doc)  # types, required fields, enums
            kept = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
            assert not unknown_keys(doc, kept), f"{where}: fields the CRD does not have: {unknown_keys(doc, kept)}"
        else:
            assert key[1] in CORE_KINDS, f"{where}: no schema for this kind here; add one rather than skip it"
            kubernetes_validate.validate(doc, version, strict=True)


def test_a_misspelt_crd_field_is_caught() -> None:
    """The strictness above is real: a typo in a ScaledObject is reported, not ignored."""
    doc = next(d for d in by_kind("ScaledObject"))
    bad = yaml.safe_load(yaml.safe_dump(doc))
    bad["spec"]["minReplicaCnt"] = bad["spec"].pop("minReplicaCount")
    kept = keda.ScaledObject.model_validate(bad).model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert unknown_keys(bad, kept) == [".spec.minReplicaCnt"]


def test_kustomization_lists_every_core_manifest() -> None:
    kust = yaml.safe_load((ROOT / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization"
    listed = set(kust["resources"])
    top = {p.name for p in ROOT.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == top, f"kustomization.yaml lists {sorted(listed)}, the directory has {sorted(top)}"
    assert all((ROOT / r).exists() for r in listed)


# ---------------------------------------------------------------------------------------------
# the worker's own rules


def worker_deployments() -> dict[str, dict[str, Any]]:
    out = {}
    for d in by_kind("Deployment"):
        container = d["spec"]["template"]["spec"]["containers"][0]
        out[env_of(container)["WORKER_STRATEGY"]] = d
    return out


def cpu_quantity(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def mem_quantity(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(float(q[:-2]) * units[q[-2:]]) if q[-2:] in units else int(q)


def test_one_deployment_per_strategy() -> None:
    deps = worker_deployments()
    assert sorted(deps) == sorted(DEPLOYED_STRATEGIES)
    for strategy, d in deps.items():
        assert d["metadata"]["name"] == f"poolq-worker-{strategy}"
        sel = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= labels.items(), f"{strategy}: the selector does not select its own pods"


@pytest.mark.parametrize("strategy", DEPLOYED_STRATEGIES)
def test_cpu_limit_gives_the_declared_pool(strategy: str, tmp_path: Path) -> None:
    """requests = limits, whole CPUs; the limit becomes the container's cgroup cpu.max, from which
    the worker sizes its pool: that pool is the one the Deployment declares (poolq/pool-size)."""
    d = worker_deployments()[strategy]
    res = d["spec"]["template"]["spec"]["containers"][0]["resources"]
    cpus = cpu_quantity(res["limits"]["cpu"])
    assert cpu_quantity(res["requests"]["cpu"]) == cpus, "requests.cpu must equal limits.cpu (Guaranteed QoS)"
    assert cpus == int(cpus) >= 1, "whole CPUs: the worker rounds a fractional quota up and over-subscribes"
    assert mem_quantity(res["requests"]["memory"]) <= mem_quantity(res["limits"]["memory"])
    # what the kubelet writes for that limit (cgroup v2), read by the worker's own detection
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    (tmp_path / "cpu.max").write_text(f"{int(cpus * 100000)} 100000\n")
    proc_cgroup = tmp_path / "proc-self-cgroup"
    proc_cgroup.write_text("0::/\n")
    detected = detect_cpus(cgroup_root=tmp_path, proc_cgroup=proc_cgroup)
    assert detected.available == min(int(cpus), detected.affinity)
    config = StrategyConfig(available_cpus=int(cpus), concurrency=None, threads_per_cpu=defaults.THREADS_PER_CPU)
    assert STRATEGIES[strategy].size(config) == int(d["metadata"]["annotations"]["poolq/pool-size"])


@pytest.mark.parametrize("strategy", DEPLOYED_STRATEGIES)
def test_worker_settings_probes_and_metrics_agree(strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d = worker_deployments()[strategy]
    pod = d["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = env_of(container)
    assert env["REDIS_URL"] == {"secretKeyRef": {"name": "poolq-redis", "key": "url"}}
    for k in list(__import__("os").environ):
        if k.startswith("WORKER_") or k == "REDIS_URL":
            monkeypatch.delenv(k)
    for k, v in env.items():
        if isinstance(v, str):
            monkeypatch.setenv(k, v)
    settings = WorkerSettings()  # every WORKER_* value of the manifest is valid
    assert settings.strategy == strategy
    assert settings.queue_names == [strategy]
    assert settings.name is None, "WORKER_NAME must stay <hostname>.<pid>: unique per replica"
    assert settings.metrics_address == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.metrics_port
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == settings.metrics_port
    assert pod["spec"]["terminationGracePeriodSeconds"] > settings.shutdown_timeout
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"  # not Redis-dependent: no crash loop
    assert container["readinessProbe"]["exec"]["command"][-2:] == ["--check", "--require-worker"]
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), "the forkserver needs a writable /tmp"


def test_keda_scales_each_deployment_on_its_queue() -> None:
    deps = worker_deployments()
    objects = by_kind("ScaledObject")
    assert sorted(o["spec"]["scaleTargetRef"]["name"] for o in objects) == sorted(
        d["metadata"]["name"] for d in deps.values()
    )
    auth = {a["metadata"]["name"]: a for a in by_kind("TriggerAuthentication")}
    secret = named("Secret", "poolq-redis")
    for o in objects:
        target = next(d for d in deps.values() if d["metadata"]["name"] == o["spec"]["scaleTargetRef"]["name"])
        queue = env_of(target["spec"]["template"]["spec"]["containers"][0])["WORKER_QUEUES"]
        (trigger,) = o["spec"]["triggers"]
        assert trigger["type"] == "redis"
        meta = trigger["metadata"]
        assert meta["listName"] == f"rq:queue:{queue}", "RQ keeps a queue's waiting job ids in the list rq:queue:<name>"
        ann = o["metadata"]["annotations"]
        rate = float(ann["poolq/replica-rate-jobs-per-second"])
        slo = float(ann["poolq/queue-wait-slo-seconds"])
        assert int(meta["listLength"]) == math.ceil(rate * slo), "listLength = ceil(replica rate x queue-wait SLO)"
        spec = o["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
        ref = auth[trigger["authenticationRef"]["name"]]
        for t in ref["spec"]["secretTargetRef"]:
            assert t["name"] == "poolq-redis" and t["key"] in secret["stringData"]
        assert {t["parameter"] for t in ref["spec"]["secretTargetRef"]} == {"address", "password"}


def test_secret_url_and_keda_address_name_one_server() -> None:
    data = named("Secret", "poolq-redis")["stringData"]
    url = urlparse(data["url"])
    assert f"{url.hostname}:{url.port or 6379}" == data["address"]
    assert (url.password or "") == data["password"]
    service = named("Service", "poolq-redis")
    assert url.hostname == service["metadata"]["name"]
    pods = named("StatefulSet", "poolq-redis")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pods.items()


def test_service_monitor_selects_every_worker_pod() -> None:
    svc = named("Service", "poolq-workers")
    mon = named("ServiceMonitor", "poolq-workers")
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert mon["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    for d in worker_deployments().values():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items(), d["metadata"]["name"]
