"""Reading the conversation log: the reading half of ``ChatService``.

``LogReader`` holds the service's reading methods (a conversation, the lists and counts of the
conversation browser, the export, the statistics); ``ChatService`` extends it with everything
that writes. Each call uses its own session; the queries themselves are
``chatbot.conversations.queries`` and ``chatbot.conversations.timeseries``, and what comes back
are the frozen read models of ``chatbot.conversations.views``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import selectinload

from chatbot.answering.privacy import Redactor
from chatbot.conversations.engine import make_sessionmaker
from chatbot.conversations.models import Conversation, Message
from chatbot.conversations.queries import (
    compute_stats,
    conversation_filters,
    export_lines,
    summarise,
    view_of,
)
from chatbot.conversations.timeseries import daily_stats, window
from chatbot.conversations.views import (
    ConversationSummary,
    ConversationView,
    Stats,
    StatsSeries,
    to_utc,
)
from chatbot.errors import InvalidRequestError, NotFoundError

CUSTOMER_REF_CHARS = 200  # the column's width


class LogReader:
    """Reads the conversation log (see the module docstring)."""

    def __init__(self, engine: Engine, redactor: Redactor) -> None:
        self.engine = engine
        self._sessions = make_sessionmaker(engine)
        self._redactor = redactor

    def conversation(self, conversation_id: str) -> ConversationView:
        """The whole conversation as staff see it (NotFoundError when there is none)."""
        with self._sessions() as session:
            conv = session.scalars(
                select(Conversation).where(Conversation.id == conversation_id).options(
                    selectinload(Conversation.messages).selectinload(Message.hits),
                    selectinload(Conversation.handoffs),
                    selectinload(Conversation.feedback),
                )
            ).first()
            if conv is None:
                raise NotFoundError(f"conversation {conversation_id} does not exist")
            return view_of(conv)

    def find_conversation(self, *, customer_ref: str, channel: str = "api") -> str | None:
        """The latest conversation of this customer on this channel that is not closed."""
        with self._sessions() as session:
            return session.scalars(
                select(Conversation.id).where(
                    Conversation.customer_ref == self._stored_ref(customer_ref),
                    Conversation.channel == channel,
                    Conversation.status != "closed",
                ).order_by(Conversation.started_at.desc()).limit(1)
            ).first()

    def list_conversations(self, *, status: str | None = None, channel: str | None = None,
                           since: datetime | None = None, until: datetime | None = None,
                           q: str | None = None, limit: int = 50,
                           offset: int = 0) -> list[ConversationSummary]:
        """Newest first, filtered by status, channel, start time and text in any message."""
        if not 1 <= limit <= 500:
            raise InvalidRequestError("limit must be between 1 and 500", field="limit")
        if offset < 0:
            raise InvalidRequestError("offset must not be negative", field="offset")
        where = conversation_filters(status, channel, since, until, q)
        with self._sessions() as session:
            convs = session.scalars(
                select(Conversation).where(*where)
                .order_by(Conversation.started_at.desc(), Conversation.id)
                .limit(limit).offset(offset)
            ).all()
            return summarise(session, list(convs))

    def count_conversations(self, *, status: str | None = None, channel: str | None = None,
                            since: datetime | None = None, until: datetime | None = None,
                            q: str | None = None) -> int:
        where = conversation_filters(status, channel, since, until, q)
        with self._sessions() as session:
            return int(session.scalar(select(func.count(Conversation.id)).where(*where)) or 0)

    def export(self, fmt: str = "jsonl", *, since: datetime | None = None,
               until: datetime | None = None) -> Iterator[str]:
        """Stream the log: CSV (one row per message) or JSONL (one conversation per line)."""
        if fmt not in ("csv", "jsonl"):
            raise InvalidRequestError(f"format must be csv or jsonl, not {fmt!r}", field="format")
        return export_lines(self._sessions, fmt, to_utc(since), to_utc(until),
                            redactor=self._redactor)

    def stats(self, since: datetime | None = None) -> Stats:
        with self._sessions() as session:
            return compute_stats(session, to_utc(since))

    def stats_series(self, since: date | None = None, until: date | None = None) -> StatsSeries:
        """Daily statistics (UTC days, inclusive; the last 30 days by default)."""
        first, last = window(since, until)
        with self._sessions() as session:
            return daily_stats(session, first, last)


    def _stored_ref(self, customer_ref: str | None) -> str | None:
        """The customer reference as stored: personal data pseudonymised, cut to the column."""
        stored = self._redactor.pseudonymise(customer_ref)
        return None if stored is None else stored[:CUSTOMER_REF_CHARS]
