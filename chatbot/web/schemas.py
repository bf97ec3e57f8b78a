"""Request bodies and the web-only response bodies of the REST API (pydantic).

The records the API reads back (transcripts, conversation views, summaries, statistics,
sources, re-index status) are the read models of ``chatbot.conversations.views`` and
``chatbot.conversations.jobs``, used as response models as they are; only what exists for HTTP
alone is defined here. Request fields are limited here (lengths, enums); the message itself is
checked once, by ``ChatService`` (``chatbot.answering.inputs.check_message``), whose
InvalidRequestError becomes the 422. Control characters in any field never get this far: the
input guard (``chatbot.web.guard``) answers them with a 422 first. Texts are plain strings in
JSON: nothing here is ever HTML, and clients must insert them as text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from chatbot.conversations.service import ChatResult
from chatbot.conversations.views import ConversationSummary, Source, sources
from chatbot.types import Signals

Channel = Literal["web", "widget", "api"]
# The largest id, offset or event id a client may send: PostgreSQL's integer (and below
# SQLite's 64 bits), so a huge number is a 422 here, not an overflow in the database driver.
MAX_INT = 2**31 - 1


class SuggestionOut(BaseModel):
    """A question offered as a clickable chip: send ``question`` as the next message, with
    ``suggestion: {"faq_id"}`` so the click is counted."""

    faq_id: str
    question: str


class SuggestionClick(BaseModel):
    """The suggestion chip a message was sent by (logged: click-through statistics)."""

    faq_id: str = Field(min_length=1, max_length=200)


class OpeningSuggestions(BaseModel):
    suggestions: list[SuggestionOut] = Field(
        description="Questions to offer when a chat opens: the most asked of recent days, "
        "then the knowledge base's usual first questions (empty while they are still being "
        "built at start-up, or with CHATBOT_SUGGESTIONS=0).")


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
    suggestion: SuggestionClick | None = Field(
        None, description="Set when the message is a suggestion chip the customer clicked "
        "(the message is then the chip's question)."
    )


class SignalsOut(BaseModel):
    """What the customer's message says about their state (``chatbot.answering.signals``)."""

    sentiment: float = Field(description="-1 (negative) .. 1 (positive), VADER's compound.")
    frustration: float = Field(description="0..1, the fitted frustration score.")
    frustrated: bool = Field(description="The score crosses the frustration threshold: the "
                             "reply acknowledges it and offers a person.")

    @classmethod
    def of(cls, signals: Signals | None) -> SignalsOut | None:
        if signals is None:
            return None
        return cls(sentiment=round(signals.sentiment, 4),
                   frustration=round(signals.frustration, 4), frustrated=signals.frustrated)


class ChatResponse(BaseModel):
    conversation_id: str
    message_id: str = Field(description="The bot message's id: send feedback against it "
                            "(route agent: the customer's message; there is no bot message).")
    reply: str
    route: str = Field(description="faq, generated, fallback or handoff; agent while a person "
                       "from the support team has the conversation (the bot stayed silent and "
                       "reply says who will answer).")
    confidence: float
    sources: list[Source]
    handoff: bool = Field(description="True when the conversation was handed to a human.")
    signals: SignalsOut | None = Field(
        description="Signals of the customer's message; null when the server reads none "
        "(CHATBOT_SIGNALS=false).")
    agent: str | None = Field(None, description="Route agent: the name of the person who has "
                              "the conversation; their replies arrive on "
                              "GET /conversations/{id}/events.")
    suggestions: list[SuggestionOut] = Field(
        default_factory=list, description="Up to CHATBOT_SUGGESTIONS questions the customer is "
        "likely to ask next, to show as chips (none after a hand-over); a click sends the "
        "question with `suggestion: {faq_id}`.")

    @classmethod
    def of(cls, result: ChatResult) -> ChatResponse:
        """The /chat body of a logged round trip (also the SSE ``done`` event)."""
        reply = result.reply
        return cls(
            conversation_id=result.conversation_id, message_id=result.message_id,
            reply=reply.text, route=getattr(reply.route, "value", str(reply.route)),
            confidence=reply.confidence, sources=sources(reply), handoff=result.handoff,
            signals=SignalsOut.of(result.signals), agent=result.agent,
            suggestions=[SuggestionOut(faq_id=s.faq_id, question=s.question)
                         for s in getattr(reply, "suggestions", ())],
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
    notice: str = Field(description="What to tell the customer: when a person will answer "
                        "(soon, with an agent signed in during support hours; otherwise that "
                        "the conversation will wait). Show it as it is.")


class AgentReplyRequest(BaseModel):
    text: str = Field(description="The agent's message to the customer (plain text; the same "
                      "length limit as a customer message).")


class AgentActionResponse(BaseModel):
    conversation_id: str
    status: Literal["handed_back", "resolved"]
    agent: str


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
    reason: str | None = None  # why not ready: what is not loaded yet, why the database fails


class ErrorOut(BaseModel):
    error: str
    field: str | None = None
