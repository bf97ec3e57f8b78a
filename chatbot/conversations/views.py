"""The read models of the conversation log: one pydantic model per record, defined once.

The queries and ``ChatService`` return these; the web API uses them directly as response
models and the UI reads their attributes, so each record has one shape everywhere. They are
frozen and detached from any session (built from ORM rows with ``from_attributes``), and every
time in them is UTC-aware.

Where the customer and the admin see different parts of one record, the admin model extends
the customer's: ``Transcript`` / ``TranscriptMessage`` are what a customer may see of their own
conversation; ``ConversationView`` / ``MessageView`` add what only staff see (customer
reference, how each reply was produced, retrieval hits, hand-overs, feedback). Narrow a full
view with ``Transcript.of(view)`` before it reaches a customer.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from chatbot.answering.citations import visible_sources
from chatbot.types import Reply

SNIPPET_CHARS = 240


def to_utc(value: datetime | None) -> datetime | None:
    """UTC-aware; a naive time is taken as UTC (SQLite stores and returns naive UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(to_utc)]


class ReadModel(BaseModel):
    """The base of every read model (here, the agent desk's, the learning loop's): frozen,
    built from ORM rows or Core rows by attribute, and, since responses always carry every
    field, with defaulted fields marked required in the API schema too."""

    model_config = ConfigDict(frozen=True, from_attributes=True,
                              json_schema_serialization_defaults_required=True)


class Source(ReadModel):
    """A numbered source shown under an answer (n matches the [n] citations)."""

    n: int = Field(description="Citation number, as in [n] in the reply.")
    record_id: str
    title: str
    snippet: str
    source: str
    kind: str
    score: float


def sources(reply: Reply) -> list[Source]:
    """The sources a customer is shown under a reply: its cited FAQ entries, numbered as the
    reply's [n] citations (``chatbot.answering.citations``), each with a short snippet of its
    answer. A past dialogue is never among them (a customer never sees another customer's
    words); staff views keep every hit."""
    result = []
    for n, hit in enumerate(visible_sources(reply.sources), start=1):
        doc = hit.document
        snippet = doc.answer if len(doc.answer) <= SNIPPET_CHARS else (
            doc.answer[: SNIPPET_CHARS - 1].rstrip() + "…"
        )
        result.append(Source(n=n, record_id=doc.record_id, title=doc.question, snippet=snippet,
                             source=doc.source, kind=doc.kind, score=float(hit.score)))
    return result


class HitView(ReadModel):
    """A document retrieval returned for a bot message; cited marks the reply's sources."""

    document_id: str
    record_id: str
    source: str
    kind: str
    score: float
    dense_score: float | None
    keyword_score: float | None
    rank: int
    cited: bool


class TranscriptMessage(ReadModel):
    """A message as the customer sees it in their own transcript."""

    id: str
    role: str
    text: str
    created_at: UtcDatetime
    route: str | None
    confidence: float | None
    rating: str | None = None  # the latest thumbs up/down on this message (not an ORM column)
    agent_name: str | None = None  # role agent: the support-team member who wrote it


class MessageView(TranscriptMessage):
    """A message with how it was produced and what retrieval returned (staff only)."""

    latency_ms: float | None
    model: str | None
    index_version: str | None
    reason: str | None
    hits: tuple[HitView, ...]
    # Signals of a customer message (null on bot and agent messages, or signals off).
    sentiment: float | None = None
    frustration: float | None = None
    frustrated: bool | None = None
    cues: str | None = None  # comma-separated cue names


class HandoffView(ReadModel):
    id: str
    reason: str
    requested_at: UtcDatetime
    assigned_to: str | None
    resolved_at: UtcDatetime | None
    priority: str = "normal"  # "high" for a frustrated customer
    # pending | claimed | resolved | handed_back (chatbot.conversations.agents); resolved_at is
    # when it ended either way, assigned_to the agent who claimed it.
    status: str = "pending"
    claimed_at: UtcDatetime | None = None


class FeedbackView(ReadModel):
    id: str
    message_id: str | None
    rating: str | None
    csat: int | None
    comment: str | None
    created_at: UtcDatetime


class Transcript(ReadModel):
    """A conversation as its customer may see it: no customer reference, hits or reasons."""

    id: str
    channel: str
    status: str
    started_at: UtcDatetime
    ended_at: UtcDatetime | None
    messages: tuple[TranscriptMessage, ...]

    @classmethod
    def of(cls, view: Transcript) -> Transcript:
        """Only the customer's fields of a (possibly fuller) view. Re-validating from a dump
        drops every admin field, nested ones included (unknown keys are ignored)."""
        return cls.model_validate(view.model_dump())


class ConversationView(Transcript):
    """A whole conversation for staff: the transcript plus the admin-only records."""

    customer_ref: str | None
    language: str | None
    # The roll-up of the customer messages' signals.
    sentiment_avg: float | None = None
    max_frustration: float | None = None
    frustrated: bool = False
    messages: tuple[MessageView, ...]
    handoffs: tuple[HandoffView, ...]
    feedback: tuple[FeedbackView, ...]


class ConversationSummary(ReadModel):
    """A row of the conversation browser."""

    id: str
    channel: str
    customer_ref: str | None
    status: str
    started_at: UtcDatetime
    ended_at: UtcDatetime | None
    message_count: int
    last_message_at: UtcDatetime | None
    preview: str  # the start of the first customer message
    frustrated: bool = False  # a customer message in it was frustrated


class Stats(ReadModel):
    """Statistics over the conversations (and messages) since a time, all time when ``since``
    is null. A rate is null when its denominator is zero."""

    # The definitions of the rates are in chatbot.conversations.queries (compute_stats).

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
    # Over conversations with signals: the mean of each one's average customer sentiment, and
    # the share with a frustrated customer message.
    sentiment_avg: float | None = None
    frustrated_rate: float | None = None
    # Suggested questions: bot replies that offered some, customer messages sent by clicking
    # one, and clicks over offers (the click-through rate).
    suggestions_offered: int = 0
    suggestion_clicks: int = 0
    suggestion_click_rate: float | None = None
    since: datetime | None = None


class StatsDay(ReadModel):
    """One day of the statistics time series (UTC days, by conversation start)."""

    day: date
    conversations: int
    deflection_rate: float | None
    handoff_rate: float | None
    sentiment_avg: float | None
    frustrated_rate: float | None


class StatsSeries(ReadModel):
    """Daily statistics from ``since`` to ``until`` (both UTC days, inclusive); every day is
    present, with zero conversations and null rates when nothing happened."""

    since: date
    until: date
    days: tuple[StatsDay, ...]
