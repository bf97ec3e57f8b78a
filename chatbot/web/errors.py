"""How errors become HTTP responses: status codes, JSON bodies, 401/429 headers, nosniff.

The API's edge: inner code raises ChatbotError subclasses with messages that say what to do;
here each class gets its status code and a ``{"error": ..., "field": ...}`` body (OpenAI-shaped
``{"error": {"message", "type", ...}}`` under /v1/, where OpenAI clients read it). Unexpected
exceptions are logged with their traceback and answered with a generic 500: a customer never
sees a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbot.conversations.engine import unavailable
from chatbot.errors import (
    ChatbotError,
    ConfigError,
    ConflictError,
    DatabaseUnavailableError,
    GenerationError,
    IndexNotReadyError,
    InvalidRequestError,
    ModelError,
    NotFoundError,
)
from chatbot.web.ratelimit import retry_after_header
from chatbot.web.schemas import ErrorOut

log = logging.getLogger("chatbot.web.app")

STATUS_OF: tuple[tuple[type[ChatbotError], int], ...] = (
    (InvalidRequestError, 422), (NotFoundError, 404), (ConflictError, 409),
    (IndexNotReadyError, 503), (ModelError, 503), (GenerationError, 502), (ConfigError, 500),
    (DatabaseUnavailableError, 503),
)
INTERNAL = "internal error; the details are in the server log"


class AuthError(Exception):
    """Missing or wrong admin token (401)."""


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many requests; retry in {retry_after_header(retry_after)} s")


class NoSniffMiddleware:
    """Adds ``X-Content-Type-Options: nosniff`` so browsers never guess a type (e.g. HTML).
    Plain ASGI rather than @app.middleware: that wrapper costs a task per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, send_with_header)


def status_of(error: ChatbotError) -> int:
    for cls, code in STATUS_OF:
        if isinstance(error, cls):
            return code
    return 500


def describe_validation(errors: list[Any]) -> tuple[str, str | None]:
    """One readable sentence naming each bad field and why, and the first field's name."""
    parts, first = [], None
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        first = first or field
        if error.get("type") == "json_invalid":
            parts.append(f"request body is not valid JSON ({error.get('msg', '')})")
        elif error.get("type") == "missing":
            parts.append(f"{field}: is required")
        else:
            message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
            parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts) or "invalid request", first


def error_response(path: str, message: str, status: int,
                   field: str | None = None) -> JSONResponse:
    """The error body for a request to ``path``: ``{"error", "field"}``, or OpenAI's shape
    under /v1/ (also what the input guard middleware answers with, before any route runs)."""
    if path.startswith("/v1/"):  # OpenAI-shaped errors for OpenAI clients
        status = 400 if status == 422 else status  # OpenAI answers bad input with 400
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "param": field,
                                       "code": status}}, status_code=status)
    return JSONResponse(ErrorOut(error=message, field=field).model_dump(exclude_none=True),
                        status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    def body(request: Request, message: str, status: int, field: str | None = None) -> JSONResponse:
        return error_response(request.url.path, message, status, field)

    @app.exception_handler(ChatbotError)
    async def chatbot_error(request: Request, error: ChatbotError) -> JSONResponse:
        status = status_of(error)
        if status >= 500:
            log.error("request failed: %s", error, exc_info=error)
        return body(request, str(error), status, getattr(error, "field", None))

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, error: SQLAlchemyError) -> JSONResponse:
        # The database went away (restart, network): a clear, retryable 503, not a bare 500.
        outage = unavailable(error)
        if outage is None:
            log.error("unexpected database error on %s", request.url.path, exc_info=error)
            return body(request, INTERNAL, 500)
        log.warning("database unavailable on %s: %s", request.url.path,
                    str(error).strip().splitlines()[0])
        response = body(request, str(outage), 503)
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        message, field = describe_validation(list(error.errors()))
        return body(request, message, 422, field)

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, error: AuthError) -> JSONResponse:
        response = body(request, str(error), 401)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, error: RateLimited) -> JSONResponse:
        response = body(request, str(error), 429)
        response.headers["Retry-After"] = retry_after_header(error.retry_after)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        response = body(request, str(error.detail), error.status_code)
        for key, value in (error.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("unexpected error on %s", request.url.path, exc_info=error)
        return body(request, INTERNAL, 500)
