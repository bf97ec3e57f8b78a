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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

CHANNELS = ("web", "widget", "api")
CONVERSATION_STATUSES = ("open", "handed_off", "closed")
MESSAGE_ROLES = ("customer", "bot", "agent")
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
        Index("ix_handoffs_conversation_id", "conversation_id"),
        Index("ix_handoffs_requested_at", "requested_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    reason: Mapped[str] = mapped_column(Text, default="")
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    assigned_to: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    conversation: Mapped[Conversation] = relationship(back_populates="handoffs")
