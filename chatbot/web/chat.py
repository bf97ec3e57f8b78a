"""The public chat API (mounted under /api/v1): chat, SSE stream, transcript, live events,
feedback, hand-over, close, opening suggestions, health.

Each route translates HTTP to one ``ChatService`` call (which validates and logs) and the
result to a response body; errors become status codes in ``chatbot.web.errors``. Writing
routes are rate-limited per client IP; reading a transcript and /health are not. A customer
reads their conversation as a ``Transcript``: never the admin-only fields of the full view,
and follows it live on ``/conversations/{id}/events`` (what a person from the team does in it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatbot import __version__
from chatbot.conversations.engine import unavailable
from chatbot.conversations.events import CUSTOMER_EVENTS, conversation_exists
from chatbot.conversations.service import ChatResult, ChatStream
from chatbot.conversations.views import Transcript
from chatbot.errors import ChatbotError, NotFoundError
from chatbot.web.deps import Service, rate_limit
from chatbot.web.errors import INTERNAL
from chatbot.web.schemas import (
    MAX_INT,
    ChatRequest,
    ChatResponse,
    CloseResponse,
    ErrorOut,
    FeedbackRequest,
    FeedbackResponse,
    HandoffRequest,
    HandoffResponse,
    HealthOut,
    OpeningSuggestions,
    SignalsOut,
    SuggestionOut,
)
from chatbot.web.sse import ThreadedStream, event, event_source, follow, resume_from

log = logging.getLogger(__name__)

router = APIRouter(tags=["chat"])
LIMITED = [Depends(rate_limit)]


def chat_body(result: ChatResult) -> dict[str, Any]:
    """The /chat response body (also the SSE ``done`` event)."""
    return ChatResponse.of(result).model_dump(mode="json")


@router.post("/chat", response_model=ChatResponse, dependencies=LIMITED,
             responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
def chat(body: ChatRequest, service: Service) -> Response:
    """Answer one message; the round trip is logged."""
    result = service.chat(body.message, conversation_id=body.conversation_id,
                          channel=body.channel, customer_ref=body.customer_ref,
                          suggestion=body.suggestion.faq_id if body.suggestion else None)
    # Serialised once, straight from the model: the hot path skips FastAPI's re-validation.
    return Response(ChatResponse.of(result).model_dump_json(), media_type="application/json")


@router.post("/chat/stream", dependencies=LIMITED, response_class=EventSourceResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
def chat_stream(body: ChatRequest, service: Service) -> EventSourceResponse:
    """Server-Sent Events: `meta` {conversation_id, signals}, `token` {text} repeated, then
    `done` (the /chat body) or `error` {error}."""
    # Called here, not in the generator: bad input and unknown ids answer 422/404 before the
    # stream starts, and the customer's message is already logged.
    stream = service.chat_stream(body.message, conversation_id=body.conversation_id,
                                 channel=body.channel, customer_ref=body.customer_ref,
                                 suggestion=body.suggestion.faq_id if body.suggestion else None)
    return event_source(_chat_events(stream))


async def _chat_events(stream: ChatStream) -> AsyncIterator[ServerSentEvent]:
    async with aclosing(ThreadedStream(stream)) as items:  # closes the stream on disconnect
        # The signals are read before the message is logged, so they go out before any token.
        signals = SignalsOut.of(stream.signals)
        yield event({"conversation_id": stream.conversation_id,
                     "signals": None if signals is None else signals.model_dump()}, "meta")
        try:
            async for item in items:
                if isinstance(item, str):
                    yield event({"text": item}, "token")
                else:
                    yield event(chat_body(item), "done")
        except ChatbotError as error:
            log.warning("stream failed: %s", error, exc_info=error)
            yield event({"error": str(error)}, "error")
        except Exception:  # the customer gets a sentence, the log the traceback
            log.exception("stream failed")
            yield event({"error": INTERNAL}, "error")


@router.get("/suggestions/opening", response_model=OpeningSuggestions, dependencies=LIMITED)
def opening_suggestions(service: Service) -> OpeningSuggestions:
    """Questions to offer as chips when a chat opens: the most asked of the last 7 days, then
    the knowledge base's usual first questions (rate-limited like the other public routes)."""
    return OpeningSuggestions(suggestions=[
        SuggestionOut(faq_id=s.faq_id, question=s.question)
        for s in service.opening_suggestions()])


@router.get("/conversations/{conversation_id}", response_model=Transcript,
            responses={404: {"model": ErrorOut}})
def conversation(conversation_id: str, service: Service) -> Transcript:
    """The conversation as its customer sees it."""
    return Transcript.of(service.conversation(conversation_id))


@router.post("/feedback", response_model=FeedbackResponse, dependencies=LIMITED)
def feedback(body: FeedbackRequest, service: Service) -> FeedbackResponse:
    return FeedbackResponse(feedback_id=service.feedback(
        message_id=body.message_id, conversation_id=body.conversation_id,
        rating=body.rating, csat=body.csat, comment=body.comment,
    ))


@router.post("/handoff", response_model=HandoffResponse, dependencies=LIMITED)
def handoff(body: HandoffRequest, service: Service) -> HandoffResponse:
    """Hand the conversation to the support team; ``notice`` says when a person will answer."""
    handoff_id = service.handoff(conversation_id=body.conversation_id, reason=body.reason)
    return HandoffResponse(handoff_id=handoff_id, conversation_id=body.conversation_id,
                           status="handed_off", notice=service.agents.availability().notice)


@router.get("/conversations/{conversation_id}/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}},
                       404: {"model": ErrorOut}})
async def conversation_events(
    conversation_id: str, service: Service,
    last_event_id: str | None = Header(None, description="The id of the last event received: "
                                       "only later ones are sent (what a reconnect sends)."),
    after: int | None = Query(None, ge=0, le=MAX_INT,
                              description="The same as Last-Event-ID, for clients "
                              "that cannot set headers."),
) -> EventSourceResponse:
    """What people from the support team do in this conversation, live (Server-Sent Events):
    ``agent_joined`` {agent}, ``agent_message`` {message_id, agent, text, created_at},
    ``agent_left`` {agent} (handed back to the bot) and ``resolved`` {agent}, each with its
    ``id``. Without Last-Event-ID every event from the start is sent; after the backlog comes
    ``ready`` {status, agent} (no id): the conversation's state now. Then new events, live."""
    start = resume_from(last_event_id, after)
    if not await anyio.to_thread.run_sync(conversation_exists, service.engine, conversation_id):
        raise NotFoundError(f"conversation {conversation_id} does not exist")
    return event_source(follow(service.events, conversation_id, start, CUSTOMER_EVENTS,
                               partial(service.agents.state, conversation_id)))


@router.post("/conversations/{conversation_id}/close", response_model=CloseResponse,
             dependencies=LIMITED, responses={404: {"model": ErrorOut}})
def close(conversation_id: str, service: Service) -> CloseResponse:
    """The customer ended the chat; a new message in it reopens it."""
    ended = service.close(conversation_id)
    return CloseResponse(conversation_id=conversation_id, status="closed", ended_at=ended)


@router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
def health(service: Service) -> JSONResponse:
    """Ready (200) only when the pipeline has loaded its index and models (the warm-up at start
    loads them) and the database answers; otherwise 503 with the reason."""
    reasons: list[str] = []
    pipeline = service.pipeline
    try:
        ready = bool(pipeline.ready())
        index_version = pipeline.index_version
        missing = getattr(pipeline, "not_ready", None)  # the real pipeline says what is missing
        if not ready:
            reasons.append("not loaded yet: " + ", ".join(missing()) if missing is not None
                           else "the answer pipeline is not ready")
    except Exception as error:  # a broken pipeline is "not ready", not a 500
        log.warning("pipeline not ready: %s", error)
        ready, index_version = False, None
        reasons.append("the answer pipeline failed to load (see the server log)")
    try:
        with service.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database = "ok"
    except Exception as error:
        log.warning("database check failed: %s", error)
        database = "unavailable"
        outage = unavailable(error)
        reasons.append(f"the database is unavailable: {outage.reason}" if outage is not None
                       else "the database check failed (see the server log)")
    ok = ready and database == "ok"
    out = HealthOut(status="ready" if ok else "not ready", index_version=index_version,
                    database=database, version=__version__, reason="; ".join(reasons) or None)
    return JSONResponse(out.model_dump(), status_code=200 if ok else 503)
