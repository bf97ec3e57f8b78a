"""FastAPI dependencies shared by the routers: the service, the settings, admin auth, rate limits.

``create_app`` stores one ``ChatService``, the ``Settings`` and the rate limiter on
``app.state``; the routers are built once at import time and reach them only through these
dependencies, so a test (or a second app in one process) gets its own through the factory.
All are ``async``: each is a dict lookup or a hash compare, not worth a thread-pool hop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatbot.config import Settings
from chatbot.conversations.service import ChatService
from chatbot.web.errors import AuthError, RateLimited
from chatbot.web.ratelimit import SlidingWindowLimiter

BEARER = HTTPBearer(auto_error=False, description="The admin token (CHATBOT_ADMIN_TOKEN).")


async def get_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.service
    return service


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Service = Annotated[ChatService, Depends(get_service)]
AppSettings = Annotated[Settings, Depends(get_settings)]
AdminCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


async def require_admin(credentials: AdminCredentials, service: Service) -> None:
    """``Authorization: Bearer <admin token>``, compared in constant time by the service."""
    if credentials is None or not service.check_admin_token(credentials.credentials):
        raise AuthError("missing or wrong admin token: send Authorization: Bearer <token>")


async def rate_limit(request: Request) -> None:
    """Count the request against its client IP; 429 (``RateLimited``) once over the limit."""
    limiter: SlidingWindowLimiter = request.app.state.limiter
    client = request.client.host if request.client else "unknown"
    wait = limiter.check(client)
    if wait is not None:
        raise RateLimited(wait)
