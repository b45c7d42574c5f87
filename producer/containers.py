"""``python -m producer experiment --docker``: every cell in a worker container under real limits.

Why: capacity planning is about containers — how many CPUs and how much memory to give a
worker container of each strategy, and how many replicas. A worker started on the host sees
the host's CPUs; a container limited to 1 CPU sees a cgroup quota, sizes its pool from it
(``worker/cpus.py``) and is throttled by it. Only a measurement under that quota says what
one container of that size does.

What the producer starts, through the Docker SDK for Python (never the CLI), every object
labelled ``poolq.experiment=<run id>`` so that cleanup — and anyone else — can find it:

- a bridge network ``poolq-exp-<run id>``;
- a Redis container on it (``--redis-image``, no persistence, its port published on
  127.0.0.1 only, for the producer), unless ``--redis-url`` and ``--network`` name an existing
  Redis, e.g. the compose stack's: the workers then join that network and the producer reaches
  Redis at the container's address on it (Linux hosts reach bridge networks directly);
- per cell, one worker container from ``--image`` with ``nano_cpus`` = the CPU limit,
  ``mem_limit`` = ``memswap_limit`` = ``--memory`` (no swap: the limit is real) and its
  ``/metrics`` port published on 127.0.0.1. The producer waits for the image's HEALTHCHECK
  (``python -m worker --check --require-worker``) to report healthy, runs the cell, and stops
  the container with SIGTERM (the worker drains) before the next cell starts.

Every cell records, beside RQ's job timestamps: the container's own stats from the Docker API
(:mod:`producer.container_stats`) and the worker's own metrics scraped from ``/metrics``
(tree PSS, ``poolq_available_cpus``, ``poolq_pool_size``); the cell itself is
:mod:`producer.backends.docker`. The flags' syntax is checked in :mod:`producer.options`.

Cleanup: whatever happens (an error, Ctrl-C, SIGTERM), :meth:`DockerLab.close` removes every
container and network it created, then sweeps by label for anything a failed call may have
left. A second Ctrl-C during cleanup is ignored so that cleanup finishes.

The producer runs this from the host, never from inside the compose stack: a container given
the Docker socket can start a privileged container that mounts the host's root file system —
the socket is root on the host — so the stack does not mount it.
"""

from __future__ import annotations

import contextlib
import signal
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.errors import BadInput
from producer.options import MIB, DockerOptions, mib
from producer.processes import reachable
from worker.redact import redact_url

LABEL = "poolq.experiment"
BUILD_HINT = "build it from the repository with `docker build -t {image} .` (or `docker compose build`)"


# ---------------------------------------------------------------------------------------------
# the engine


def connect_engine() -> Any:
    """A Docker client that answered a ping, else one line saying why (BadInput)."""
    try:
        import docker
        import docker.errors
    except ImportError:
        raise BadInput("--docker needs the Docker SDK for Python: pip install 'poolq[docker]'") from None
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as e:
        reason = str(e).split("\n")[0][:200]
        raise BadInput(
            f"no Docker engine reachable ({reason}): start one (e.g. `sudo systemctl start docker`), or point "
            "DOCKER_HOST at one"
        ) from None
    return client


def preflight(opts: DockerOptions) -> dict[str, Any]:
    """Engine reachable, images present, limits applicable; returns the engine's facts.

    Everything a cell would fail on later is refused here, before anything is started.
    """
    import docker.errors

    client = connect_engine()
    try:
        info = client.info()
        for image, hint in ((opts.image, BUILD_HINT.format(image=opts.image)),
                            (opts.redis_image, f"pull it with `docker pull {opts.redis_image}`")):  # fmt: skip
            if opts.network and image == opts.redis_image:
                continue  # an existing Redis: no Redis image needed
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                raise BadInput(f"image {image} not found in the Docker engine: {hint}") from None
        ncpu = int(info.get("NCPU") or 0)
        too_many = [c for c in opts.cpus if ncpu and c > ncpu]
        if too_many:
            raise BadInput(f"--cpus {too_many[0]:g}: the Docker engine has only {ncpu} CPU(s); a container cannot be "
                           "limited to more than the host has")  # fmt: skip
        if info.get("CpuCfsQuota") is False:
            raise BadInput("the Docker engine cannot apply CPU limits (no CFS quota support in its cgroups)")
        if info.get("MemoryLimit") is False:
            raise BadInput("the Docker engine cannot apply memory limits (no memory cgroup)")
        total = int(info.get("MemTotal") or 0)
        if total and opts.memory > total:
            raise BadInput(f"--memory {mib(opts.memory)} is more than the Docker engine's {mib(total)}")
        if opts.network:
            try:
                client.networks.get(opts.network)
            except docker.errors.NotFound:
                raise BadInput(f"--network {opts.network}: no such Docker network (docker network ls)") from None
        return engine_facts(client, info)
    finally:
        client.close()


def engine_facts(client: Any, info: dict[str, Any] | None = None) -> dict[str, Any]:
    info = info if info is not None else client.info()
    return {
        "engine": str(info.get("ServerVersion", "?")),
        "engine_cpus": int(info.get("NCPU") or 0),
        "engine_memory_mib": int(info.get("MemTotal") or 0) / MIB,
        "cgroup_version": str(info.get("CgroupVersion", "?")),
        "api_version": str(client.api.api_version),
    }


# ---------------------------------------------------------------------------------------------
# the lab: what the producer starts, and its cleanup


def _published(container: Any, port: str) -> int:
    container.reload()
    bindings = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for b in bindings.get(port) or []:
        if b.get("HostIp") in ("127.0.0.1", "") and b.get("HostPort"):
            return int(b["HostPort"])
    raise RuntimeError(f"container {container.name}: port {port} is not published on 127.0.0.1")


@dataclass
class WorkerContainer:
    container: Any
    name: str  # container name = RQ worker name
    cpus: float
    metrics_url: str
    log_path: Path
    started: float = field(default_factory=time.monotonic)


class DockerLab:
    """Creates and always removes the experiment's containers and network (label ``poolq.experiment``)."""

    def __init__(self, opts: DockerOptions, run_id: str, log_dir: Path) -> None:
        self.opts = opts
        self.run_id = run_id
        self.log_dir = log_dir
        self.labels = {LABEL: run_id}
        self.client = connect_engine()
        self.facts = engine_facts(self.client)
        self.containers: list[Any] = []
        self.networks: list[Any] = []
        self.network_name = opts.network or f"poolq-exp-{run_id}"
        self.redis_container_url = opts.redis_url or ""
        self.redis_container: Any = None

    # -- setup ----------------------------------------------------------------------------------

    def start(self) -> str:
        """The network and Redis; returns the Redis URL the producer uses (from the host)."""
        if self.opts.network is None:
            self.networks.append(self.client.networks.create(self.network_name, driver="bridge", labels=self.labels))
            return self._start_redis()
        return self._existing_redis_url()

    def _start_redis(self) -> str:
        name = f"poolq-exp-{self.run_id}-redis"
        c = self.client.containers.create(
            self.opts.redis_image,
            ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"],
            name=name,
            labels=self.labels,
            network=self.network_name,
            ports={"6379/tcp": ("127.0.0.1", None)},
            tmpfs={"/data": ""},  # no anonymous volume for the image's VOLUME /data
            detach=True,
        )
        self.containers.append(c)
        c.start()
        self.redis_container = c
        self.redis_container_url = f"redis://{name}:6379/0"
        url = f"redis://127.0.0.1:{_published(c, '6379/tcp')}/0"
        deadline = time.monotonic() + 60
        while not reachable(url, 1.0):
            c.reload()
            if c.status != "running" or time.monotonic() > deadline:
                logs = c.logs().decode("utf-8", "replace")[-500:]
                raise RuntimeError(f"the Redis container {name} did not answer ({c.status}): {logs}")
            time.sleep(0.2)
        return url

    def _existing_redis_url(self) -> str:
        """``--redis-url`` names a host on ``--network`` (a compose service): the producer on the host
        reaches that container by its address on the network (a bridge network is routed from a Linux
        host); any other host name is used as it is."""
        url = self.redis_container_url
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        net = self.client.networks.get(self.network_name)
        address = None
        for c in net.containers:
            nets = (c.attrs.get("NetworkSettings") or {}).get("Networks") or {}
            entry = nets.get(self.network_name) or {}
            names = {c.name, *(entry.get("Aliases") or []), *(entry.get("DNSNames") or [])}
            if host in names and entry.get("IPAddress"):
                address = entry["IPAddress"]
                break
        host_url = url
        if address:
            netloc = parts.netloc.rsplit("@", 1)
            hostport = netloc[-1].replace(host, address, 1)
            host_url = urllib.parse.urlunsplit(parts._replace(netloc="@".join([*netloc[:-1], hostport])))
        if not reachable(host_url, 3.0):
            raise BadInput(
                f"--redis-url {redact_url(url)}: not reachable from the host (tried {redact_url(host_url)}); the "
                "producer runs on the host and must reach the Redis the workers use"
            )
        return host_url

    def start_worker(self, strategy: str, concurrency: str, queue: str, name: str, cpus: float) -> WorkerContainer:
        env = {
            "REDIS_URL": self.redis_container_url,
            "WORKER_METRICS_PORT": "8000",
            "WORKER_METRICS_ADDRESS": "0.0.0.0",
            "WORKER_SHUTDOWN_TIMEOUT": "30",
        }
        c = self.client.containers.create(
            self.opts.image,
            ["python", "-m", "worker", "--strategy", strategy, "--concurrency", concurrency,
             "--queues", queue, "--name", name, "--log-level", "WARNING"],
            name=name,
            labels={**self.labels, "poolq.experiment.cpus": f"{cpus:g}"},
            network=self.network_name,
            environment=env,
            nano_cpus=round(cpus * 1e9),
            mem_limit=self.opts.memory,
            memswap_limit=self.opts.memory,
            ports={"8000/tcp": ("127.0.0.1", None)},
            stop_signal="SIGTERM",
            detach=True,
        )  # fmt: skip
        self.containers.append(c)
        c.start()
        port = _published(c, "8000/tcp")
        return WorkerContainer(c, name, cpus, f"http://127.0.0.1:{port}/metrics", self.log_dir / f"{name}.log")

    def wait_healthy(self, w: WorkerContainer) -> float:
        """Seconds until Docker reports the image's HEALTHCHECK healthy; RuntimeError if it exits or fails."""
        deadline = time.monotonic() + self.opts.health_timeout
        while True:
            w.container.reload()
            state = w.container.attrs.get("State") or {}
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy":
                return time.monotonic() - w.started
            if state.get("Status") in ("exited", "dead") or health == "unhealthy":
                why = "OOM-killed" if state.get("OOMKilled") else f"{state.get('Status')}, health {health}"
                raise RuntimeError(f"worker container {w.name} {why}: {self.logs(w)[-1500:]}")
            if health is None:
                raise RuntimeError(f"image {self.opts.image} has no HEALTHCHECK: is it the poolq image?")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"worker container {w.name} not healthy after {self.opts.health_timeout:g} s "
                    f"(health {health}): {self.logs(w)[-1500:]}"
                )
            time.sleep(0.5)

    def logs(self, w: WorkerContainer) -> str:
        with contextlib.suppress(Exception):
            return str(w.container.logs(stdout=True, stderr=True).decode("utf-8", "replace"))
        return ""

    def stop_worker(self, w: WorkerContainer) -> tuple[int | None, bool]:
        """SIGTERM (the worker drains), logs saved, container removed; its exit code and OOM flag."""
        try:
            w.container.stop(timeout=self.opts.stop_timeout)
            w.container.reload()
            state = w.container.attrs.get("State") or {}
            w.log_path.write_text(self.logs(w))
        finally:
            self._remove(w.container)
        code = state.get("ExitCode")
        return (int(code) if code is not None else None), bool(state.get("OOMKilled"))

    def kill_worker(self, w: WorkerContainer) -> None:
        """After an error or Ctrl-C: logs saved (they say what went wrong), container removed at once."""
        with contextlib.suppress(Exception):
            w.log_path.write_text(self.logs(w))
        self._remove(w.container)

    # -- cleanup ----------------------------------------------------------------------------------

    def _remove(self, container: Any) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.NotFound):
            container.remove(v=True, force=True)
        with contextlib.suppress(ValueError):
            self.containers.remove(container)

    def close(self) -> list[str]:
        """Removes everything this run created (and anything labelled with its run id); returns
        what could not be removed. SIGINT is ignored meanwhile, so a second Ctrl-C cannot leave
        half of it behind."""
        import docker
        import docker.errors

        previous = None
        with contextlib.suppress(ValueError):  # not the main thread
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        failures: list[str] = []
        try:
            try:
                self.client.ping()
                client = self.client
            except Exception:
                client = docker.from_env(timeout=120)  # the old one died mid-request
            label = f"{LABEL}={self.run_id}"
            # SIGKILL: an interrupted run does not wait for the workers to drain.
            targets = {c.id: c for c in self.containers}
            with contextlib.suppress(docker.errors.DockerException):
                for c in client.containers.list(all=True, filters={"label": label}):
                    targets[c.id] = c
            for cid in targets:
                try:
                    client.containers.get(cid).remove(v=True, force=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.DockerException as e:
                    failures.append(f"container {cid[:12]}: {e}")
            self.containers.clear()
            nets = {n.id: n for n in self.networks}
            with contextlib.suppress(docker.errors.DockerException):
                for n in client.networks.list(filters={"label": label}):
                    nets[n.id] = n
            for nid in nets:
                try:
                    client.networks.get(nid).remove()
                except docker.errors.NotFound:
                    pass
                except docker.errors.DockerException as e:
                    failures.append(f"network {nid[:12]}: {e}")
            self.networks.clear()
            with contextlib.suppress(docker.errors.DockerException):
                for v in client.volumes.list(filters={"label": label}):
                    v.remove(force=True)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return failures


def leftovers(client: Any, run_id: str | None = None) -> dict[str, list[str]]:
    """Containers, networks and volumes labelled by an experiment (``run_id``: by that one)."""
    label = f"{LABEL}={run_id}" if run_id else LABEL
    f = {"label": label}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=f)],
        "networks": [n.name for n in client.networks.list(filters=f)],
        "volumes": [v.name for v in client.volumes.list(filters=f)],
    }
