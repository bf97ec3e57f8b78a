"""Storing frustration signals: on the customer's message row, rolled up on its conversation.

``ChatService`` reads a customer message's ``Signals`` (through the pipeline) before it logs the
message, so the row is written once, with them, before the pipeline answers. In the same
transaction ``rollup`` refreshes the conversation's ``sentiment_avg``, ``max_frustration`` and
``frustrated`` from its customer messages, so statistics, listings and the inbox read one row
per conversation instead of aggregating messages on every read.

The roll-up is recomputed from the messages by correlated subqueries (portable SQL, the same on
SQLite and PostgreSQL) rather than updated incrementally: it stays right however many writers
log messages to the conversation at once, and costs one indexed scan of one conversation.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Update, func, select, true, update

from chatbot.conversations.models import Conversation, Message
from chatbot.types import Signals

NO_SIGNAL_FIELDS: dict[str, Any] = dict(sentiment=None, frustration=None, frustrated=None,
                                        cues=None)
CUES_CHARS = 200  # the width of messages.cues


def message_fields(signals: Signals | None) -> dict[str, Any]:
    """The ``messages`` columns for a customer message's signals (all null without them)."""
    if signals is None:
        return dict(NO_SIGNAL_FIELDS)
    return dict(sentiment=round(float(signals.sentiment), 4),
                frustration=round(float(signals.frustration), 4),
                frustrated=bool(signals.frustrated),
                cues=",".join(signals.cues)[:CUES_CHARS] or None)


def rollup(conversation_id: str, signals: Signals) -> Update:
    """The UPDATE that folds the conversation's customer messages (this one already inserted)
    into its roll-up columns."""
    read = (Message.conversation_id == conversation_id, Message.sentiment.is_not(None))
    values: dict[str, Any] = dict(
        sentiment_avg=select(func.avg(Message.sentiment)).where(*read).scalar_subquery(),
        max_frustration=select(func.max(Message.frustration)).where(*read).scalar_subquery(),
    )
    if signals.frustrated:  # once frustrated, the conversation counts as frustrated
        values["frustrated"] = true()
    return update(Conversation).where(Conversation.id == conversation_id).values(**values)

