"""Settings declared once: each field of a settings model says its flag, help and env name.

:func:`setting` declares a field (default, help, how the default reads, metavar, short flag,
the constructor parameter it feeds); :func:`add_flags` turns a model's fields into argparse
flags whose help ends with the default and the environment variable; :func:`env_name` is the
variable a field is read from; :func:`describe_error` the one line an invalid value gets.
Nothing here knows the worker: everything is read from the model.

Flags carry no ``type=``: their text reaches the model as the environment's would, and is
validated by the same validators with the same one-line error (argparse's ``int``/``float``
take ``inf``, ``nan`` and other scripts' digits). Defaults are not set on the parser
(``argument_default=SUPPRESS``), so a flag that is not given leaves the environment in charge.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from worker.redact import redact_url, scrub


def setting(
    default: Any,
    help: str,
    *,
    shown: str | None = None,
    meaning: str | None = None,
    metavar: str | None = None,
    short: str | None = None,
    choices: tuple[str, ...] | None = None,
    param: str | None = None,
    flag: bool = True,
    env: tuple[str, ...] = (),
    **constraints: Any,
) -> Any:
    """A settings field with what its flag and its documentation need.

    ``shown``: the default as written in ``--help`` and the README (else derived from the value);
    ``meaning``: what that default means ("never", "off"); ``param``: the constructor parameter
    the setting feeds when it is not the field's name; ``flag=False``: environment only;
    ``env``: the variables it is read from, first the documented one (else PREFIX + NAME).
    """
    extra = {"shown": shown, "meaning": meaning, "metavar": metavar, "short": short, "param": param, "flag": flag}
    extra_choices: dict[str, Any] = {"choices": list(choices)} if choices else {}
    alias = AliasChoices(*env) if env else None
    return Field(
        default, description=help, validation_alias=alias, json_schema_extra={**extra, **extra_choices}, **constraints
    )


@dataclass(frozen=True)
class SettingInfo:
    """One field of a settings model as a flag and a documented variable see it."""

    name: str
    env: str
    help: str
    shown: str
    meaning: str | None
    metavar: str | None
    short: str | None
    choices: tuple[str, ...] | None
    param: str
    flag: bool
    is_bool: bool

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default_text(self) -> str:
        return self.shown + (f", {self.meaning}" if self.meaning else "")


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) or "empty"
    return "empty" if value in ("", None) else str(value)


def env_name(model: type[BaseSettings], name: str) -> str:
    """The environment variable ``name`` is documented under (the first it is read from)."""
    alias = model.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return str(model.model_config.get("env_prefix", "")) + name.upper()


def describe(model: type[BaseSettings], name: str) -> SettingInfo:
    field: FieldInfo = model.model_fields[name]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    choices: Any = extra.get("choices")
    if not choices and typing.get_origin(field.annotation) is typing.Literal:
        choices = typing.get_args(field.annotation)
    return SettingInfo(
        name=name,
        env=env_name(model, name),
        help=field.description or "",
        shown=str(extra["shown"]) if extra.get("shown") is not None else _shown(field.default),
        meaning=str(extra["meaning"]) if extra.get("meaning") else None,
        metavar=str(extra["metavar"]) if extra.get("metavar") else None,
        short=str(extra["short"]) if extra.get("short") else None,
        choices=tuple(str(c) for c in choices) if isinstance(choices, list | tuple) and choices else None,
        param=str(extra.get("param") or name),
        flag=extra.get("flag", True) is not False,
        is_bool=field.annotation is bool,
    )


def settings_of(model: type[BaseSettings]) -> Iterator[SettingInfo]:
    """Every field of ``model``, in declaration order."""
    for name in model.model_fields:
        yield describe(model, name)


def add_flags(parser: argparse.ArgumentParser, model: type[BaseSettings]) -> None:
    """One flag per field of ``model`` (fields declared ``flag=False`` excepted)."""
    for s in settings_of(model):
        if not s.flag:
            continue
        names = [s.option, *([s.short] if s.short else [])]
        help_text = f"{s.help} (default: {s.default_text}) [env {s.env}]"
        if s.is_bool:
            parser.add_argument(*names, dest=s.name, action="store_true", help=help_text)
        else:
            parser.add_argument(*names, dest=s.name, metavar=s.metavar, choices=s.choices, help=help_text)


def env_only_epilog(model: type[BaseSettings]) -> str:
    """The settings without a flag, for the end of ``--help``."""
    rows = [f"  {s.env}  {s.help} (default: {s.default_text})" for s in settings_of(model) if not s.flag]
    return "settings without a flag (environment only):\n" + "\n".join(rows) + "\n" if rows else ""


# How much of an invalid value the error line repeats.
SHOWN_VALUE_CHARS = 80


def shown_value(field: str, value: Any) -> str:
    """The value as the error line shows it: a Redis URL redacted, anything else repr'd and cut short."""
    if field == "redis_url" or field.endswith("REDIS_URL"):
        return repr(redact_url(value) if isinstance(value, str) else "<not a string>")
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def describe_error(model: type[BaseSettings], exc: ValidationError, secret_urls: tuple[str, ...] = ()) -> str:
    """One line for the first invalid value: which variable or flag, what it got, what it wants.

    ``secret_urls``: URLs whose secrets must not appear in the line whatever the field (the
    Redis URL that was given, so a message can never repeat its password).
    """
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else "?"
    known = describe(model, field) if field in model.model_fields else None
    name = known.env if known else field  # a field's name, or the variable it came from
    where = f"{name} / {known.option}" if known and known.flag else name
    msg = str(err["msg"]).removeprefix("Value error, ")
    line = f"invalid configuration: {where}={shown_value(field, err.get('input'))}: {msg}"
    return " ".join(scrub(line, secret_urls).split())
