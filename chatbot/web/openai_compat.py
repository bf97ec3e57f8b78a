"""OpenAI-compatible ``POST /v1/chat/completions``, so OpenAI clients and tools can use the bot.

The last ``user`` message is the question; earlier user/assistant messages are the history
(system messages are ignored: the bot's behaviour is set by its own prompt and policy). Each
request is one logged round trip through ``ChatService`` on the ``api`` channel: with a
``user`` field the requests of that user continue one conversation, without it each request
opens its own. Responses follow OpenAI's shapes (``chat.completion`` and, when streaming,
``chat.completion.chunk`` events ending in ``data: [DONE]``); the bot's own fields (route,
confidence, sources, conversation id, the customer message's signals) ride along under an
extra ``chatbot`` key. Token usage is
not reported: the FAQ route produces no tokens to count. Bad input is a 400 in OpenAI's error
shape (``chatbot.web.errors``): a last message that is not the user's, or one without text or
too long (the service's one message check), more than ``max_request_messages`` messages or any
of them longer than a customer message may be. Streams are sse-starlette responses
(``chatbot.web.sse``); the route is rate-limited like /api/v1/chat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sse_starlette import ServerSentEvent

from chatbot.answering.inputs import check_text
from chatbot.config import Settings
from chatbot.conversations.service import ChatResult, ChatService, ChatStream, sources
from chatbot.errors import ChatbotError, InvalidRequestError
from chatbot.types import Turn
from chatbot.web.deps import AppSettings, Service, rate_limit
from chatbot.web.schemas import SignalsOut
from chatbot.web.sse import ThreadedStream, event, event_source

log = logging.getLogger(__name__)

DEFAULT_MODEL = "chatbot"
DONE = "[DONE]"
router = APIRouter(tags=["openai-compatible"])


class ContentPart(BaseModel):
    type: str = Field("text", max_length=50)
    text: str | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class CompletionRequest(BaseModel):
    model: str = Field(DEFAULT_MODEL, max_length=200,
                       description="Echoed back; the server's model answers.")
    messages: list[ChatMessage] = Field(
        min_length=1, description="The conversation so far and, last, the user's question: at "
        "most the server's max_request_messages (50 by default), each at most "
        "max_message_chars characters (4000).")
    stream: bool = False
    user: str | None = Field(
        None, max_length=200, description="Continues this user's conversation."
    )
    # temperature, max_tokens, etc. are accepted and ignored (extra fields are allowed).


def _check_sizes(messages: list[ChatMessage], settings: Settings) -> None:
    """At most ``max_request_messages`` messages, each no longer than a customer message may
    be (control characters never get this far: ``chatbot.web.guard``)."""
    if len(messages) > settings.max_request_messages:
        raise InvalidRequestError(
            f"{len(messages)} messages, more than the {settings.max_request_messages} allowed: "
            "send only the recent part of the conversation", field="messages")
    for number, message in enumerate(messages):
        check_text(message.text(), settings.max_message_chars, field=f"messages.{number}.content")


def _question_and_history(messages: list[ChatMessage]) -> tuple[str, list[Turn]]:
    last = messages[-1]
    if last.role != "user":
        raise InvalidRequestError("the last message must have role 'user' (the question)",
                                  field="messages")
    history = [
        Turn("customer" if m.role == "user" else "agent", m.text())
        for m in messages[:-1] if m.role in ("user", "assistant") and m.text().strip()
    ]
    return last.text(), history


def _extension(result: ChatResult) -> dict[str, Any]:
    reply = result.reply
    signals = SignalsOut.of(result.signals)
    return {
        "conversation_id": result.conversation_id, "message_id": result.message_id,
        "route": getattr(reply.route, "value", str(reply.route)), "confidence": reply.confidence,
        "handoff": result.handoff, "sources": [s.model_dump() for s in sources(reply)],
        "signals": None if signals is None else signals.model_dump(),
    }


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any],
           finish: str | None = None, **extra: Any) -> ServerSentEvent:
    return event({"id": cid, "object": "chat.completion.chunk", "created": created,
                  "model": model, "choices": [{"index": 0, "delta": delta,
                                               "finish_reason": finish}], **extra})


def _conversation_for(service: ChatService, user: str | None) -> str | None:
    return service.find_conversation(customer_ref=user, channel="api") if user else None


@router.post("/chat/completions", dependencies=[Depends(rate_limit)])
def chat_completions(body: CompletionRequest, service: Service, settings: AppSettings) -> Any:
    """OpenAI Chat Completions, streaming (SSE) or not."""
    _check_sizes(body.messages, settings)
    question, history = _question_and_history(body.messages)
    conversation_id = _conversation_for(service, body.user)
    created = int(time.time())
    if not body.stream:
        result = service.chat(question, conversation_id=conversation_id, channel="api",
                              customer_ref=body.user, history=history)
        return {
            "id": f"chatcmpl-{result.message_id}", "object": "chat.completion",
            "created": created, "model": result.reply.model or body.model,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": result.reply.text}}],
            "chatbot": _extension(result),
        }
    # Called here, not in the generator: bad input answers 400 before the stream starts.
    stream = service.chat_stream(question, conversation_id=conversation_id, channel="api",
                                 customer_ref=body.user, history=history)
    cid = f"chatcmpl-{stream.customer_message_id}"
    return event_source(_completion_events(stream, cid, created, body.model))


async def _completion_events(stream: ChatStream, cid: str, created: int,
                             model: str) -> AsyncIterator[ServerSentEvent]:
    async with aclosing(ThreadedStream(stream)) as items:  # closes the stream on disconnect
        try:
            yield _chunk(cid, created, model, {"role": "assistant", "content": ""})
            async for item in items:
                if isinstance(item, str):
                    yield _chunk(cid, created, model, {"content": item})
                else:
                    yield _chunk(cid, created, model, {}, "stop", chatbot=_extension(item))
        except Exception as error:
            log.warning("completion stream failed", exc_info=error)
            message = str(error) if isinstance(error, ChatbotError) else "internal error"
            yield event({"error": {"message": message, "type": "server_error"}})
    yield event(DONE)


@router.get("/models")
def models() -> dict[str, Any]:
    """The one model this server answers with (some OpenAI tools list models first)."""
    return {"object": "list", "data": [
        {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "chatbot"}]}
