"""Which hosts a job's webhooks may reach (``WORKER_WEBHOOK_HOSTS``; empty: none at all).

RQ 3 jobs carry ``webhooks`` in their hash (URL, method, headers, timeout) and RQ POSTs them when
the job ends. Whoever can write a job hash chooses all of it, so with no allowlist a worker
could be made to send requests with chosen headers to any host it can reach (metadata
endpoints, internal services). Here a webhook is sent only when its host is listed:

- ``host`` allows that host on its scheme's default port (80 for http, 443 for https);
- ``host:port`` allows that port only (``[::1]:8080`` for an IPv6 address).

The host is read as urllib itself will connect to it (``urllib.request.Request(url).host``), so
the check and the request cannot disagree about an odd URL; a URL with user info, or a host
that is not a plain name or address, is refused. Names are compared lowercased, without a
trailing dot. Redirects are followed as RQ's ``Webhook.send`` does: the allowed host decides.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
_IPV6 = re.compile(r"^\[[0-9a-f:.]+\]$")


def _normal_host(host: str) -> str | None:
    host = host.lower().rstrip(".") if not host.startswith("[") else host.lower()
    if _NAME.match(host) or _IPV6.match(host):
        return host
    return None


def parse_entry(entry: str) -> tuple[str, int | None]:
    """``host`` or ``host:port`` -> (normalised host, port or None); ValueError when malformed."""
    text = entry.strip()
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end != -1 and text[end + 1 :].startswith(":"):
            host, port_text = text[: end + 1], text[end + 2 :]
            port = _port(port_text, entry)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, entry)
    normal = _normal_host(host)
    if normal is None:
        raise ValueError(f"{entry!r} is not a host name, an address or host:port")
    return normal, port


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(text)


class WebhookHosts:
    """The parsed ``WORKER_WEBHOOK_HOSTS``: is a webhook URL's host allowed?"""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.entries = tuple(e.strip() for e in entries if e.strip())
        self._allowed = {parse_entry(e) for e in self.entries}

    def __bool__(self) -> bool:
        return bool(self._allowed)

    def target(self, url: object) -> tuple[str, int, bool] | None:
        """(host, port, whether that is the scheme's default port) a webhook to ``url`` would
        connect to, or None for a URL never to send to."""
        if not isinstance(url, str) or len(url) > 4096:
            return None
        try:
            req = urllib.request.Request(url)
        except ValueError:
            return None
        default = _DEFAULT_PORTS.get(req.type.lower())
        if default is None or "@" in req.host:
            return None
        try:
            host, port = parse_entry(req.host)
        except ValueError:
            return None
        port = default if port is None else port
        return host, port, port == default

    def allows(self, url: object) -> bool:
        """Is ``url``'s host (and port) listed? False for every URL when the list is empty."""
        target = self.target(url) if self._allowed else None
        if target is None:
            return False
        host, port, default = target
        return (host, port) in self._allowed or (default and (host, None) in self._allowed)
