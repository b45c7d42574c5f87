"""Secrets out of everything poolq prints or exports: the Redis URL's password first of all.

Logs, ``--check`` output (kept by ``docker inspect`` and in Kubernetes pod events), error
messages and experiment results all mention the Redis URL; none may carry its password.
:func:`redact_url` is the one way a URL is shown; :func:`scrub` removes a URL's secrets from
any other text (an exception message, a formatted log record); :class:`RedactingFormatter`
applies :func:`scrub` to every log line, tracebacks included.

The password is found the way a careless URL is really written: a password with an
unencoded ``@``, ``/``, ``?`` or ``#`` still counts as part of the password (the user info
ends at the *last* ``@`` before the host), so it is hidden rather than taken for the host or
the path. A user info without a ``:`` (``redis://secret@host``) is hidden too: redis-py reads
it as a user name, but it is much more often a password written without its colon.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterable
from types import TracebackType

MASK = "***"
UNPARSEABLE = "<unparseable URL>"

# scheme://[userinfo@]host[:port][/path][?query][#fragment], with the user info greedy (up to the
# last "@" that is followed by a plausible host) and the host[:port] without "@" (IPv6 in [...]).
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?:(?P<userinfo>.*)@)?"
    r"(?P<host>(?:\[[^\]]*\])?[^@/?#\[\]]*)"
    r"(?P<rest>[/?#].*)?",
    re.S,
)
# Query parameters whose value is a secret (redis-py passes ``?password=`` to AUTH).
_SECRET_PARAM = re.compile(r"pass|secret|token|auth|credential", re.I)


def _split(url: str) -> re.Match[str] | None:
    return _URL.fullmatch(url) if isinstance(url, str) else None


def _redact_query(rest: str) -> str:
    path, qmark, query = rest.partition("?")
    if not qmark:
        return rest
    query, hash_, fragment = query.partition("#")
    params = []
    for param in query.split("&"):
        key, eq, _value = param.partition("=")
        params.append(f"{key}={MASK}" if eq and _SECRET_PARAM.search(urllib.parse.unquote(key)) else param)
    return f"{path}?{'&'.join(params)}{hash_}{fragment}"


def redact_url(url: str) -> str:
    """``url`` with its password (user info, ``password=`` parameters) replaced by ``***``.

    ``redis://:s3cret@h:6379/0`` -> ``redis://:***@h:6379/0``, ``redis://u:p@h`` -> ``redis://u:***@h``,
    ``redis://h/0?password=p`` -> ``redis://h/0?password=***``. Anything that is not
    ``scheme://...`` is shown as ``<unparseable URL>``: where its secret is cannot be told.
    """
    m = _split(url)
    if m is None:
        return UNPARSEABLE
    userinfo = m["userinfo"]
    shown = ""
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        if not userinfo:
            shown = "@"
        elif not colon:
            shown = f"{MASK}@"
        else:
            shown = f"{user}:{MASK if password else ''}@"
    return f"{m['scheme']}{shown}{m['host']}{_redact_query(m['rest'] or '')}"


def secrets_of(url: str) -> list[str]:
    """The secret strings in ``url`` as written and percent-decoded (for :func:`scrub`)."""
    m = _split(url)
    if m is None:
        return [url] if url else []  # not a URL: the whole value may be the secret
    found: list[str] = []
    userinfo = m["userinfo"]
    if userinfo:
        user, colon, password = userinfo.partition(":")
        found.append(password if colon else user)
    _path, _, query = (m["rest"] or "").partition("?")
    for param in query.partition("#")[0].split("&"):
        key, eq, value = param.partition("=")
        if eq and value and _SECRET_PARAM.search(urllib.parse.unquote(key)):
            found.append(value)
    out: list[str] = []
    for s in found:
        for form in (s, urllib.parse.unquote(s)):
            if form and form not in out:
                out.append(form)
    return sorted(out, key=len, reverse=True)  # longest first: a secret inside another one


# Shorter secrets are not masked in free text: "a" or "dev" would mask every word containing
# it in every log line. The URL itself is always shown redacted, whatever its password.
MIN_SCRUBBED_CHARS = 4


def scrub(text: str, urls: Iterable[str]) -> str:
    """``text`` with every URL of ``urls`` shown redacted and every secret of theirs masked."""
    for url in urls:
        if not url:
            continue
        if url in text:
            text = text.replace(url, redact_url(url))
        for secret in secrets_of(url):
            if len(secret) >= MIN_SCRUBBED_CHARS:
                text = text.replace(secret, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats as ``inner`` does, then masks the secrets of ``urls`` in the whole line."""

    def __init__(self, inner: logging.Formatter | None, urls: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.urls = [u for u in urls if u]

    def format(self, record: logging.LogRecord) -> str:
        return scrub(self.inner.format(record), self.urls)


def redact_logging(urls: Iterable[str], logger: logging.Logger | None = None) -> None:
    """Wrap the formatter of every handler of ``logger`` (the root logger) in a :class:`RedactingFormatter`."""
    wanted = [u for u in urls if u]
    if not wanted:
        return
    for handler in (logger or logging.getLogger()).handlers:
        current = handler.formatter
        if isinstance(current, RedactingFormatter):
            current.urls = list(dict.fromkeys([*current.urls, *wanted]))
        else:
            handler.setFormatter(RedactingFormatter(current, wanted))


def redact_tracebacks(urls: Iterable[str]) -> None:
    """Uncaught exceptions (main thread and others) are printed with the secrets of ``urls`` masked."""
    import sys
    import threading
    import traceback

    wanted = [u for u in urls if u]
    if not wanted:
        return

    def show(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        sys.stderr.write(scrub("".join(traceback.format_exception(kind, exc, tb)), wanted))

    def show_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "?"
        sys.stderr.write(f"Exception in thread {name}:\n")
        show(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = show
    threading.excepthook = show_thread
