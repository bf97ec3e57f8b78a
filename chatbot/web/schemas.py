"""Request bodies and the web-only response bodies of the REST API (pydantic).

The records the API reads back (transcripts, conversation views, summaries, statistics,
sources, re-index status) are the read models of ``chatbot.conversations.views`` and
``chatbot.conversations.jobs``, used as response models as they are; only what exists for HTTP
alone is defined here. Request fields are limited here (lengths, enums); the message itself is
checked once, by ``ChatService`` (``chatbot.answering.inputs.check_message``), whose
InvalidRequestError becomes the 422. Texts are plain strings in JSON: nothing here is ever
HTML, and clients must insert them as text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from chatbot.conversations.service import ChatResult
from chatbot.conversations.views import ConversationSummary, Source, sources

Channel = Literal["web", "widget", "api"]


class ChatRequest(BaseModel):
    message: str = Field(
        description="The customer's message (plain text; the length limit is the server's "
        "max_message_chars setting, 4000 by default).",
        examples=["How long does shipping take?"],
    )
    conversation_id: str | None = Field(
        None, max_length=64, description="Continue this conversation; omit to start a new one."
    )
    channel: Channel = Field("api", description="Where the customer is writing from.")
    customer_ref: str | None = Field(
        None, max_length=200, description="Your reference for the customer (account id, email)."
    )


class ChatResponse(BaseModel):
    conversation_id: str
    message_id: str = Field(description="The bot message's id: send feedback against it.")
    reply: str
    route: str = Field(description="faq, generated, fallback or handoff.")
    confidence: float
    sources: list[Source]
    handoff: bool = Field(description="True when the conversation was handed to a human.")

    @classmethod
    def of(cls, result: ChatResult) -> ChatResponse:
        """The /chat body of a logged round trip (also the SSE ``done`` event)."""
        reply = result.reply
        return cls(
            conversation_id=result.conversation_id, message_id=result.message_id,
            reply=reply.text, route=getattr(reply.route, "value", str(reply.route)),
            confidence=reply.confidence, sources=sources(reply), handoff=result.handoff,
        )


class FeedbackRequest(BaseModel):
    message_id: str | None = Field(None, max_length=64, description="The bot message rated.")
    conversation_id: str | None = Field(None, max_length=64)
    rating: Literal["up", "down"] | None = None
    csat: int | None = Field(None, ge=1, le=5, description="Satisfaction score from 1 to 5.")
    comment: str | None = None


class FeedbackResponse(BaseModel):
    feedback_id: str


class HandoffRequest(BaseModel):
    conversation_id: str = Field(max_length=64)
    reason: str = Field("", description="Why the customer wants a human (optional).")


class HandoffResponse(BaseModel):
    handoff_id: str
    conversation_id: str
    status: str


class CloseResponse(BaseModel):
    conversation_id: str
    status: str
    ended_at: datetime


class ConversationPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ConversationSummary]


class ReindexRequest(BaseModel):
    full: bool = Field(False, description="Re-embed everything, not only what changed.")


class HealthOut(BaseModel):
    status: Literal["ready", "not ready"]
    index_version: str | None
    database: str
    version: str


class ErrorOut(BaseModel):
    error: str
    field: str | None = None
