"""The SQL schema of the conversation log, as SQLAlchemy 2 declarative models.

These classes describe the tables; the Alembic migrations in ``migrations/`` own the schema in
a real database (``chatbot db upgrade``), and a test checks that ``upgrade head`` matches these
models exactly. Nothing here opens a connection.

Enumerated columns are plain strings guarded by CHECK constraints rather than native enums:
the values read the same in SQLite and PostgreSQL, and adding a value is a one-line migration.
Timestamps are stored in UTC (SQLite hands them back naive; the read models of
``chatbot.conversations.views`` re-attach UTC).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from chatbot.types import PRIORITIES

CHANNELS = ("web", "widget", "api")
CONVERSATION_STATUSES = ("open", "handed_off", "closed")
MESSAGE_ROLES = ("customer", "bot", "agent")
# A hand-over waits (pending), is taken by one agent (claimed), then ends: resolved by the agent
# or handed back to the bot (handed_back). ``resolved_at`` is when it ended, either way.
HANDOFF_STATUSES = ("pending", "claimed", "resolved", "handed_back")
WEBHOOK_STATUSES = ("pending", "delivered", "failed")
RATINGS = ("up", "down")

# Deterministic constraint names: Alembic batch mode on SQLite and later migrations need them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    """A random UUID as a 36-character string (portable across SQLite and PostgreSQL)."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Conversation(Base):
    """One customer's conversation with the bot on one channel."""

    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint(_one_of("channel", CHANNELS), name="channel"),
        CheckConstraint(_one_of("status", CONVERSATION_STATUSES), name="status"),
        Index("ix_conversations_started_at", "started_at"),
        Index("ix_conversations_status", "status"),
        Index("ix_conversations_channel", "channel"),
        Index("ix_conversations_customer_ref", "customer_ref"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    channel: Mapped[str] = mapped_column(String(16))
    customer_ref: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="open")
    language: Mapped[str | None] = mapped_column(String(16))
    # The roll-up of the customer messages' signals, kept by the service as each is logged:
    # their mean sentiment, their highest frustration and whether any was frustrated.
    sentiment_avg: Mapped[float | None] = mapped_column(Float)
    max_frustration: Mapped[float | None] = mapped_column(Float)
    frustrated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation", order_by="Message.created_at", cascade="all, delete-orphan"
    )
    handoffs: Mapped[list[Handoff]] = relationship(
        back_populates="conversation", order_by="Handoff.requested_at", cascade="all, delete-orphan"
    )
    feedback: Mapped[list[Feedback]] = relationship(
        back_populates="conversation", order_by="Feedback.created_at", cascade="all, delete-orphan"
    )


class Message(Base):
    """A customer, bot or human-agent message. Bot messages carry how they were produced."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(_one_of("role", MESSAGE_ROLES), name="role"),
        Index("ix_messages_conversation_id_created_at", "conversation_id", "created_at"),
        Index("ix_messages_created_at", "created_at"),
        Index("ix_messages_route", "route"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    route: Mapped[str | None] = mapped_column(String(16))
    confidence: Mapped[float | None] = mapped_column(Float)
    model: Mapped[str | None] = mapped_column(String(200))
    index_version: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    agent_name: Mapped[str | None] = mapped_column(String(100))  # who wrote an agent message
    # Signals of a customer message (chatbot.types.Signals); null on bot and agent messages.
    sentiment: Mapped[float | None] = mapped_column(Float)
    frustration: Mapped[float | None] = mapped_column(Float)
    frustrated: Mapped[bool | None] = mapped_column(Boolean)
    cues: Mapped[str | None] = mapped_column(String(200))  # comma-separated cue names
    # Suggested questions (migration 0005): on a bot message the FAQ ids offered as chips under
    # it (comma-separated, as shown); on a customer message the chip's FAQ id when it was sent
    # by a click. Click-through = clicks / bot messages that offered some.
    suggestions: Mapped[str | None] = mapped_column(Text)
    suggested_faq_id: Mapped[str | None] = mapped_column(String(200))

    conversation: Mapped[Conversation] = relationship(back_populates="messages")
    hits: Mapped[list[RetrievalHit]] = relationship(
        back_populates="message", order_by="RetrievalHit.rank", cascade="all, delete-orphan"
    )


class RetrievalHit(Base):
    """A document retrieval returned for a bot message; ``cited`` marks the reply's sources."""

    __tablename__ = "retrieval_hits"
    __table_args__ = (
        Index("ix_retrieval_hits_message_id", "message_id"),
        Index("ix_retrieval_hits_document_id", "document_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    document_id: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(500), default="")
    kind: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    dense_score: Mapped[float | None] = mapped_column(Float)
    keyword_score: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)
    cited: Mapped[bool] = mapped_column(Boolean, default=False)

    message: Mapped[Message] = relationship(back_populates="hits")


class Feedback(Base):
    """Thumbs up/down on a message, or a CSAT score and comment on a conversation."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint(f"rating IS NULL OR {_one_of('rating', RATINGS)}", name="rating"),
        CheckConstraint("csat IS NULL OR (csat >= 1 AND csat <= 5)", name="csat"),
        Index("ix_feedback_conversation_id", "conversation_id"),
        Index("ix_feedback_message_id", "message_id"),
        Index("ix_feedback_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    message_id: Mapped[str | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    rating: Mapped[str | None] = mapped_column(String(8))
    csat: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="feedback")


class Handoff(Base):
    """A request to pass the conversation to a human, and what became of it."""

    __tablename__ = "handoffs"
    __table_args__ = (
        CheckConstraint(_one_of("priority", PRIORITIES), name="priority"),
        CheckConstraint(_one_of("status", HANDOFF_STATUSES), name="status"),
        Index("ix_handoffs_conversation_id", "conversation_id"),
        Index("ix_handoffs_requested_at", "requested_at"),
        Index("ix_handoffs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    reason: Mapped[str] = mapped_column(Text, default="")
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    assigned_to: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # "high" for a frustrated customer: agents pick those up first.
    priority: Mapped[str] = mapped_column(String(8), default="normal", server_default="normal")
    # Who has it (chatbot.conversations.agents claims it with a conditional UPDATE, so two
    # agents cannot both hold it); ``assigned_to`` keeps that agent's name for the log.
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    claimed_by: Mapped[str | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the learning loop (chatbot.learning.loop) read the resolved conversation; null until
    # then, so a server starting reads what was resolved while no process could.
    learned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    conversation: Mapped[Conversation] = relationship(back_populates="handoffs")


class Agent(Base):
    """A person of the support team who answers hand-overs. The token is shown once and stored
    only as its SHA-256 hash; a removed agent is kept (inactive) for the log's sake."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ConversationEvent(Base):
    """Something that happened in a conversation for the other side to see live (an agent
    joined, replied, left; the customer wrote; resolved). ``id`` only grows: it is the SSE
    event id a client resumes from with Last-Event-ID. ``data`` is JSON text."""

    __tablename__ = "conversation_events"
    __table_args__ = (
        Index("ix_conversation_events_conversation_id_id", "conversation_id", "id"),
        # Never reuse an id (SQLite would reuse the highest after a delete without it).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One outgoing webhook call (an event to one URL) and how it went: the admin's log."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_one_of("status", WEBHOOK_STATUSES), name="status"),
        Index("ix_webhook_deliveries_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    event: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AlertState(Base):
    """A monitoring alert's state, one row per alert (``chatbot.conversations.alerts``), shared
    by every replica: firing is a conditional UPDATE of this row, so one crossing fires once
    however many processes evaluate it. The last reading is kept for the admin banner."""

    __tablename__ = "alert_states"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # fired/recovered
    fired_count: Mapped[int] = mapped_column(Integer, default=0)
    evaluated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    conversations: Mapped[int | None] = mapped_column(Integer)  # in the last evaluated window
    frustrated: Mapped[int | None] = mapped_column(Integer)
    share: Mapped[float | None] = mapped_column(Float)


# --- the learning loop (chatbot.learning) ------------------------------------------------------
# A suggested FAQ waits for the admin (pending), then becomes a new entry of the knowledge base
# (approved, ``record_id`` sug-<id>), adds its phrasings to the existing FAQ it is linked to
# (merged_into_faq, ``record_id`` that FAQ's id), or is dropped (rejected).
SUGGESTION_STATUSES = ("pending", "approved", "rejected", "merged_into_faq")


class FaqSuggestion(Base):
    """A suggested FAQ learnt from agents' answers; ``count`` is how many conversations asked
    it. ``linked_faq_id`` names an existing FAQ that missed these phrasings."""

    __tablename__ = "faq_suggestions"
    __table_args__ = (
        CheckConstraint(_one_of("status", SUGGESTION_STATUSES), name="status"),
        Index("ix_faq_suggestions_status", "status"),
        Index("ix_faq_suggestions_updated_at", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    count: Mapped[int] = mapped_column(Integer, default=1)
    linked_faq_id: Mapped[str | None] = mapped_column(String(200))
    link_score: Mapped[float | None] = mapped_column(Float)  # why it was linked (a cosine)
    record_id: Mapped[str | None] = mapped_column(String(200))  # of the approved knowledge
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    sources: Mapped[list[FaqSuggestionSource]] = relationship(
        back_populates="suggestion", order_by="FaqSuggestionSource.id",
        cascade="all, delete-orphan")


class FaqSuggestionSource(Base):
    """One customer question (and the agent's answer to it) behind a suggestion. It goes with
    its conversation when that is deleted; one customer message feeds at most one suggestion."""

    __tablename__ = "faq_suggestion_sources"
    __table_args__ = (
        Index("ix_faq_suggestion_sources_suggestion_id", "suggestion_id"),
        Index("ix_faq_suggestion_sources_conversation_id", "conversation_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    suggestion_id: Mapped[int] = mapped_column(
        ForeignKey("faq_suggestions.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    suggestion: Mapped[FaqSuggestion] = relationship(back_populates="sources")
