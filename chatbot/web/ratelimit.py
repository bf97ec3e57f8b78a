"""Rate limits: how often a client may call, counted in one place for every worker and replica.

Three limits, each a moving one-minute window per client (the ``limits`` library's
``MovingWindowRateLimiter``):

- ``chat``: the chat endpoints (REST, SSE, OpenAI-compatible) and the Gradio web chat;
- ``admin``: the admin endpoints;
- ``sign_in``: failed sign-ins (a wrong admin token on the API or in the admin tab). Once a
  client has used it up, every sign-in from it is refused, right token or not, until the window
  moves on: guessing stops instead of slowing down.

Counts live in Redis when ``settings.redis_url`` is set (all workers and replicas share them),
else in this process's memory. A Redis outage does not take the API down: the limiter lets
requests through and logs a warning (at most once a minute).

The client is the socket address, unless that address is one of ``settings.trusted_proxies``:
then it is the right-most address in ``X-Forwarded-For`` that is not a trusted proxy (the one
our own proxy saw; everything left of it the client could have written). With no trusted
proxies the header is ignored, so nobody picks their own bucket by sending it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from chatbot.config import Settings

log = logging.getLogger(__name__)

Kind = Literal["chat", "admin", "sign_in"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN_CLIENT = "unknown"
_WARN_EVERY_S = 60.0
# A limiter must answer fast or not at all: a request never waits seconds for Redis.
_REDIS_TIMEOUT_S = 0.5


class RateLimiter:
    """The app's three per-client limits on one storage; a limit of 0 is off."""

    def __init__(self, settings: Settings, *, storage: Storage | None = None) -> None:
        per_minute: dict[Kind, int] = {
            "chat": settings.rate_limit_per_minute,
            "admin": settings.admin_rate_limit_per_minute,
            "sign_in": settings.sign_in_failures_per_minute,
        }
        self.items: dict[str, RateLimitItem] = {
            kind: RateLimitItemPerMinute(amount, namespace=f"chatbot-{kind}")
            for kind, amount in per_minute.items() if amount > 0
        }
        if storage is None:
            storage = (RedisStorage(settings.redis_url, wrap_exceptions=True,
                                    socket_timeout=_REDIS_TIMEOUT_S,
                                    socket_connect_timeout=_REDIS_TIMEOUT_S)
                       if settings.redis_url else MemoryStorage())
        self.storage = storage
        # True when every call is a network round trip: async callers run it in a thread.
        self.remote = not isinstance(storage, MemoryStorage)
        self._limiter = MovingWindowRateLimiter(storage)
        self._proxies: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies)
        self._warned_at = -math.inf

    # --- who is asking -------------------------------------------------------------------------
    def client_key(self, host: str | None, headers: Mapping[str, str] | Any = None) -> str:
        """The client a request counts against: its socket address, or behind a trusted proxy
        the right-most untrusted address of X-Forwarded-For."""
        if not host:
            return UNKNOWN_CLIENT
        if not self._proxies or not self._trusted(host) or headers is None:
            return host
        forwarded = _header_values(headers, "x-forwarded-for")
        hops = [hop.strip() for value in forwarded for hop in value.split(",") if hop.strip()]
        client = host
        for hop in reversed(hops):
            if not _is_address(hop):
                break  # garbage a trusted proxy passed on: keep the last address we trust
            client = hop
            if not self._trusted(hop):
                break
        return client

    def _trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._proxies)

    # --- counting ----------------------------------------------------------------------------
    def hit(self, kind: str, client: str) -> float | None:
        """Count one request of ``client`` against ``kind``; None when it is allowed, else the
        seconds until one will be."""
        return self._check(self._limiter.hit, kind, client)

    def blocked(self, kind: str, client: str) -> float | None:
        """Without counting: None when ``client`` has ``kind`` left, else the seconds to wait
        (a sign-in is refused while its failures are used up)."""
        return self._check(self._limiter.test, kind, client)

    def _check(self, allowed: Callable[[RateLimitItem, str], bool], kind: str,
               client: str) -> float | None:
        """``allowed(item, client)`` (the limiter's hit or test) as seconds to wait, None when
        allowed; a limit that is off, or storage that fails, lets the request through."""
        item = self.items.get(kind)
        if item is None:
            return None
        try:
            if allowed(item, client):
                return None
            return self._wait(item, client)
        except StorageError as error:
            self._storage_failed(error)
            return None

    def _wait(self, item: RateLimitItem, client: str) -> float:
        reset = self._limiter.get_window_stats(item, client).reset_time
        return max(reset - time.time(), 0.001)

    def _storage_failed(self, error: StorageError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("rate-limit storage unavailable, requests are not limited: %s",
                        error.storage_error if hasattr(error, "storage_error") else error)


def _header_values(headers: Mapping[str, str] | Any, name: str) -> list[str]:
    """Every value of a header (a proxy chain may send it more than once), in order."""
    if hasattr(headers, "getlist"):  # starlette's Headers (FastAPI and Gradio requests)
        return list(headers.getlist(name))
    value = headers.get(name) if hasattr(headers, "get") else None
    return [value] if isinstance(value, str) else []


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds; round up so a client that obeys it is let through."""
    return str(max(1, math.ceil(seconds)))
