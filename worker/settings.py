"""Worker configuration: environment variables (``REDIS_URL``, ``WORKER_*``), CLI flags on top.

Invalid values are refused at start with one line naming the variable and what it accepts;
a worker that starts with a typo in its configuration is worse than one that does not start.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker import defaults
from worker.config_values import ascii_int, check_redis_url, finite_float
from worker.flags import setting, settings_of

# Upper bounds of the settings that had none (inf or a huge value started a worker that then
# broke: an overflowing sleep, a Redis EXPIRE out of range, a sampler thread that died).
DAY_SECONDS = 86_400
MAX_JOB_TIMEOUT_SECONDS = 30 * DAY_SECONDS
MAX_RESULT_TTL_SECONDS = 365 * DAY_SECONDS
MAX_INTERVAL_SECONDS = 3_600.0
MAX_WAIT_SECONDS = DAY_SECONDS
MAX_JOBS_PER_CHILD = 1_000_000_000
MAX_CHILD_MEMORY_MB = 1_048_576.0  # 1 TiB
MAX_REDELIVERIES = 1_000
MAX_SLOTS = 4096  # the most slots a worker may have: --concurrency's bound, and hybrid's P x T
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# A worker counts as dead once its heartbeat is older than its TTL. Missing one beat (a Redis
# hiccup, a pause) must not be enough: TTL >= 2 x interval + this margin.
TTL_MARGIN_SECONDS = 1.0


class WorkerSettings(BaseSettings):
    """Every setting of the worker, once: its flag, help and environment variable are generated
    from the field (worker/flags.py), and it reaches the worker's constructors by parameter name
    (:meth:`parameters`)."""

    model_config = SettingsConfigDict(
        env_prefix="WORKER_", extra="ignore", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    redis_url: str = setting(
        defaults.REDIS_URL, "Redis to use", metavar="URL", short="-u", env=("REDIS_URL", "WORKER_REDIS_URL")
    )
    strategy: str = setting(defaults.STRATEGY, "how jobs run; see strategies below", choices=defaults.STRATEGIES)
    concurrency: str = setting(defaults.CONCURRENCY, "jobs run at once: auto or a number", metavar="auto|N")
    queues: str = setting(
        ",".join(defaults.QUEUES), "queues to consume, comma-separated, in priority order", metavar="A,B", short="-q"
    )
    name: str | None = setting(None, "worker name in Redis", shown="<hostname>.<pid>", metavar="NAME", short="-n")
    burst: bool = setting(False, "exit 0 once the queues are empty and no job runs", short="-b")
    serializer: Literal["json", "pickle"] = setting(
        defaults.SERIALIZER, "job payload format (pickle can run code when a payload is read)"
    )
    allowed_functions: str = setting(
        ",".join(defaults.ALLOWED_FUNCTIONS),
        "functions (and callbacks) jobs may name, comma-separated globs; '*', '?' and '[...]' match within ONE "
        "dotted segment (myapp.tasks.* admits myapp.tasks.run, not myapp.tasks.os.system), and the function "
        "must be defined in the module its name gives",
        metavar="GLOBS",
    )
    webhook_hosts: str = setting(
        ",".join(defaults.WEBHOOK_HOSTS),
        "hosts (host: default port, or host:port) jobs' RQ webhooks may be sent to, comma-separated",
        meaning="no webhooks are sent",
        metavar="HOSTS",
    )
    threads_per_cpu: int = setting(
        defaults.THREADS_PER_CPU, "thread pool size per CPU with --concurrency auto", metavar="N", ge=1, le=1024
    )
    processes: int = setting(
        defaults.PROCESSES,
        "hybrid and auto: child processes",
        meaning="one per available CPU",
        metavar="N",
        ge=0,
        le=1024,
    )
    threads_per_process: int = setting(
        defaults.THREADS_PER_PROCESS,
        "hybrid: threads in each child process",
        meaning="WORKER_THREADS_PER_CPU",
        metavar="N",
        ge=0,
        le=1024,
    )
    job_timeout_seconds: int = setting(
        defaults.JOB_TIMEOUT_SECONDS,
        "timeout of jobs that carry none, seconds",
        metavar="S",
        param="default_job_timeout",
        ge=1,
        le=MAX_JOB_TIMEOUT_SECONDS,
    )
    result_ttl_seconds: int = setting(
        defaults.RESULT_TTL_SECONDS,
        "how long results are kept, seconds",
        metavar="S",
        param="default_result_ttl",
        ge=-1,
        le=MAX_RESULT_TTL_SECONDS,
    )
    heartbeat_interval_seconds: float = setting(
        defaults.HEARTBEAT_INTERVAL_SECONDS,
        "worker/execution heartbeat period, seconds",
        param="heartbeat_interval",
        flag=False,
        ge=0.1,
        le=300,
    )
    # After heartbeat_interval_seconds: its validator compares the two.
    worker_ttl_seconds: int = setting(
        defaults.WORKER_TTL_SECONDS,
        "a worker silent this long (seconds) is taken for dead",
        param="worker_ttl",
        flag=False,
        ge=3,
        le=3600,
    )
    maintenance_interval_seconds: float = setting(
        defaults.MAINTENANCE_INTERVAL_SECONDS,
        "RQ registry clean-up period, seconds",
        param="maintenance_interval",
        flag=False,
        ge=1,
        le=DAY_SECONDS,
    )
    shutdown_timeout: float = setting(
        defaults.SHUTDOWN_TIMEOUT_SECONDS,
        "on SIGTERM, seconds running jobs get before being re-queued",
        metavar="S",
        env=("WORKER_SHUTDOWN_TIMEOUT", "WORKER_SHUTDOWN_TIMEOUT_SECONDS"),
        ge=0,
        le=MAX_WAIT_SECONDS,
    )
    redis_wait: float = setting(
        defaults.REDIS_WAIT_SECONDS,
        "seconds to wait for Redis at start, then exit 1; 0 waits forever",
        metavar="S",
        env=("WORKER_REDIS_WAIT", "WORKER_REDIS_WAIT_SECONDS"),
        ge=0,
        le=MAX_WAIT_SECONDS,
    )
    max_jobs_per_child: int = setting(
        defaults.MAX_JOBS_PER_CHILD,
        "process and hybrid strategies, auto's process pool: replace a child after N jobs",
        meaning="never",
        metavar="N",
        ge=0,
        le=MAX_JOBS_PER_CHILD,
    )
    max_child_memory_mb: float = setting(
        defaults.MAX_CHILD_MEMORY_MB,
        "process and hybrid strategies, auto's process pool: replace a child whose RSS exceeds MB after its job",
        meaning="off",
        metavar="MB",
        ge=0,
        le=MAX_CHILD_MEMORY_MB,
    )
    max_redeliveries: int = setting(
        defaults.MAX_REDELIVERIES,
        "times a job of a dead worker is re-queued before it fails as abandoned",
        metavar="N",
        ge=0,
        le=MAX_REDELIVERIES,
    )
    max_job_bytes: int = setting(
        defaults.MAX_JOB_BYTES,
        "most bytes of a job hash and of its inflated payload; a larger job fails unread",
        meaning="4 MiB",
        metavar="N",
        ge=1024,
        le=1024**3,
    )
    recovery_interval_seconds: float = setting(
        defaults.RECOVERY_INTERVAL_SECONDS,
        "how often (seconds) workers look for dead workers' jobs",
        param="recovery_interval",
        flag=False,
        ge=0.1,
        le=MAX_INTERVAL_SECONDS,
    )
    metrics_port: int = setting(
        defaults.METRICS_PORT, "Prometheus /metrics port, 0 disables", metavar="PORT", ge=0, le=65535
    )
    metrics_address: str = setting(defaults.METRICS_ADDRESS, "address /metrics binds to", metavar="ADDR")
    metrics_sample_interval_seconds: float = setting(
        defaults.METRICS_SAMPLE_INTERVAL_SECONDS,
        "process-tree and queue sampling period, seconds",
        param="sample_interval",
        flag=False,
        ge=0.05,
        le=MAX_INTERVAL_SECONDS,
    )
    max_function_labels: int = setting(
        defaults.MAX_FUNCTION_LABELS,
        "distinct 'function' label values in the metrics; further functions count as 'other'",
        metavar="N",
        ge=1,
        le=100_000,
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting(defaults.LOG_LEVEL, "log level")

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_in_ascii(cls, v: Any, info: ValidationInfo) -> Any:
        """Every int and float field, from the environment or a flag: ASCII digits, finite."""
        field = cls.model_fields.get(info.field_name or "")
        kind = field.annotation if field is not None else None
        if kind is int:
            return ascii_int(v)
        if kind is float:
            return finite_float(v)
        return v

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        if v not in defaults.STRATEGIES:
            raise ValueError(f"must be one of {', '.join(defaults.STRATEGIES)}")
        return v

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, v: str) -> str:
        v = str(v).strip().lower()
        if v == "auto":
            return v
        if not (v.isascii() and v.isdigit()) or not 1 <= int(v) <= MAX_SLOTS:
            raise ValueError(f"must be 'auto' or a whole number from 1 to {MAX_SLOTS} in ASCII digits")
        return v

    @field_validator("worker_ttl_seconds")
    @classmethod
    def _ttl_above_heartbeats(cls, v: int, info: ValidationInfo) -> int:
        beat = info.data.get("heartbeat_interval_seconds")
        if beat is None:  # itself invalid: that error is reported
            return v
        need = 2 * beat + TTL_MARGIN_SECONDS
        if v < need:
            raise ValueError(
                f"must be at least 2 x WORKER_HEARTBEAT_INTERVAL_SECONDS + {TTL_MARGIN_SECONDS:g} = {need:g} s "
                f"(heartbeat every {beat:g} s): otherwise a live worker that misses one heartbeat is taken for dead "
                "and its running jobs are re-run by another worker"
            )
        return v

    @field_validator("threads_per_process")
    @classmethod
    def _hybrid_slots(cls, v: int, info: ValidationInfo) -> int:
        processes = info.data.get("processes") or 0
        if v and processes and processes * v > MAX_SLOTS:
            raise ValueError(
                f"WORKER_PROCESSES x WORKER_THREADS_PER_PROCESS = {processes * v} slots; at most {MAX_SLOTS}"
            )
        return v

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, v: str) -> str:
        """An IP address or a host name. Not empty, not ``0`` or ``127.1``: the socket library
        reads those as shorthand (empty and ``0`` bind every interface), never what was meant."""
        import ipaddress

        v = str(v).strip()
        try:
            ipaddress.ip_address(v)
            return v
        except ValueError:
            pass
        labels = v.split(".")
        host_name = all(_HOST_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()
        if len(v) > 253 or not host_name:
            raise ValueError("must be an IP address or a host name, e.g. 127.0.0.1 (0.0.0.0: every interface)")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        """Shown in logs, ``rq info`` and Redis keys: printable, no spaces, at most 200 characters."""
        if v is None or v == "":
            return None  # the default, <hostname>.<pid>
        if len(v) > 200 or not v.isprintable() or any(c.isspace() for c in v):
            raise ValueError("must be up to 200 printable characters without spaces (empty: <hostname>.<pid>)")
        return v

    @field_validator("queues", "allowed_functions")
    @classmethod
    def _non_empty_list(cls, v: str) -> str:
        items = [s.strip() for s in str(v).split(",") if s.strip()]
        if not items:
            raise ValueError("must name at least one entry (comma-separated)")
        return ",".join(items)

    @field_validator("allowed_functions")
    @classmethod
    def _patterns(cls, v: str) -> str:
        from worker.allowlist import split_pattern

        for pattern in v.split(","):
            split_pattern(pattern)  # ValueError: the one-line message names the pattern
        return v

    @field_validator("webhook_hosts")
    @classmethod
    def _webhook_hosts(cls, v: str) -> str:
        from worker.webhooks import parse_entry

        items = [s.strip() for s in str(v).split(",") if s.strip()]
        for item in items:
            parse_entry(item)
        return ",".join(items)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        return check_redis_url(v)

    @property
    def queue_names(self) -> list[str]:
        return self.queues.split(",")

    @property
    def allowed_patterns(self) -> list[str]:
        return self.allowed_functions.split(",")

    @property
    def webhook_host_list(self) -> list[str]:
        return self.webhook_hosts.split(",") if self.webhook_hosts else []

    def parameters(self) -> dict[str, Any]:
        """Every setting under the name of the constructor parameter it feeds, as that parameter takes it.

        ``PoolWorker``, ``StrategyConfig`` and ``Metrics`` take what their signatures name
        (worker/cli.py ``build``: arq's ``get_kwargs``); a field's ``param=`` gives the name when
        it differs. Values whose form differs from the setting's text are converted here, once:
        lists, 0 meaning "from the CPUs", the serializer's class, the default worker name.
        """
        import os
        import socket

        values = {s.param: getattr(self, s.name) for s in settings_of(type(self))}
        values.update(
            queues=self.queue_names,
            allowed_functions=tuple(self.allowed_patterns),
            webhook_hosts=self.webhook_host_list,
            concurrency=None if self.concurrency == "auto" else int(self.concurrency),
            processes=self.processes or None,
            threads_per_process=self.threads_per_process or None,
            serializer=_serializer(self.serializer),
            name=self.name or f"{socket.gethostname()}.{os.getpid()}",
        )
        return values


def _serializer(name: str) -> Any:
    """RQ's serializer for ``WORKER_SERIALIZER``: its JSON one, or None (RQ's default, pickle)."""
    from rq.serializers import JSONSerializer

    return JSONSerializer if name == "json" else None
