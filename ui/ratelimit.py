"""The web UI's side of the rate limits: the web chat and the admin sign-in count against the
same limiter as the API (``chatbot.web.ratelimit.RateLimiter``, which ``create_app`` puts on
``app.state.limiter``; ``mount_ui`` hands it to the tabs).

``Limiter`` is the part of it the UI uses (the UI sits below the web package and does not
import it). A Gradio request gives the socket address and the headers, so a client behind a
trusted proxy is the same client here as on the API. A handler takes ``request: gr.Request``
and calls ``over_limit`` (chat), or ``sign_in_refused`` before checking a token and
``sign_in_failed`` after a wrong one.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

TOO_MANY = "You're sending messages too quickly. Please wait {seconds} s and try again."
TOO_MANY_SIGN_INS = "Too many failed sign-ins from here. Try again in {seconds} s."


class Limiter(Protocol):
    def client_key(self, host: str | None, headers: Any = None) -> str: ...

    def hit(self, kind: str, client: str) -> float | None: ...

    def blocked(self, kind: str, client: str) -> float | None: ...


def client_of(limiter: Limiter, request: Any) -> str:
    """The client a Gradio request (``gr.Request``, possibly None) counts against."""
    client = getattr(request, "client", None) if request is not None else None
    headers = getattr(request, "headers", None) if request is not None else None
    return limiter.client_key(getattr(client, "host", None), headers)


def over_limit(limiter: Limiter | None, request: Any, kind: str = "chat") -> float | None:
    """Count one request of ``kind``; None when allowed (or no limiter), else seconds to wait."""
    if limiter is None:
        return None
    return limiter.hit(kind, client_of(limiter, request))


def sign_in_refused(limiter: Limiter | None, request: Any) -> str | None:
    """The sentence to show when this client's failed sign-ins are used up (no token is
    checked then), else None. Call ``sign_in_failed`` after a wrong token."""
    if limiter is None:
        return None
    wait = limiter.blocked("sign_in", client_of(limiter, request))
    return None if wait is None else TOO_MANY_SIGN_INS.format(seconds=seconds(wait))


def sign_in_failed(limiter: Limiter | None, request: Any) -> None:
    """Count a wrong token against the client's failed sign-ins."""
    if limiter is not None:
        limiter.hit("sign_in", client_of(limiter, request))


def seconds(wait: float) -> int:
    """Whole seconds to tell a person (rounded up, so waiting that long is enough)."""
    return max(1, math.ceil(wait))
