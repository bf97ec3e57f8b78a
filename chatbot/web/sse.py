"""Server-Sent Events for the streaming endpoints, on sse-starlette.

Both streams (``/api/v1/chat/stream`` and ``/v1/chat/completions`` with ``stream: true``)
answer with ``event_source(events)``: sse-starlette's ``EventSourceResponse`` with a keep-alive
comment every ``PING_S`` seconds (proxies drop connections that stay silent while a slow model
thinks), ``\\n`` line ends (what the widget, the tests and the OpenAI SDK have always read),
``Cache-Control: no-cache`` and ``X-Accel-Buffering: no`` so proxies pass each token on at once.

``follow`` streams a conversation's live events (the customer's and the agent's event streams),
each with its ``id:`` so a reconnecting client resumes with Last-Event-ID.

``ThreadedStream`` reads a ``ChatStream`` from the async endpoint: each step runs in a worker
thread (the pipeline and the database block) and ``aclose()`` always closes the ChatStream, so
wrap it in ``contextlib.aclosing``. When the client goes away, sse-starlette cancels or closes
the event generator, the ``aclosing`` block exits, and the pipeline stops generating (nothing
more is logged: the customer's message stays, without a bot reply).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any, cast

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatbot.conversations.events import READ_LIMIT, EventBus
from chatbot.conversations.service import ChatResult, ChatStream
from chatbot.errors import InvalidRequestError
from chatbot.web.schemas import MAX_INT

PING_S = 15
SEP = "\n"
_END = object()


def event(data: dict[str, Any] | str, name: str | None = None,
          event_id: int | None = None) -> ServerSentEvent:
    """One event; a dict is sent as JSON (escaped newlines keep it on one ``data:`` line).
    ``event_id`` is the ``id:`` a client resumes from (Last-Event-ID)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return ServerSentEvent(text, event=name, id=None if event_id is None else str(event_id),
                           sep=SEP)


def event_source(events: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    return EventSourceResponse(events, ping=PING_S, sep=SEP,
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def resume_from(last_event_id: str | None, after: int | None) -> int:
    """The event id a stream starts after: the Last-Event-ID header (what a reconnecting
    EventSource sends), else ``?after=``, else 0 (from the start)."""
    if last_event_id and last_event_id.strip():
        if not last_event_id.strip().isdigit() or int(last_event_id) > MAX_INT:
            raise InvalidRequestError("Last-Event-ID must be an event id (a whole number)",
                                      field="last_event_id")
        return int(last_event_id)
    return after or 0


async def follow(bus: EventBus, conversation_id: str, after: int, types: Collection[str],
                 state: Callable[[], dict[str, Any]] | None = None
                 ) -> AsyncIterator[ServerSentEvent]:
    """A conversation's live events (``chatbot.conversations.events``) as SSE events named by
    their type, each with its id, until the client goes away. After the events it missed
    comes one ``ready`` event (no id) with ``state()``, the conversation as it is now: a
    client that starts from nothing replays the history quietly and takes its state from it."""
    while True:  # the backlog, in pages
        backlog = await anyio.to_thread.run_sync(bus.read, conversation_id, after)
        for item in backlog:
            after = item.id
            if item.type in types:
                yield event(item.data, item.type, item.id)
        if len(backlog) < READ_LIMIT:
            break
    if state is not None:
        yield event(await anyio.to_thread.run_sync(state), "ready")
    async for item in bus.follow(conversation_id, after, types):
        yield event(item.data, item.type, item.id)


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
