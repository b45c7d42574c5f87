"""What a configuration value may look like, checked the same way for env values and CLI flags.

Python's ``int()`` and ``float()`` (argparse's ``type=int``/``type=float``, ``str.isdigit``)
accept more than anyone means: other scripts' digits (Arabic-Indic "12" is 12), ``inf`` and ``nan``
(``inf`` seconds overflowed a sleep and killed the metrics sampler), ``1_000``. A Redis URL
passed the old ``startswith`` check and then failed deep inside redis-py with a traceback
(``redis://h:notaport/0``), or was silently read as something else (``/x`` as database 0,
port ``0`` as 6379). These functions turn all of that into one ``ValueError`` whose message
says what is accepted; the worker's and the producer's settings and their CLIs use them.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from typing import Any

_INT = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# SELECT takes a signed 32-bit index; Redis itself has 16 databases unless configured otherwise.
MAX_REDIS_DB = 2**31 - 1


def ascii_int(value: Any) -> Any:
    """A string must be a whole number in ASCII digits (an optional sign, up to 18 digits).

    Anything else (an int from code, a bool) is left for the field's own type check.
    """
    if isinstance(value, str):
        text = value.strip()
        if not _INT.fullmatch(text):
            raise ValueError("must be a whole number written in ASCII digits (0-9)")
        return int(text)
    return value


def finite_float(value: Any) -> Any:
    """A string must be a finite decimal number in ASCII (``1``, ``0.5``, ``2e-3``; no ``inf``/``nan``)."""
    if isinstance(value, str):
        text = value.strip()
        if not _FLOAT.fullmatch(text):
            raise ValueError("must be a finite number written in ASCII digits (e.g. 2 or 0.5; no inf or nan)")
        value = float(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number (no inf or nan)")
    return value


def arg_int(text: str) -> int:
    """argparse ``type=`` for whole-number flags: :func:`ascii_int` (argparse turns the error into one line)."""
    value: int = ascii_int(text)
    return value


def arg_float(text: str) -> float:
    """argparse ``type=`` for number flags: :func:`finite_float`."""
    return float(finite_float(text))


arg_int.__name__ = "whole number"  # argparse names the type in its error: "invalid whole number value: 'x'"
arg_float.__name__ = "finite number"


def _ascii_digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def check_redis_url(url: str) -> str:
    """``url`` if redis-py will connect to exactly what it says, else ``ValueError`` saying what is wrong.

    redis://[[user]:password@]host[:port][/db][?option=value...], rediss:// the same over TLS,
    unix://[[user]:password@]/path/to/socket[?db=N]. The port is 1-65535, the database a whole
    number in ASCII digits, every query option one that redis-py knows with a value it accepts.
    The messages never repeat the URL (the caller shows it redacted).
    """
    import redis

    if not isinstance(url, str) or not url.startswith(REDIS_SCHEMES):
        raise ValueError("must start with redis://, rediss:// or unix://")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as e:
        raise ValueError(f"is not a valid URL ({e})") from None
    if "@" in parts.path + parts.query + parts.fragment:  # redis-py would take part of the password for the path
        raise ValueError("has an '@' after the host: percent-encode / ? # in a password (%2F %3F %23)")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    if parts.scheme == "unix":
        if not parts.path or parts.path == "/":
            raise ValueError("unix:// needs the socket's path, e.g. unix:///run/redis/redis.sock")
    else:
        if not parts.hostname:
            raise ValueError(f"must name a host: {parts.scheme}://[:password@]HOST[:PORT][/DB]")
        port_text = parts.netloc.rpartition("@")[2]
        port_text = port_text.rpartition("]")[2] if port_text.startswith("[") else port_text
        _, colon, port = port_text.partition(":")
        if colon and not (_ascii_digits(port) and 1 <= int(port) <= 65535):
            raise ValueError("the port must be a whole number from 1 to 65535")
        db_path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if db_path and not (_ascii_digits(db_path) and int(db_path) <= MAX_REDIS_DB):
            raise ValueError("the database (the path after the host) must be a whole number, e.g. /0")
    for db in query.get("db", []):
        if not (_ascii_digits(db) and int(db) <= MAX_REDIS_DB):
            raise ValueError("the db= option must be a whole number")
    try:
        pool = redis.ConnectionPool.from_url(url)  # redis-py's own parse_url
        pool.connection_class(**pool.connection_kwargs)  # unknown options fail here, not at the first command
    except TypeError as e:
        unknown = re.search(r"keyword argument '([^']+)'", str(e))
        name = f" {unknown.group(1)!r}" if unknown else ""
        raise ValueError(f"has an option{name} that redis-py does not know") from None
    except ValueError as e:
        raise ValueError(str(e).rstrip(".")) from None
    return url
