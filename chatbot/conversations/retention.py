"""Deleting conversations: one on request, and every one past the retention period.

Owns the delete side of the conversation log: ``delete_conversations`` (what
``ChatService.delete_conversation``, the admin ``DELETE /api/v1/admin/conversations/{id}`` and
the retention purge use), ``purge`` (conversations whose last activity is older than a number
of days, ``CHATBOT_RETENTION_DAYS``) and ``RetentionJob``, the server's periodic purge.

What is deleted is read from the schema, not listed here: every row of every table that
references the conversation through a foreign key, directly (messages, feedback, hand-overs)
or through another such row (retrieval hits of its messages, feedback on its messages), deepest
first, then the conversation, all in one transaction. A table added later is covered the same
way; a foreign key declared ``ON DELETE SET NULL`` is left to the database (such a row is meant
to outlive the conversation). The tests check that no row of a deleted conversation remains in
any table.

"Last activity" is the latest of the conversation's start, its end and its messages, so a
conversation started long ago that is still going on is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Table, delete, exists, or_, select

from chatbot.conversations.events import Writing
from chatbot.conversations.models import Base, Conversation, Message, utcnow
from chatbot.conversations.periodic import PeriodicJob
from chatbot.errors import InvalidRequestError

log = logging.getLogger(__name__)

PURGE_BATCH = 200  # conversations per transaction: SQLite's one writer is never held for long


def _doomed(conversation_ids: Sequence[str]) -> list[tuple[Table, ColumnElement[bool]]]:
    """(table, which of its rows go) for every table reached from ``conversations`` through
    foreign keys that do not say SET NULL, children before parents."""
    conversations = Conversation.__table__
    assert isinstance(conversations, Table)
    where: dict[Table, ColumnElement[bool]] = {
        conversations: conversations.c.id.in_(conversation_ids)}
    for table in Base.metadata.sorted_tables:  # parents before children
        links = [
            fk.parent.in_(select(fk.column).where(where[fk.column.table]))
            for fk in table.foreign_keys
            if fk.column.table in where and fk.column.table is not table
            and (fk.ondelete or "").upper() != "SET NULL"
        ]
        if links and table is not conversations:
            where[table] = or_(*links)
    return [(table, where[table]) for table in reversed(Base.metadata.sorted_tables)
            if table in where]


def delete_conversations(connection: Connection, conversation_ids: Sequence[str]) -> int:
    """Delete these conversations and every row of theirs (see the module docstring) in the
    caller's transaction; returns how many conversations there were."""
    if not conversation_ids:
        return 0
    deleted = 0
    for table, where in _doomed(conversation_ids):
        count = connection.execute(delete(table).where(where)).rowcount
        if table is Conversation.__table__:
            deleted = count
    return deleted


def stale_conversations(connection: Connection, cutoff: datetime, limit: int) -> list[str]:
    """Ids of up to ``limit`` conversations with no activity since ``cutoff``."""
    recent_message = exists().where(Message.conversation_id == Conversation.id,
                                    Message.created_at >= cutoff)
    return list(connection.scalars(
        select(Conversation.id).where(
            Conversation.started_at < cutoff,
            or_(Conversation.ended_at.is_(None), Conversation.ended_at < cutoff),
            ~recent_message,
        ).order_by(Conversation.started_at).limit(limit)
    ))


def purge(writing: Writing, older_than_days: float, *, now: datetime | None = None) -> int:
    """Delete every conversation whose last activity is more than ``older_than_days`` ago, a
    batch per transaction; returns how many were deleted."""
    if not older_than_days > 0:
        raise InvalidRequestError("the age to purge from must be a positive number of days "
                                  "(a retention of 0 days means keep forever)",
                                  field="older_than_days")
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    total = 0
    while True:
        with writing() as connection:
            ids = stale_conversations(connection, cutoff, PURGE_BATCH)
            total += delete_conversations(connection, ids)
        if len(ids) < PURGE_BATCH:
            return total


class RetentionJob(PeriodicJob):
    """Calls ``purge_once()`` now and then every ``interval_s`` seconds in a daemon thread,
    until ``stop()``. A failed purge is logged and tried again at the next interval."""

    def __init__(self, purge_once: Callable[[], int], interval_s: float) -> None:
        def run() -> None:
            deleted = purge_once()
            if deleted:
                log.info("retention: deleted %d conversation(s)", deleted)

        super().__init__(run, interval_s, name="retention", what="retention purge")
