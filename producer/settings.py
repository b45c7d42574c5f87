"""Producer configuration: ``REDIS_URL`` and ``PRODUCER_*`` environment variables, flags on top.

| variable | default | meaning |
|---|---|---|
| ``REDIS_URL`` | ``redis://127.0.0.1:6379/0`` | Redis to enqueue into |
| ``PRODUCER_QUEUE`` | ``default`` | queue of ``enqueue`` |
| ``PRODUCER_BATCH_SIZE`` | ``500`` | jobs per pipeline round trip |
| ``PRODUCER_PROGRESS`` | ``auto`` | progress bar: ``auto`` (on a terminal), ``bar``, ``lines``, ``off`` |
| ``PRODUCER_RESULT_TTL_SECONDS`` | ``3600`` | how long finished jobs (and their timestamps) are kept |
| ``PRODUCER_WORKER_METRICS`` | (none) | experiments against running workers: ``strategy=URL[+URL],...`` |
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker import flags
from worker.config_values import ascii_int, check_redis_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ProducerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCER_", extra="ignore", frozen=True, allow_inf_nan=False)

    redis_url: str = Field(DEFAULT_REDIS_URL, validation_alias=AliasChoices("REDIS_URL", "PRODUCER_REDIS_URL"))
    queue: str = "default"
    batch_size: int = Field(500, ge=1, le=100_000)
    progress: Literal["auto", "bar", "lines", "off"] = "auto"
    result_ttl_seconds: int = Field(3600, ge=1, le=365 * 86_400, json_schema_extra={"flag": False})  # env only
    worker_metrics: str = ""

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_in_ascii(cls, v: Any, info: ValidationInfo) -> Any:
        """Whole numbers in ASCII digits only, as the worker's settings (worker/config_values.py)."""
        field = cls.model_fields.get(info.field_name or "")
        return ascii_int(v) if field is not None and field.annotation is int else v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        return check_redis_url(v)

    @field_validator("queue")
    @classmethod
    def _queue(cls, v: str) -> str:
        v = v.strip()
        if not v or any(c.isspace() for c in v):
            raise ValueError("must be a queue name without spaces")
        return v


# flag (argparse dest) -> settings field: a flag given on the command line wins over its variable
FLAGS = {"redis_url": "redis_url", "queue": "queue", "batch_size": "batch_size", "progress": "progress",
         "worker_metrics": "worker_metrics"}  # fmt: skip


def from_args(args: argparse.Namespace) -> ProducerSettings:
    """The settings of one command: the environment, then the flags that were given."""
    overrides: dict[str, Any] = {}
    for flag, name in FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[name] = value
    return ProducerSettings(**overrides)


def describe_error(exc: ValidationError) -> str:
    """One line for the first invalid value, as the worker's (worker/flags.py): variable, flag, value, rule."""
    import os

    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else "?"
    value = err.get("input") if field in ("redis_url", "REDIS_URL", "PRODUCER_REDIS_URL") else None
    secrets = (value, os.environ.get("REDIS_URL"), os.environ.get("PRODUCER_REDIS_URL"))
    return flags.describe_error(ProducerSettings, exc, tuple(u for u in secrets if isinstance(u, str) and u))
