"""Hand-over rows: opening one, finding a conversation's open one, listing the open ones.

A hand-over is open while its status is ``pending`` (waiting for a person) or ``claimed`` (a
person has it); ``resolved`` and ``handed_back`` close it. While one is open the conversation's
status is ``handed_off`` (or ``closed``, when the customer closed the chat meanwhile).
``ChatService`` opens them (a HANDOFF reply, a customer's request) and, in the transaction that
logs a customer message, tells the agent side (``customer_wrote``); ``AgentDesk``
(``chatbot.conversations.agents``) claims and closes them and lists them as its inbox
(``list_open``). Every function here works in the caller's transaction or connection.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update
from sqlalchemy.orm import Session

from chatbot.conversations.events import record
from chatbot.conversations.models import Agent, Conversation, Handoff, Message, new_id, utcnow
from chatbot.conversations.views import ConversationView, ReadModel, UtcDatetime
from chatbot.errors import NotFoundError
from chatbot.types import Priority

OPEN = ("pending", "claimed")
PREVIEW_CHARS = 200


class InboxItem(ReadModel):
    """An open hand-over as the inbox lists it; ``conversation`` is the whole staff view
    (transcript, the bot's sources and reasons, the customer's reference) when asked for."""

    handoff_id: str
    conversation_id: str
    status: str  # pending | claimed
    priority: str
    reason: str
    requested_at: UtcDatetime
    claimed_by: str | None  # the agent's name
    claimed_at: UtcDatetime | None
    channel: str
    customer_ref: str | None
    conversation_status: str
    message_count: int
    last_customer_message: str
    conversation: ConversationView | None = None


def find_open(connection: Connection,
              conversation_id: str) -> Row[str, str, str | None, str] | None:
    """The conversation's open hand-over as (id, status, claimed_by, name: the claiming agent's
    name or None), or None when it has none."""
    return connection.execute(
        select(Handoff.id, Handoff.status, Handoff.claimed_by, Agent.name)
        .outerjoin(Agent, Agent.id == Handoff.claimed_by)
        .where(Handoff.conversation_id == conversation_id, Handoff.status.in_(OPEN))
        .order_by(Handoff.requested_at.desc()).limit(1)
    ).first()


def open_handoff(connection: Connection, conversation_id: str, reason: str,
                 priority: Priority = "normal") -> str:
    """Mark the conversation ``handed_off`` and return its open hand-over's id: the pending
    one (moved up to ``high`` when asked with ``high``: the customer grew frustrated while
    waiting), else a new one, announced as a ``handoff_created`` event."""
    changed = connection.execute(
        update(Conversation).where(Conversation.id == conversation_id)
        .values(status="handed_off")
    ).rowcount
    if not changed:
        raise NotFoundError(f"conversation {conversation_id} does not exist")
    pending = find_open(connection, conversation_id)
    if pending is not None:
        if priority == "high":
            connection.execute(update(Handoff).where(Handoff.id == pending.id)
                               .values(priority="high"))
        return str(pending.id)
    handoff_id = new_id()
    connection.execute(insert(Handoff), [dict(
        id=handoff_id, conversation_id=conversation_id, reason=reason,
        requested_at=utcnow(), assigned_to=None, resolved_at=None, priority=priority)])
    # The inbox, the agents' streams and the handoff.created webhook hear of it on commit.
    record(connection, conversation_id, "handoff_created",
           {"handoff_id": handoff_id, "reason": reason, "priority": priority})
    return handoff_id


def customer_wrote(connection: Connection, conversation_id: str, message_id: str,
                   text: str) -> str | None:
    """In the transaction that logs a customer message: while a hand-over is open the agent
    side is sent the message (``text``: as stored, i.e. redacted); returns the name of the agent
    who holds the conversation (the bot must stay silent), or None (it answers)."""
    found = find_open(connection, conversation_id)
    if found is None:
        return None
    record(connection, conversation_id, "customer_message", {
        "message_id": message_id, "text": text, "created_at": utcnow().isoformat()})
    return str(found.name) if found.status == "claimed" else None


def list_open(engine: Engine, *where: Any, order: tuple[Any, ...],
              limit: int) -> list[InboxItem]:
    """The hand-overs matching ``where``, in ``order``, as inbox items (without transcripts)."""
    count = (select(func.count(Message.id)).where(Message.conversation_id == Conversation.id)
             .correlate(Conversation).scalar_subquery())
    last = (select(Message.text).where(Message.conversation_id == Conversation.id,
                                       Message.role == "customer")
            .order_by(Message.created_at.desc()).limit(1)
            .correlate(Conversation).scalar_subquery())
    query = (select(Handoff, Conversation.channel, Conversation.customer_ref,
                    Conversation.status, Agent.name, count, last)
             .join(Conversation, Conversation.id == Handoff.conversation_id)
             .outerjoin(Agent, Agent.id == Handoff.claimed_by)
             .where(*where).order_by(*order).limit(limit))
    with Session(engine) as session:  # an ORM session: rows hold Handoff objects
        rows = session.execute(query).all()
    return [InboxItem(
        handoff_id=h.id, conversation_id=h.conversation_id, status=h.status,
        priority=h.priority, reason=h.reason, requested_at=h.requested_at,
        claimed_by=name, claimed_at=h.claimed_at, channel=channel, customer_ref=ref,
        conversation_status=status, message_count=int(n or 0),
        last_customer_message=_clip(text or ""),
    ) for h, channel, ref, status, name, n, text in rows]


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1].rstrip() + "…"
