"""Helpers of the learning-loop tests: conversations written straight into the log (through the
ORM) the way the service writes them, and the gift-wrapping conversation the tiny knowledge base
cannot answer. Fixtures are in this folder's conftest.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from chatbot.conversations.models import (
    Conversation,
    Feedback,
    Handoff,
    Message,
    RetrievalHit,
    new_id,
)

GIFT_ANSWER = ("Yes! Gift wrapping costs $5 an item: tick Gift wrap at checkout and add a note "
               "for the card.")

# (role, text, route): a bot route ending in "-" was rated thumbs-down; "faq:ID" cites an FAQ.
Turn = tuple[str, str] | tuple[str, str, str]


def write_conversation(engine: Engine, turns: Sequence[Turn], *,
                       started: datetime | None = None) -> tuple[str, list[str]]:
    """Log a conversation; returns its id and its messages' ids in order."""
    started = started or datetime.now(UTC) - timedelta(minutes=30)
    conversation_id = new_id()
    ids: list[str] = []
    with Session(engine) as session:
        session.add(Conversation(id=conversation_id, channel="web", status="open",
                                 started_at=started))
        session.flush()
        for i, turn in enumerate(turns):
            role, text = turn[0], turn[1]
            route = turn[2] if len(turn) > 2 else None  # type: ignore[misc]
            down = bool(route and route.endswith("-"))
            route = (route or "").rstrip("-") or None
            cited = None
            if route and route.startswith("faq:"):
                route, cited = "faq", route[4:]
            message_id = new_id()
            ids.append(message_id)
            session.add(Message(id=message_id, conversation_id=conversation_id, role=role,
                                text=text, route=route,
                                created_at=started + timedelta(seconds=10 * i)))
            session.flush()
            if cited:
                session.add(RetrievalHit(message_id=message_id, document_id="d-" + cited,
                                         record_id=cited, kind="faq", score=0.9, rank=1,
                                         cited=True))
            if down:
                session.add(Feedback(id=new_id(), message_id=message_id,
                                     conversation_id=conversation_id, rating="down",
                                     created_at=started + timedelta(seconds=10 * i + 5)))
            if route == "handoff":
                session.add(Handoff(id=new_id(), conversation_id=conversation_id,
                                    reason="customer asked for a human",
                                    requested_at=started + timedelta(seconds=10 * i)))
        session.commit()
    return conversation_id, ids


def gift_wrap_conversation(question: str = "Do you offer gift wrapping for presents?",
                           answer: str = GIFT_ANSWER) -> list[Turn]:
    """Fallback, hand-over, then a person answers."""
    return [("customer", question), ("bot", "I'm not sure.", "fallback"),
            ("customer", "can I talk to a human"), ("bot", "Passing you on.", "handoff"),
            ("agent", answer)]
