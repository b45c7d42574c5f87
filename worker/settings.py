"""Worker configuration: environment variables (``REDIS_URL``, ``WORKER_*``), CLI flags on top.

Invalid values are refused at start with one line naming the variable and what it accepts;
a worker that starts with a typo in its configuration is worse than one that does not start.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker import defaults
from worker.config_values import ascii_int, check_redis_url, finite_float
from worker.redact import redact_url, scrub

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
    model_config = SettingsConfigDict(
        env_prefix="WORKER_", extra="ignore", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    redis_url: str = Field(defaults.REDIS_URL, validation_alias=AliasChoices("REDIS_URL", "WORKER_REDIS_URL"))
    strategy: Literal["thread", "process", "inline", "hybrid", "auto"] = defaults.STRATEGY  # type: ignore[assignment]
    concurrency: str = defaults.CONCURRENCY
    queues: str = ",".join(defaults.QUEUES)
    name: str | None = None
    burst: bool = False
    serializer: Literal["json", "pickle"] = defaults.SERIALIZER  # type: ignore[assignment]
    allowed_functions: str = ",".join(defaults.ALLOWED_FUNCTIONS)
    webhook_hosts: str = ",".join(defaults.WEBHOOK_HOSTS)
    threads_per_cpu: int = Field(defaults.THREADS_PER_CPU, ge=1, le=1024)
    processes: int = Field(defaults.PROCESSES, ge=0, le=1024)
    threads_per_process: int = Field(defaults.THREADS_PER_PROCESS, ge=0, le=1024)
    job_timeout_seconds: int = Field(defaults.JOB_TIMEOUT_SECONDS, ge=1, le=MAX_JOB_TIMEOUT_SECONDS)
    result_ttl_seconds: int = Field(defaults.RESULT_TTL_SECONDS, ge=-1, le=MAX_RESULT_TTL_SECONDS)
    heartbeat_interval_seconds: float = Field(defaults.HEARTBEAT_INTERVAL_SECONDS, ge=0.1, le=300)
    # After heartbeat_interval_seconds: its validator compares the two.
    worker_ttl_seconds: int = Field(defaults.WORKER_TTL_SECONDS, ge=3, le=3600)
    maintenance_interval_seconds: float = Field(defaults.MAINTENANCE_INTERVAL_SECONDS, ge=1, le=DAY_SECONDS)
    shutdown_timeout: float = Field(
        defaults.SHUTDOWN_TIMEOUT_SECONDS,
        ge=0,
        le=MAX_WAIT_SECONDS,
        validation_alias=AliasChoices("WORKER_SHUTDOWN_TIMEOUT", "WORKER_SHUTDOWN_TIMEOUT_SECONDS"),
    )
    redis_wait: float = Field(
        defaults.REDIS_WAIT_SECONDS,
        ge=0,
        le=MAX_WAIT_SECONDS,
        validation_alias=AliasChoices("WORKER_REDIS_WAIT", "WORKER_REDIS_WAIT_SECONDS"),
    )
    max_jobs_per_child: int = Field(defaults.MAX_JOBS_PER_CHILD, ge=0, le=MAX_JOBS_PER_CHILD)
    max_child_memory_mb: float = Field(defaults.MAX_CHILD_MEMORY_MB, ge=0, le=MAX_CHILD_MEMORY_MB)
    max_redeliveries: int = Field(defaults.MAX_REDELIVERIES, ge=0, le=MAX_REDELIVERIES)
    max_job_bytes: int = Field(defaults.MAX_JOB_BYTES, ge=1024, le=1024**3)
    recovery_interval_seconds: float = Field(defaults.RECOVERY_INTERVAL_SECONDS, ge=0.1, le=MAX_INTERVAL_SECONDS)
    metrics_port: int = Field(defaults.METRICS_PORT, ge=0, le=65535)
    metrics_address: str = defaults.METRICS_ADDRESS
    metrics_sample_interval_seconds: float = Field(
        defaults.METRICS_SAMPLE_INTERVAL_SECONDS, ge=0.05, le=MAX_INTERVAL_SECONDS
    )
    max_function_labels: int = Field(defaults.MAX_FUNCTION_LABELS, ge=1, le=100_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = defaults.LOG_LEVEL  # type: ignore[assignment]

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


ENV_NAMES = {
    "redis_url": "REDIS_URL",
    "shutdown_timeout": "WORKER_SHUTDOWN_TIMEOUT",
    "redis_wait": "WORKER_REDIS_WAIT",
}


def env_name(field: str) -> str:
    return ENV_NAMES.get(field, "WORKER_" + field.upper())


# How much of an invalid value the error line repeats.
SHOWN_VALUE_CHARS = 80


def shown_value(field: str, value: Any) -> str:
    """The value as the error line shows it: a Redis URL redacted, anything else repr'd and cut short."""
    if field in ("redis_url", "REDIS_URL", "WORKER_REDIS_URL"):
        return repr(redact_url(value) if isinstance(value, str) else "<not a string>")
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def describe_error(exc: ValidationError, secret_urls: tuple[str, ...] = ()) -> str:
    """One line for the first invalid value: which variable or flag, what it got, what it wants.

    ``secret_urls``: URLs whose secrets must not appear in the line whatever the field (the
    Redis URL that was given, so a message can never repeat its password).
    """
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else "?"
    name = field if field in ENV_NAMES.values() or field.startswith("WORKER_") else env_name(field)
    flag = "--" + field.replace("_", "-") if not field.isupper() else ""
    value = shown_value(field, err.get("input"))
    where = f"{name} / {flag}" if flag else name
    msg = str(err["msg"]).removeprefix("Value error, ")
    line = f"invalid configuration: {where}={value}: {msg}"
    return " ".join(scrub(line, secret_urls).split())
