"""FastAPI dependencies shared by the routers: the service, the settings, admin auth, rate limits.

``create_app`` stores one ``ChatService``, the ``Settings`` and the rate limiter on
``app.state``; the routers are built once at import time and reach them only through these
dependencies, so a test (or a second app in one process) gets its own through the factory.
All are ``async``: each is a dict lookup or a hash compare, not worth a thread-pool hop (the
agent check reads the database, and a Redis-backed limiter the network, so those take one).

Rate limits (``chatbot.web.ratelimit``): ``rate_limit`` is the chat limit; ``require_admin``
counts every admin request against the admin limit, and both token checks refuse a client
whose failed sign-ins are used up, then count a wrong token as one more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatbot.config import Settings
from chatbot.conversations.agents import AgentView
from chatbot.conversations.service import ChatService
from chatbot.web.errors import AuthError, RateLimited
from chatbot.web.ratelimit import RateLimiter

BEARER = HTTPBearer(auto_error=False, description="The admin token (CHATBOT_ADMIN_TOKEN).")
AGENT_BEARER = HTTPBearer(auto_error=False, scheme_name="AgentToken",
                          description="An agent token (`chatbot agents add NAME`).")


async def get_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.service
    return service


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Service = Annotated[ChatService, Depends(get_service)]
AppSettings = Annotated[Settings, Depends(get_settings)]
AdminCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


async def require_admin(request: Request, credentials: AdminCredentials,
                        service: Service) -> None:
    """``Authorization: Bearer <admin token>``, compared in constant time by the service; every
    admin request counts against the admin rate limit, a wrong token against the sign-ins."""
    client = await _limit(request, "admin")
    await _refuse_if_locked_out(request, client)
    if credentials is None or not service.check_admin_token(credentials.credentials):
        if credentials is not None:  # a token was tried: one guess more
            await _count(request, "sign_in", client)
        raise AuthError("missing or wrong admin token: send Authorization: Bearer <token>")


AgentCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(AGENT_BEARER)]


async def require_agent(request: Request, credentials: AgentCredentials,
                        service: Service) -> AgentView:
    """``Authorization: Bearer <agent token>`` (``chatbot agents add NAME`` prints one): the
    signed-in agent. The admin token is not an agent: hand-overs are answered by named people.
    (The agent router counts every request, wrong tokens too, against the client's rate limit
    before this runs; a wrong token also counts as a failed sign-in.)"""
    client = _client(request)
    await _refuse_if_locked_out(request, client)
    token = credentials.credentials if credentials is not None else None
    agent = await anyio.to_thread.run_sync(service.agents.authenticate, token)
    if agent is None:
        if token is not None:
            await _count(request, "sign_in", client)
        raise AuthError("missing or wrong agent token: send Authorization: Bearer <agent token> "
                        "(`chatbot agents add NAME` creates one)")
    return agent


SignedInAgent = Annotated[AgentView, Depends(require_agent)]


async def rate_limit(request: Request) -> None:
    """Count the request against its client's chat limit; 429 (``RateLimited``) once over it."""
    await _limit(request, "chat")


def _client(request: Request) -> str:
    limiter: RateLimiter = request.app.state.limiter
    return limiter.client_key(request.client.host if request.client else None, request.headers)


async def _count(request: Request, kind: str, client: str) -> float | None:
    """One request of ``client`` against ``kind``: None when allowed, else the seconds to wait."""
    limiter: RateLimiter = request.app.state.limiter
    return await _ask(limiter, limiter.hit, kind, client)


async def _limit(request: Request, kind: str) -> str:
    """Count the request against ``kind``, raising ``RateLimited`` past it; returns the client."""
    client = _client(request)
    wait = await _count(request, kind, client)
    if wait is not None:
        raise RateLimited(wait)
    return client


async def _refuse_if_locked_out(request: Request, client: str) -> None:
    """429 while the client's failed sign-ins are used up, whatever token it sends now."""
    limiter: RateLimiter = request.app.state.limiter
    wait = await _ask(limiter, limiter.blocked, "sign_in", client)
    if wait is not None:
        raise RateLimited(wait)


async def _ask(limiter: RateLimiter, check: Callable[[str, str], float | None], kind: str,
               client: str) -> float | None:
    """``check(kind, client)``, in a worker thread when the limiter's storage is remote (a
    Redis round trip must not block the event loop)."""
    if limiter.remote:
        return await anyio.to_thread.run_sync(check, kind, client)
    return check(kind, client)
