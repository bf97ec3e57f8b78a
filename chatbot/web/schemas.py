"""Request and response bodies of the REST API (pydantic), i.e. the API's public contract.

Only the shapes live here; ``chatbot.web.app`` maps them to and from ``ChatService`` calls. Texts
are plain strings in JSON: nothing here is ever HTML, and clients must insert them as text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Channel = Literal["web", "widget", "api"]


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


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

    _check_message = field_validator("message")(_not_blank)


class SourceOut(BaseModel):
    n: int = Field(description="Citation number, as in [n] in the reply.")
    record_id: str
    title: str
    snippet: str
    source: str
    kind: str
    score: float


class ChatResponse(BaseModel):
    conversation_id: str
    message_id: str = Field(description="The bot message's id: send feedback against it.")
    reply: str
    route: str = Field(description="faq, generated, fallback or handoff.")
    confidence: float
    sources: list[SourceOut]
    handoff: bool = Field(description="True when the conversation was handed to a human.")


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


class HitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    document_id: str
    record_id: str
    source: str
    kind: str
    score: float
    dense_score: float | None
    keyword_score: float | None
    rank: int
    cited: bool


class MessageOut(BaseModel):
    """A message as the customer-facing API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    role: str
    text: str
    created_at: datetime
    route: str | None
    confidence: float | None
    rating: str | None


class ConversationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    channel: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    messages: list[MessageOut]


class AdminMessageOut(MessageOut):
    latency_ms: float | None
    model: str | None
    index_version: str | None
    reason: str | None
    hits: list[HitOut]


class HandoffOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    reason: str
    requested_at: datetime
    assigned_to: str | None
    resolved_at: datetime | None


class FeedbackOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    message_id: str | None
    rating: str | None
    csat: int | None
    comment: str | None
    created_at: datetime


class AdminConversationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    channel: str
    customer_ref: str | None
    status: str
    language: str | None
    started_at: datetime
    ended_at: datetime | None
    messages: list[AdminMessageOut]
    handoffs: list[HandoffOut]
    feedback: list[FeedbackOut]


class ConversationSummaryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    channel: str
    customer_ref: str | None
    status: str
    started_at: datetime
    ended_at: datetime | None
    message_count: int
    last_message_at: datetime | None
    preview: str


class ConversationPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ConversationSummaryOut]


class StatsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    conversations: int
    messages: int
    bot_messages: int
    deflection_rate: float | None
    fallback_rate: float | None
    handoff_rate: float | None
    csat_avg: float | None
    thumbs_up_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    since: datetime | None


class ReindexRequest(BaseModel):
    full: bool = Field(False, description="Re-embed everything, not only what changed.")


class ReindexStatusOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    state: str
    stage: str
    done: int
    total: int
    fraction: float
    full: bool
    started_at: datetime | None
    finished_at: datetime | None
    summary: str
    report: dict[str, object] | None
    error: str | None


class HealthOut(BaseModel):
    status: Literal["ready", "not ready"]
    index_version: str | None
    database: str
    version: str


class ErrorOut(BaseModel):
    error: str
    field: str | None = None
