"""Agents and their inbox: accounts, and what a person does with a hand-over.

Owns: agent accounts (``add`` prints a token once; only its SHA-256 is stored and a presented
token is compared in constant time), presence (``last_seen_at``, refreshed as the agent uses the
inbox) and availability (support hours + someone signed in: what a customer is promised at a
hand-over), the inbox (open hand-overs, high priority first, then oldest), and the actions on
a hand-over: claim, reply, hand back to the bot, resolve. Each action writes its conversation
event (``chatbot.conversations.events``) in the same transaction, so the customer's live stream,
the webhooks and the ``on_resolved`` callbacks see exactly what was committed.

A claim is a conditional UPDATE (``... WHERE status = 'pending'``): of two agents claiming at
once, one changes the row and the other changes nothing and is told who has it. While a hand-over
is claimed the bot stays silent (``chatbot.conversations.handoffs.customer_wrote`` tells
``ChatService`` as it logs the customer's message); hand-back and resolve return the
conversation to the bot. The hand-over rows themselves (opening, finding, listing) are
``chatbot.conversations.handoffs``. ``ChatService`` builds one ``AgentDesk`` and exposes it as
``service.agents``; it writes through the service's own write transactions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, case, func, insert, select, update

from chatbot.answering.inputs import check_message
from chatbot.answering.prompt import AGENT_HAS_IT_TEXT
from chatbot.config import Settings
from chatbot.conversations.availability import Availability, SupportHours, availability
from chatbot.conversations.events import Event, EventBus, Writing, record
from chatbot.conversations.handoffs import OPEN, InboxItem, find_open, list_open
from chatbot.conversations.models import Agent, Conversation, Handoff, Message, new_id, utcnow
from chatbot.conversations.views import ConversationView, ReadModel, UtcDatetime
from chatbot.errors import ConflictError, InvalidRequestError, NotFoundError
from chatbot.types import Reply

TOKEN_PREFIX = "agt_"
NAME_CHARS = 100
TOUCH_S = 30.0  # presence is written at most this often per agent


class AgentView(ReadModel):
    """An agent account (never its token or hash)."""

    id: str
    name: str
    created_at: UtcDatetime
    last_seen_at: UtcDatetime | None
    active: bool


class AgentMessage(ReadModel):
    message_id: str
    conversation_id: str
    agent: str
    text: str
    created_at: UtcDatetime


@dataclass(frozen=True)
class Resolution:
    """What ``on_resolved`` callbacks get: a person resolved the conversation's hand-over."""

    conversation_id: str
    handoff_id: str
    agent: str
    resolved_at: datetime


def hash_token(token: str) -> str:
    # The tokens are 256 random bits, so a fast hash is enough (nothing to brute-force).
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AgentDesk:
    """Agent accounts, availability, the inbox and the hand-over actions."""

    def __init__(self, settings: Settings, engine: Engine, bus: EventBus, writing: Writing,
                 read_conversation: Callable[[str], ConversationView] | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.bus = bus
        self._writing = writing
        self._read_conversation = read_conversation
        # Parsed now: bad hours stop the server at start with the fix, not at a hand-over.
        self.hours = SupportHours.parse(settings.support_hours, settings.support_timezone)

    # --- accounts ------------------------------------------------------------------------------
    def add(self, name: str) -> tuple[AgentView, str]:
        """Create an agent (or give a removed one a new start); returns it and its token, which
        is shown this once."""
        name = _check_name(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._writing() as connection:
            found = connection.execute(select(Agent).where(Agent.name == name)).first()
            if found is not None and found.active:
                raise ConflictError(f"an agent called {name!r} exists; remove it first or "
                                    "choose another name")
            values = dict(token_hash=hash_token(token), active=True, created_at=utcnow(),
                          last_seen_at=None)
            if found is None:
                connection.execute(insert(Agent).values(id=new_id(), name=name, **values))
            else:
                connection.execute(update(Agent).where(Agent.name == name).values(**values))
            row = connection.execute(select(Agent).where(Agent.name == name)).one()
            return AgentView.model_validate(row), token

    def list_agents(self) -> list[AgentView]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(Agent).order_by(Agent.name)).all()
        return [AgentView.model_validate(row) for row in rows]

    def remove(self, name: str) -> AgentView:
        """Deactivate an agent: the token stops working at once and their claimed hand-overs go
        back to the queue. The row stays, so the log keeps who answered what."""
        with self._writing() as connection:
            row = connection.execute(select(Agent).where(Agent.name == name)).one_or_none()
            if row is None:
                raise NotFoundError(f"no agent called {name!r} (see `chatbot agents list`)")
            connection.execute(update(Agent).where(Agent.id == row.id).values(
                active=False, token_hash=hash_token(secrets.token_urlsafe(32))))
            held = connection.execute(select(Handoff.id, Handoff.conversation_id).where(
                Handoff.claimed_by == row.id, Handoff.status == "claimed")).all()
            for handoff_id, conversation_id in held:
                # The conversation first, as every other writer locks it (no deadlock).
                connection.execute(select(Conversation.id).where(
                    Conversation.id == conversation_id).with_for_update())
                released = connection.execute(update(Handoff).where(
                    Handoff.id == handoff_id, Handoff.claimed_by == row.id,
                    Handoff.status == "claimed").values(
                    status="pending", claimed_by=None, claimed_at=None, assigned_to=None)).rowcount
                if released:
                    record(connection, conversation_id, "agent_left",
                           {"agent": row.name, "handoff_id": handoff_id})
            row = connection.execute(select(Agent).where(Agent.id == row.id)).one()
            return AgentView.model_validate(row)

    def authenticate(self, token: str | None) -> AgentView | None:
        """The active agent with this token (and they are now 'seen'), or None."""
        if not token:
            return None
        digest = hash_token(str(token))
        with self.engine.connect() as connection:
            row = connection.execute(select(Agent).where(Agent.token_hash == digest,
                                                         Agent.active.is_(True))).one_or_none()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        return self._touch(AgentView.model_validate(row))

    def refresh(self, agent_id: str) -> AgentView | None:
        """The agent again, if still active (a signed-in UI re-checks on every action)."""
        with self.engine.connect() as connection:
            row = connection.execute(select(Agent).where(Agent.id == agent_id,
                                                         Agent.active.is_(True))).one_or_none()
        return None if row is None else self._touch(AgentView.model_validate(row))

    def _touch(self, agent: AgentView) -> AgentView:
        now = utcnow()
        if agent.last_seen_at is None or now - agent.last_seen_at > timedelta(seconds=TOUCH_S):
            with self._writing() as connection:
                connection.execute(update(Agent).where(Agent.id == agent.id)
                                   .values(last_seen_at=now))
            agent = agent.model_copy(update={"last_seen_at": now})
        return agent

    # --- availability --------------------------------------------------------------------------
    def availability(self, now: datetime | None = None) -> Availability:
        """Who can answer now, and the sentence a customer is told at a hand-over."""
        now = now or utcnow()
        since = now - timedelta(minutes=self.settings.agent_online_minutes)
        with self.engine.connect() as connection:
            online = connection.scalar(select(func.count(Agent.id)).where(
                Agent.active.is_(True), Agent.last_seen_at >= since)) or 0
        return availability(self.hours, int(online), now)

    def with_notice(self, reply: Reply) -> Reply:
        """A hand-over reply with the availability sentence after it."""
        return replace(reply, text=f"{reply.text.rstrip()} {self.availability().notice}".strip())

    # --- the inbox ----------------------------------------------------------------------------
    def inbox(self, *, transcripts: bool = True, limit: int = 100) -> list[InboxItem]:
        """Open hand-overs: high priority first, then the longest waiting."""
        urgency = case((Handoff.priority == "high", 0), else_=1)
        rows = list_open(self.engine, Handoff.status.in_(OPEN),
                         order=(urgency, Handoff.requested_at, Handoff.id), limit=limit)
        return [self._with_transcript(row) if transcripts else row for row in rows]

    def item(self, conversation_id: str) -> InboxItem:
        """The conversation's open hand-over with its transcript (NotFoundError: none)."""
        rows = list_open(self.engine, Handoff.conversation_id == conversation_id,
                         Handoff.status.in_(OPEN), order=(Handoff.requested_at.desc(),),
                         limit=1)
        if not rows:
            raise NotFoundError(f"conversation {conversation_id} has no open hand-over")
        return self._with_transcript(rows[0])

    @classmethod
    def standalone(cls, settings: Settings, engine: Engine) -> AgentDesk:
        """A desk for tools without a server (``chatbot agents``): accounts, inbox listings
        without transcripts."""
        bus = EventBus(engine, settings)
        return cls(settings, engine, bus, lambda: bus.transaction(nullcontext()))

    def _with_transcript(self, item: InboxItem) -> InboxItem:
        if self._read_conversation is None:
            return item
        return item.model_copy(update={
            "conversation": self._read_conversation(item.conversation_id)})

    # --- actions ------------------------------------------------------------------------------
    def claim(self, conversation_id: str, agent: AgentView) -> InboxItem:
        """Take the hand-over (ConflictError naming who has it when another agent does)."""
        with self._writing() as connection:
            self._claim(connection, conversation_id, agent)
        return self.item(conversation_id)

    def reply(self, conversation_id: str, agent: AgentView, text: str) -> AgentMessage:
        """Write to the customer (claiming a waiting hand-over first); logged as role ``agent``
        with the agent's name, and sent to the customer's live stream."""
        text = check_message(text, self.settings.max_message_chars, field="text")
        with self._writing() as connection:
            self._claim(connection, conversation_id, agent)
            message_id, created = new_id(), utcnow()
            connection.execute(insert(Message).values(
                id=message_id, conversation_id=conversation_id, role="agent", text=text,
                created_at=created, agent_name=agent.name))
            record(connection, conversation_id, "agent_message", {
                "message_id": message_id, "agent": agent.name, "text": text,
                "created_at": created.isoformat()})
        return AgentMessage(message_id=message_id, conversation_id=conversation_id,
                            agent=agent.name, text=text, created_at=created)

    def handback(self, conversation_id: str, agent: AgentView) -> None:
        """Give the conversation back to the bot without resolving it."""
        self._close(conversation_id, agent, "handed_back", "agent_left")

    def resolve(self, conversation_id: str, agent: AgentView) -> Resolution:
        """The person solved it: the hand-over is resolved and the bot answers again. Fires
        ``conversation.resolved`` (webhook) and the ``on_resolved`` callbacks after commit."""
        handoff_id, ended = self._close(conversation_id, agent, "resolved", "resolved")
        return Resolution(conversation_id, handoff_id, agent.name, ended)

    def on_resolved(self, callback: Callable[[Resolution], None]) -> None:
        """Call ``callback(resolution)`` after each resolve committed by this process (in the
        resolving request's thread, once; an exception is logged, never raised to the agent).
        The learning loop subscribes here; it reads the transcript with
        ``service.conversation(resolution.conversation_id)``."""

        def handle(event: Event) -> None:
            if event.type == "resolved":
                at = event.data.get("at")
                callback(Resolution(event.conversation_id, str(event.data["handoff_id"]),
                                    str(event.data["agent"]),
                                    datetime.fromisoformat(at) if at else event.created_at))

        self.bus.on_event(handle)

    def state(self, conversation_id: str) -> dict[str, Any]:
        """The conversation as its customer's live stream reports it: ``status`` (open,
        handed_off, closed) and ``agent``, the name of the person who has it (or None)."""
        with self.engine.connect() as connection:
            status = connection.scalar(select(Conversation.status)
                                       .where(Conversation.id == conversation_id))
            found = find_open(connection, conversation_id)
        agent = found.name if found is not None and found.status == "claimed" else None
        return {"status": status, "agent": agent}

    def holding_text(self, agent_name: str) -> str:
        return AGENT_HAS_IT_TEXT.format(agent=agent_name)

    # --- internals ----------------------------------------------------------------------------
    def _current(self, connection: Connection, conversation_id: str) -> Any:
        """Lock the conversation (PostgreSQL; SQLite has one writer) and return its open
        hand-over (NotFoundError when the conversation does not exist or has none)."""
        exists = connection.execute(select(Conversation.id)
                                    .where(Conversation.id == conversation_id)
                                    .with_for_update()).first()
        if exists is None:
            raise NotFoundError(f"conversation {conversation_id} does not exist")
        found = find_open(connection, conversation_id)
        if found is None:
            raise NotFoundError(f"conversation {conversation_id} has no open hand-over "
                                "(resolved, handed back, or never handed over)")
        return found

    def _claim(self, connection: Connection, conversation_id: str, agent: AgentView) -> str:
        found = self._current(connection, conversation_id)
        if found.status == "claimed":
            if found.claimed_by == agent.id:
                return str(found.id)
            raise ConflictError(f"{found.name or 'another agent'} has already claimed "
                                f"conversation {conversation_id}")
        claimed = connection.execute(
            update(Handoff).where(Handoff.id == found.id, Handoff.status == "pending")
            .values(status="claimed", claimed_by=agent.id, claimed_at=utcnow(),
                    assigned_to=agent.name)).rowcount
        if not claimed:  # another agent's UPDATE won between our read and ours
            raise ConflictError(f"another agent has just claimed conversation {conversation_id}")
        record(connection, conversation_id, "agent_joined",
               {"agent": agent.name, "handoff_id": str(found.id)})
        return str(found.id)

    def _close(self, conversation_id: str, agent: AgentView, status: str,
               event: str) -> tuple[str, datetime]:
        ended = utcnow()
        with self._writing() as connection:
            found = self._current(connection, conversation_id)
            if found.status == "claimed" and found.claimed_by != agent.id:
                raise ConflictError(f"{found.name or 'another agent'} has this conversation; "
                                    "only they can hand it back or resolve it")
            closed = connection.execute(
                update(Handoff).where(Handoff.id == found.id, Handoff.status.in_(OPEN))
                .values(status=status, resolved_at=ended, claimed_by=agent.id,
                        claimed_at=func.coalesce(Handoff.claimed_at, ended),
                        assigned_to=agent.name)).rowcount
            if not closed:
                raise ConflictError(f"conversation {conversation_id} changed meanwhile; reload")
            # The bot answers again (a conversation the customer closed stays closed).
            connection.execute(update(Conversation).where(Conversation.id == conversation_id,
                                                          Conversation.status == "handed_off")
                               .values(status="open"))
            record(connection, conversation_id, event,
                   {"agent": agent.name, "handoff_id": str(found.id), "at": ended.isoformat()})
        return str(found.id), ended


def _check_name(name: str) -> str:
    name = " ".join(str(name).split())
    if not name:
        raise InvalidRequestError("an agent needs a name", field="name")
    if len(name) > NAME_CHARS:
        raise InvalidRequestError(f"an agent's name has at most {NAME_CHARS} characters",
                                  field="name")
    if any(not ch.isprintable() for ch in name):
        raise InvalidRequestError("an agent's name must be plain printable text", field="name")
    return name

