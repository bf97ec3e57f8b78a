"""The input guard: what every HTTP request meets first, before any route, form or database.

- **Body size.** A request whose ``Content-Length`` is over the limit is answered 413 without
  being read; a body without one (chunked) is counted as it arrives and answered 413 as soon as
  it passes the limit, so nobody makes the server read and parse 50 MB. The limit is
  ``settings.max_body_bytes`` on the API (/api/, /v1/) and ``UI_BODY_FACTOR`` times that for
  the web UI, whose browser sends the whole chat shown on screen with every message.
- **Control characters.** A path or query parameter holding one (``%00`` in a conversation id),
  or an API request whose JSON body holds one in any string (``"hi\\u0000there"``), is answered
  422 naming the field, before anything can try to store it (PostgreSQL refuses NUL; the
  rule is ``chatbot.answering.inputs``). The web UI's own bodies are not scanned: its chat
  message goes through the same rule in the conversation service, and the UI shows that as a
  friendly sentence instead of a failed request.

Both answers have the API's error shape (``chatbot.web.errors.error_response``). A pure ASGI
middleware: the body is read once here (at most the limit) and handed on to the app, which
still sees the client's disconnect (the SSE streams watch for it).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbot.answering.inputs import control_problem
from chatbot.web.errors import error_response

API_PREFIXES = ("/api/", "/v1/")
UI_BODY_FACTOR = 16


class InputGuard:
    """Rejects over-large bodies (413) and control characters in paths, queries and API JSON
    bodies (422) before the app sees the request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        api = path.startswith(API_PREFIXES)
        limit = self.max_body_bytes * (1 if api else UI_BODY_FACTOR)
        problem = url_problem(scope)
        if problem is not None:
            await error_response(path, problem[0], 422, problem[1])(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(scope, receive, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if api and body:
            problem = json_problem(body)
            if problem is not None:
                await error_response(path, problem[0], 422, problem[1])(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        message = (f"the request body is larger than {limit} bytes: send a shorter message "
                   "(or fewer earlier messages)")
        await error_response(scope["path"], message, 413)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then the client's own messages (its disconnect)."""
    done = False

    async def replay() -> Message:
        nonlocal done
        if done:
            return await receive()
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def url_problem(scope: Scope) -> tuple[str, str] | None:
    """(what is wrong, field) when the path or a query parameter holds a control character."""
    problem = control_problem(scope["path"], "path")
    if problem is not None:
        return problem, "path"
    for key, value in QueryParams(scope.get("query_string", b"")).multi_items():
        for text in (key, value):
            problem = control_problem(text, f"query parameter {key!r}")
            if problem is not None:
                return problem, key
    return None


def json_problem(body: bytes) -> tuple[str, str] | None:
    """(what is wrong, field) for the first string in a JSON body (a key or a value) that holds
    a control character, the field spelled as its path (``messages.0.content``). A body that is
    not JSON is the route's to reject."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, a 5000-digit number, too deep
        return None
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            problem = control_problem(value, where or "body")
            if problem is not None:
                return problem, where or "body"
        elif isinstance(value, dict):
            for key in value:
                problem = control_problem(key, f"name of a field in {where or 'the body'}")
                if problem is not None:
                    return problem, where or "body"
            # Reversed onto the stack, so fields are checked in the order they were written.
            stack.extend((item, f"{where}.{key}" if where else key)
                         for key, item in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((item, f"{where}.{i}" if where else str(i))
                         for i, item in reversed(list(enumerate(value))))
    return None
