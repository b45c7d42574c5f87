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
(memory usage and limit, peak working set, CPU seconds, CPU throttling) and the worker's own
metrics scraped from ``/metrics`` (tree PSS, ``poolq_available_cpus``, ``poolq_pool_size``).

Cleanup: whatever happens (an error, Ctrl-C, SIGTERM), :meth:`DockerLab.close` removes every
container and network it created, then sweeps by label for anything a failed call may have
left. A second Ctrl-C during cleanup is ignored so that cleanup finishes.

The producer runs this from the host, never from inside the compose stack: a container given
the Docker socket can start a privileged container that mounts the host's root file system —
the socket is root on the host — so the stack does not mount it.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producer.errors import BadInput

LABEL = "poolq.experiment"
DEFAULT_IMAGE = "poolq:local"  # what `docker compose build` tags (compose.yaml)
DEFAULT_REDIS_IMAGE = "redis:7.2.5"  # the compose stack's Redis
DEFAULT_MEMORY = "1g"
MIB = 1024 * 1024
# Below this a worker with its pool is killed by the OOM killer while it starts (an idle
# process worker with two children is ~80 MiB PSS), so the cell would measure nothing.
MIN_MEMORY = 128 * MIB
# A worker needs about a second of CPU to start (interpreter, rq, prometheus-client, the
# pool); at 0.01 CPU (Docker's floor) that is minutes before the first job.
MIN_CPUS = 0.1
BUILD_HINT = "build it from the repository with `docker build -t {image} .` (or `docker compose build`)"


# ---------------------------------------------------------------------------------------------
# options


def parse_cpus(value: str) -> list[float]:
    """``--cpus 1,2,0.5`` -> [1.0, 2.0, 0.5]: CPU limits, one cell dimension."""
    out: list[float] = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        try:
            cpus = float(item)
        except ValueError:
            raise BadInput(f"--cpus {item!r}: expected a number of CPUs, e.g. --cpus 1,2 or 0.5") from None
        if not math.isfinite(cpus) or cpus < MIN_CPUS:
            raise BadInput(f"--cpus {item!r}: a CPU limit must be at least {MIN_CPUS:g} (a worker needs ~1 s of CPU "
                           "to start)")  # fmt: skip
        if round(cpus, 2) != cpus:
            raise BadInput(f"--cpus {item!r}: at most two decimals (Docker's --cpus granularity is 0.01)")
        if cpus in out:
            raise BadInput(f"--cpus names {item} twice")
        out.append(cpus)
    if not out:
        raise BadInput("--cpus needs at least one CPU limit, e.g. --cpus 1,2")
    return out


_UNITS = {"": 1, "b": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}


def parse_memory(value: str) -> int:
    """``512m`` / ``1g`` / ``1.5g`` / ``268435456`` -> bytes (Docker's units: binary, b/k/m/g)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmg]?)(?:i?b)?\s*", value.lower())
    if not m:
        raise BadInput(f"--memory {value!r}: expected a size such as 512m or 1g (units b, k, m, g)")
    size = int(float(m.group(1)) * _UNITS[m.group(2)])
    if size < MIN_MEMORY:
        raise BadInput(
            f"--memory {value!r} is below the floor of {MIN_MEMORY // MIB} MiB: a worker and its pool would be "
            "OOM-killed while starting"
        )
    return size


def mib(n: float) -> str:
    return f"{n / MIB:,.0f} MiB" if n < 1024 * MIB else f"{n / 1024 / MIB:g} GiB"


@dataclass
class DockerOptions:
    cpus: list[float]
    memory: int
    image: str = DEFAULT_IMAGE
    redis_image: str = DEFAULT_REDIS_IMAGE
    network: str | None = None  # an existing network (with --redis-url): the compose stack's
    redis_url: str | None = None  # Redis as the workers see it on ``network``
    health_timeout: float = 180.0
    stop_timeout: int = 40  # > the worker's WORKER_SHUTDOWN_TIMEOUT (30 s): it drains and exits 0


def docker_options(
    cpus: str | None,
    memory: str | None,
    image: str | None,
    redis_image: str | None,
    network: str | None,
    redis_url: str | None,
    health_timeout: float,
) -> DockerOptions:
    """Checks the flags' syntax (no engine needed): everything that is wrong in the command line."""
    if network and not redis_url:
        raise BadInput("--network needs --redis-url: the Redis on that network, as its containers reach it "
                       "(e.g. --network poolq_default --redis-url redis://redis:6379/0)")  # fmt: skip
    if redis_url and not network:
        raise BadInput("--docker with --redis-url needs --network (the Docker network on which that Redis runs); "
                       "without both the producer starts its own Redis container")  # fmt: skip
    if health_timeout <= 0:
        raise BadInput(f"--health-timeout must be positive, got {health_timeout:g}")
    return DockerOptions(
        cpus=parse_cpus(cpus or "1"),
        memory=parse_memory(memory or DEFAULT_MEMORY),
        image=image or DEFAULT_IMAGE,
        redis_image=redis_image or DEFAULT_REDIS_IMAGE,
        network=network,
        redis_url=redis_url,
        health_timeout=health_timeout,
    )


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
# container stats


@dataclass(frozen=True)
class StatsReading:
    t: float
    usage: float  # bytes charged to the container's memory cgroup (page cache included)
    working_set: float  # usage - inactive file cache: what `docker stats` shows, what the OOM killer weighs
    limit: float
    max_usage: float | None  # cgroup v1 only: the peak since the container started
    cpu_ns: float  # CPU time of every process in the container (health checks included)
    throttled_ns: float
    throttled_periods: float
    pids: float | None


def parse_stats(s: dict[str, Any]) -> StatsReading | None:
    """One reading from the Docker API's stats (cgroup v1 or v2); None for an empty one."""
    mem = s.get("memory_stats") or {}
    cpu = s.get("cpu_stats") or {}
    if "usage" not in mem or not cpu.get("cpu_usage"):
        return None
    usage = float(mem["usage"])
    st = mem.get("stats") or {}
    inactive = st.get("total_inactive_file", st.get("inactive_file", 0))
    thr = cpu.get("throttling_data") or {}
    pids = (s.get("pids_stats") or {}).get("current")
    return StatsReading(
        t=time.time(),
        usage=usage,
        working_set=max(0.0, usage - float(inactive)),
        limit=float(mem.get("limit") or 0),
        max_usage=float(mem["max_usage"]) if mem.get("max_usage") else None,
        cpu_ns=float(cpu["cpu_usage"].get("total_usage") or 0),
        throttled_ns=float(thr.get("throttled_time") or 0),
        throttled_periods=float(thr.get("throttled_periods") or 0),
        pids=float(pids) if pids else None,
    )


class StatsSampler:
    """The container's stats stream (one reading a second from the engine) on a thread."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.readings: list[StatsReading] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_now(self) -> StatsReading | None:
        """A single reading, now (``one_shot``: no wait for a second sample)."""
        try:
            r = parse_stats(self.container.stats(stream=False, one_shot=True))
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")
            return None
        if r is not None:
            self.readings.append(r)
        return r

    def _loop(self) -> None:
        stream: Iterator[dict[str, Any]] | None = None
        try:
            stream = self.container.stats(stream=True, decode=True)
            for s in stream:
                r = parse_stats(s)
                if r is not None:
                    self.readings.append(r)
                if self._stop.is_set():
                    break
        except Exception as e:
            if not self._stop.is_set():
                self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()  # type: ignore[attr-defined]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="poolq-docker-stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


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
        from producer.local import reachable

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
        from producer.local import reachable

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
                f"--redis-url {url}: not reachable from the host (tried {host_url}); the producer runs on the host "
                "and must reach the Redis the workers use"
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

    def stop_worker(self, w: WorkerContainer) -> dict[str, Any]:
        """SIGTERM (the worker drains), logs saved, container removed; its exit code and OOM flag."""
        out: dict[str, Any] = {}
        try:
            w.container.stop(timeout=self.opts.stop_timeout)
            w.container.reload()
            state = w.container.attrs.get("State") or {}
            out = {"worker_exit": state.get("ExitCode"), "oom_killed": bool(state.get("OOMKilled"))}
            w.log_path.write_text(self.logs(w))
        finally:
            self._remove(w.container)
        return out

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


# ---------------------------------------------------------------------------------------------
# a cell


def run_docker_cell(
    ctx: Any, lab: DockerLab, strategy: str, conc: str, workload: str, cpus: float, repeat: int
) -> dict[str, Any]:
    """One cell in a fresh worker container limited to ``cpus`` CPUs and ``--memory``.

    Same steps as a ``--local`` cell (warm-up job per slot, one burst, wait until every job has
    ended, RQ's timestamps), with the container's stats beside the worker's own metrics.
    """
    from producer.enqueue import enqueue
    from producer.experiment import _finish_cell, wait_done, wait_quiet
    from producer.measure import HostCpu, MetricsProbe, other_load
    from producer.workloads import build_spec

    opts = ctx.opts
    count = opts.counts[workload]
    queue = ctx.queue_name(f"{strategy}{conc}", f"c{cpus:g}", workload, f"r{repeat}")
    name = queue.replace(".", "_")  # container and RQ worker name
    quiet = wait_quiet(ctx)
    cell: dict[str, Any] = {
        "mode": "docker",
        "other_cores_before": quiet,
        "strategy": strategy,
        "concurrency_arg": conc,
        "workload": workload,
        "repeat": repeat,
        "count": count,
        "spec": ctx.specs[workload].describe(),
        "queue": queue,
        "cpu_limit": cpus,
        "memory_limit_mib": lab.opts.memory / MIB,
        "image": lab.opts.image,
        "container": name,
    }
    ids: list[str] = []
    done = False
    problems: list[str] = []
    worker = lab.start_worker(strategy, conc, queue, name, cpus)
    stats = StatsSampler(worker.container)
    probe = MetricsProbe([worker.metrics_url])
    drain = False  # an error or Ctrl-C: remove the container at once (SIGKILL), no drain
    try:
        cell["healthy_after_s"] = lab.wait_healthy(worker)
        raw = ctx.conn.hgetall(f"rq:worker:{name}")
        info = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
        before = probe.sample_now()
        if before is None or before.pool_size is None:
            raise RuntimeError(f"no poolq metrics at {worker.metrics_url}: {probe.errors[-1:]}")
        capacity = int(before.pool_size or info.get("poolq_concurrency") or 1)
        cell["concurrency"] = capacity
        cell["pool_size"] = capacity
        cell["registered_concurrency"] = int(info["poolq_concurrency"]) if info.get("poolq_concurrency") else None
        cell["available_cpus"] = int(before.available_cpus) if before.available_cpus else None
        cell["key"] = f"{strategy}x{capacity}@{cpus:g}cpu/{workload}/r{repeat}"
        warm = enqueue(ctx.conn, queue, build_spec("noop"), capacity, result_ttl=60)
        if not wait_done(ctx.conn, warm.job_ids, 120):
            raise RuntimeError(f"warm-up jobs did not end: {lab.logs(worker)[-1500:]}")
        time.sleep(0.2)
        idle = stats.sample_now()
        idle_metrics = probe.sample_now()
        host0 = HostCpu.read(None)
        stats.start()
        probe.start()
        rep = enqueue(
            ctx.conn, queue, ctx.specs[workload], count, batch_size=opts.batch_size, result_ttl=opts.result_ttl,
            seed=repeat,
        )  # fmt: skip
        ids = rep.job_ids
        cell["enqueue_s"] = rep.elapsed
        done = wait_done(ctx.conn, ids, opts.cell_timeout)
        end = stats.sample_now()
        host1 = HostCpu.read(None)
        stats.stop()
        time.sleep(opts.metrics_settle)  # the worker samples its tree every few seconds
        after = probe.sample_now()
        probe.stop()
        if idle is None or end is None:
            problems.append(f"container stats: {stats.errors[:1] or 'no reading'}")
        else:
            load = [r for r in stats.readings if idle.t <= r.t <= end.t]
            cell["cpu_s"] = (end.cpu_ns - idle.cpu_ns) / 1e9  # the container's, health checks included
            cell.update(other_load(host0, host1, cell["cpu_s"]))
            cell.update(
                container_mem_idle_mib=idle.working_set / MIB,
                container_mem_peak_mib=max(r.working_set for r in load) / MIB,
                container_mem_usage_peak_mib=max(r.usage for r in load) / MIB,
                container_mem_max_usage_mib=end.max_usage / MIB if end.max_usage else None,
                container_mem_limit_mib=end.limit / MIB,
                container_throttled_s=(end.throttled_ns - idle.throttled_ns) / 1e9,
                container_throttled_periods=end.throttled_periods - idle.throttled_periods,
                container_pids_peak=max((r.pids or 0) for r in load) or None,
                container_stats_samples=len(load),
            )
        readings = [r for r in probe.readings if r.pss is not None]
        if idle_metrics is not None and idle_metrics.pss is not None:
            cell["idle_pss_mib"] = idle_metrics.pss / MIB
            cell["idle_rss_mib"] = (idle_metrics.rss or math.nan) / MIB
        if readings:
            cell["peak_pss_mib"] = max(r.pss or 0.0 for r in readings) / MIB
            cell["peak_rss_mib"] = max(r.rss or 0.0 for r in readings) / MIB
            cell["memory_samples"] = len(readings)
        if idle_metrics is not None and after is not None and idle_metrics.cpu is not None and after.cpu is not None:
            cell["worker_tree_cpu_s"] = after.cpu - idle_metrics.cpu
        if after is not None and after.available_cpus is not None:
            cell["available_cpus_after"] = int(after.available_cpus)
        if probe.errors:
            problems.append(f"metrics: {probe.errors[0]}")
        drain = True
    finally:
        stats.stop()
        probe.stop()
        if drain:
            cell.update(lab.stop_worker(worker))
        else:
            lab.kill_worker(worker)
    cell["log"] = str(worker.log_path)
    if cell.get("oom_killed"):
        problems.append(f"the container was OOM-killed at --memory {mib(lab.opts.memory)}")
    elif cell.get("worker_exit") not in (0, None):
        problems.append(f"worker exited {cell['worker_exit']}")
    cell["problems"] = problems
    cell = _finish_cell(ctx, cell, ids, done)
    thr = cell.get("throughput_jobs_s")
    cell["jobs_per_s_per_cpu"] = thr / cpus if isinstance(thr, float) and math.isfinite(thr) else None
    return cell
