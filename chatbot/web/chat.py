"""The public chat API (mounted under /api/v1): chat, SSE stream, transcript, feedback,
hand-over, close, health.

Each route translates HTTP to one ``ChatService`` call (which validates and logs) and the
result to a response body; errors become status codes in ``chatbot.web.errors``. Writing
routes are rate-limited per client IP; reading a transcript and /health are not. A customer
reads their conversation as a ``Transcript``: never the admin-only fields of the full view.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sse_starlette import EventSourceResponse, ServerSentEvent

from chatbot import __version__
from chatbot.conversations.service import ChatResult, ChatStream
from chatbot.conversations.views import Transcript
from chatbot.errors import ChatbotError
from chatbot.web.deps import Service, rate_limit
from chatbot.web.errors import INTERNAL
from chatbot.web.schemas import (
    ChatRequest,
    ChatResponse,
    CloseResponse,
    ErrorOut,
    FeedbackRequest,
    FeedbackResponse,
    HandoffRequest,
    HandoffResponse,
    HealthOut,
)
from chatbot.web.sse import ThreadedStream, event, event_source

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
                          channel=body.channel, customer_ref=body.customer_ref)
    # Serialised once, straight from the model: the hot path skips FastAPI's re-validation.
    return Response(ChatResponse.of(result).model_dump_json(), media_type="application/json")


@router.post("/chat/stream", dependencies=LIMITED, response_class=EventSourceResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
def chat_stream(body: ChatRequest, service: Service) -> EventSourceResponse:
    """Server-Sent Events: `meta` {conversation_id}, `token` {text} repeated, then `done`
    (the /chat body) or `error` {error}."""
    # Called here, not in the generator: bad input and unknown ids answer 422/404 before the
    # stream starts, and the customer's message is already logged.
    stream = service.chat_stream(body.message, conversation_id=body.conversation_id,
                                 channel=body.channel, customer_ref=body.customer_ref)
    return event_source(_chat_events(stream))


async def _chat_events(stream: ChatStream) -> AsyncIterator[ServerSentEvent]:
    async with aclosing(ThreadedStream(stream)) as items:  # closes the stream on disconnect
        yield event({"conversation_id": stream.conversation_id}, "meta")
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
    handoff_id = service.handoff(conversation_id=body.conversation_id, reason=body.reason)
    return HandoffResponse(handoff_id=handoff_id, conversation_id=body.conversation_id,
                           status="handed_off")


@router.post("/conversations/{conversation_id}/close", response_model=CloseResponse,
             dependencies=LIMITED, responses={404: {"model": ErrorOut}})
def close(conversation_id: str, service: Service) -> CloseResponse:
    """The customer ended the chat; a new message in it reopens it."""
    ended = service.close(conversation_id)
    return CloseResponse(conversation_id=conversation_id, status="closed", ended_at=ended)


@router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
def health(service: Service) -> JSONResponse:
    """Ready (200) only when the pipeline has its index and models and the database answers."""
    try:
        ready = bool(service.pipeline.ready())
        index_version = service.pipeline.index_version
    except Exception as error:  # a broken pipeline is "not ready", not a 500
        log.warning("pipeline not ready: %s", error)
        ready, index_version = False, None
    try:
        with service.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database = "ok"
    except Exception as error:
        log.warning("database check failed: %s", error)
        database = "unavailable"
    ok = ready and database == "ok"
    out = HealthOut(status="ready" if ok else "not ready", index_version=index_version,
                    database=database, version=__version__)
    return JSONResponse(out.model_dump(), status_code=200 if ok else 503)
