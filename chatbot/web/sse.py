"""Server-Sent Events for the streaming endpoints, on sse-starlette.

Both streams (``/api/v1/chat/stream`` and ``/v1/chat/completions`` with ``stream: true``)
answer with ``event_source(events)``: sse-starlette's ``EventSourceResponse`` with a keep-alive
comment every ``PING_S`` seconds (proxies drop connections that stay silent while a slow model
thinks), ``\\n`` line ends (what the widget, the tests and the OpenAI SDK have always read),
``Cache-Control: no-cache`` and ``X-Accel-Buffering: no`` so proxies pass each token on at once.

``ThreadedStream`` reads a ``ChatStream`` from the async endpoint: each step runs in a worker
thread (the pipeline and the database block) and ``aclose()`` always closes the ChatStream, so
wrap it in ``contextlib.aclosing``. When the client goes away, sse-starlette cancels or closes
the event generator, the ``aclosing`` block exits, and the pipeline stops generating (nothing
more is logged: the customer's message stays, without a bot reply).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatbot.conversations.service import ChatResult, ChatStream

PING_S = 15
SEP = "\n"
_END = object()


def event(data: dict[str, Any] | str, name: str | None = None) -> ServerSentEvent:
    """One event; a dict is sent as JSON (escaped newlines keep it on one ``data:`` line)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return ServerSentEvent(text, event=name, sep=SEP)


def event_source(events: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    return EventSourceResponse(events, ping=PING_S, sep=SEP,
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class ThreadedStream:
    """Async iteration over a ChatStream, one worker-thread hop per item."""

    def __init__(self, stream: ChatStream) -> None:
        self._stream = stream

    def __aiter__(self) -> ThreadedStream:
        return self

    async def __anext__(self) -> str | ChatResult:
        # Not cancellable mid-step: the thread finishes its item, then a cancellation lands
        # here and aclose() can close the generator (never while it runs in another thread).
        item = await anyio.to_thread.run_sync(next, self._stream, _END)
        if item is _END:
            raise StopAsyncIteration
        return cast("str | ChatResult", item)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):  # runs while the response is being cancelled
            await anyio.to_thread.run_sync(self._stream.close)
