"""OpenAI-compatible ``POST /v1/chat/completions``, so OpenAI clients and tools can use the bot.

The last ``user`` message is the question; earlier user/assistant messages are the history
(system messages are ignored: the bot's behaviour is set by its own prompt and policy). Each
request is one logged round trip through ``ChatService`` on the ``api`` channel: with a
``user`` field the requests of that user continue one conversation, without it each request
opens its own. Responses follow OpenAI's shapes (``chat.completion`` and, when streaming,
``chat.completion.chunk`` events ending in ``data: [DONE]``); the bot's own fields (route,
confidence, sources, conversation id) ride along under an extra ``chatbot`` key. Token usage is
not reported: the FAQ route produces no tokens to count.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from chatbot.conversations.service import ChatResult, ChatService, sources
from chatbot.errors import ChatbotError, InvalidRequestError
from chatbot.types import Turn

log = logging.getLogger(__name__)

DEFAULT_MODEL = "chatbot"


class ContentPart(BaseModel):
    type: str = "text"
    text: str | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class CompletionRequest(BaseModel):
    model: str = Field(DEFAULT_MODEL, description="Echoed back; the server's model answers.")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = Field(
        None, max_length=200, description="Continues this user's conversation."
    )
    # temperature, max_tokens, etc. are accepted and ignored (extra fields are allowed).


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
    return {
        "conversation_id": result.conversation_id, "message_id": result.message_id,
        "route": getattr(reply.route, "value", str(reply.route)), "confidence": reply.confidence,
        "handoff": result.handoff, "sources": [vars(s) for s in sources(reply)],
    }


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any],
           finish: str | None = None, **extra: Any) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def openai_router(service: ChatService, rate_limit: Callable[..., Any]) -> APIRouter:
    router = APIRouter(tags=["openai-compatible"])

    def conversation_for(user: str | None) -> str | None:
        return service.find_conversation(customer_ref=user, channel="api") if user else None

    @router.post("/chat/completions", dependencies=[Depends(rate_limit)])
    def chat_completions(request: CompletionRequest) -> Any:
        """OpenAI Chat Completions, streaming (SSE) or not."""
        question, history = _question_and_history(request.messages)
        conversation_id = conversation_for(request.user)
        created = int(time.time())
        if not request.stream:
            result = service.chat(question, conversation_id=conversation_id, channel="api",
                                  customer_ref=request.user, history=history)
            return {
                "id": f"chatcmpl-{result.message_id}", "object": "chat.completion",
                "created": created, "model": result.reply.model or request.model,
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": result.reply.text}}],
                "chatbot": _extension(result),
            }
        stream = service.chat_stream(question, conversation_id=conversation_id, channel="api",
                                     customer_ref=request.user, history=history)
        cid = f"chatcmpl-{stream.customer_message_id}"

        def events() -> Iterator[str]:
            try:
                yield _chunk(cid, created, request.model, {"role": "assistant", "content": ""})
                for item in stream:
                    if isinstance(item, str):
                        yield _chunk(cid, created, request.model, {"content": item})
                    else:
                        yield _chunk(cid, created, request.model, {}, "stop",
                                     chatbot=_extension(item))
            except Exception as error:
                log.warning("completion stream failed", exc_info=error)
                message = str(error) if isinstance(error, ChatbotError) else "internal error"
                error_body = {"error": {"message": message, "type": "server_error"}}
                yield f"data: {json.dumps(error_body)}\n\n"
            finally:
                stream.close()
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @router.get("/models")
    def models() -> dict[str, Any]:
        """The one model this server answers with (some OpenAI tools list models first)."""
        return {"object": "list", "data": [
            {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "chatbot"}]}

    return router
