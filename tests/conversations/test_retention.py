"""Deleting conversations, on SQLite and PostgreSQL: after a delete or a purge no row of the
conversation remains in any table (every table of the schema is checked through its foreign
keys, so tables added later are covered), other conversations are untouched, and the periodic
job purges by itself."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from sqlalchemy import Engine, func, insert, select, update
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.conversations import retention
from chatbot.conversations.models import (
    Base,
    Conversation,
    ConversationEvent,
    Feedback,
    Handoff,
    Message,
    RetrievalHit,
    utcnow,
)
from chatbot.conversations.retention import RetentionJob
from chatbot.conversations.service import ChatService
from chatbot.errors import InvalidRequestError, NotFoundError


@pytest.fixture
def service(settings: Settings, migrated_engine: Engine) -> ChatService:  # noqa: F811
    return ChatService(settings, StandInPipeline(), migrated_engine)


def owned_rows(engine: Engine, conversation_id: str) -> dict[str, set[Any]]:
    """Primary keys of every row that belongs to the conversation, table by table: the
    conversation, then any row whose foreign key points at a row already found."""
    owned: dict[str, set[Any]] = {"conversations": {conversation_id}}
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            key = next(iter(table.primary_key.columns))
            found: set[Any] = set()
            for fk in table.foreign_keys:
                parent = fk.column.table.name
                if parent != table.name and owned.get(parent):
                    found |= set(connection.scalars(
                        select(key).where(fk.parent.in_(owned[parent]))))
            if found and table.name != "conversations":
                owned[table.name] = found
    return owned


def remaining(engine: Engine, owned: dict[str, set[Any]]) -> dict[str, int]:
    """How many of those rows still exist, per table (only tables with some left)."""
    left = {}
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if not owned.get(table.name):
                continue
            key = next(iter(table.primary_key.columns))
            count = connection.scalar(select(func.count()).select_from(table)
                                      .where(key.in_(owned[table.name])))
            if count:
                left[table.name] = count
    return left


def full_conversation(service: ChatService, engine: Engine) -> str:
    """A conversation with rows in every table that can hold one: messages, hits, feedback on
    a message and on the conversation, a hand-over and a live event."""
    first = service.chat("how long is delivery", customer_ref="jane@example.com")
    cid = first.conversation_id
    service.chat("can i pay with paypal", conversation_id=cid)
    service.feedback(message_id=first.message_id, rating="up")
    service.feedback(conversation_id=cid, csat=4, comment="call me on +1 415 555 2671")
    service.handoff(conversation_id=cid, reason="wants a person")
    with engine.begin() as connection:
        connection.execute(insert(ConversationEvent), [dict(
            conversation_id=cid, type="agent_message", data='{"text": "hello"}',
            created_at=utcnow())])
    return cid


def test_delete_leaves_no_row_of_the_conversation_and_keeps_the_others(
        service: ChatService, migrated_engine: Engine) -> None:  # noqa: F811
    cid = full_conversation(service, migrated_engine)
    other = full_conversation(service, migrated_engine)
    owned = owned_rows(migrated_engine, cid)
    # Not vacuous: the conversation had rows in every table of the log.
    for table in ("conversations", "messages", "retrieval_hits", "feedback", "handoffs",
                  "conversation_events"):
        assert owned.get(table), table
    kept = owned_rows(migrated_engine, other)

    service.delete_conversation(cid)

    assert remaining(migrated_engine, owned) == {}
    with migrated_engine.connect() as connection:  # and by the columns themselves
        for model in (Message, Feedback, Handoff, ConversationEvent):
            assert not connection.scalar(select(func.count()).select_from(model)
                                         .where(model.conversation_id == cid))
        message_ids = owned["messages"]
        assert not connection.scalar(select(func.count(RetrievalHit.id))
                                     .where(RetrievalHit.message_id.in_(message_ids)))
    assert remaining(migrated_engine, kept) == {k: len(v) for k, v in kept.items()}
    with pytest.raises(NotFoundError):
        service.conversation(cid)
    assert service.conversation(other).id == other


def test_deleting_an_unknown_conversation_is_not_found(service: ChatService) -> None:
    with pytest.raises(NotFoundError, match="no-such-id"):
        service.delete_conversation("no-such-id")


def _age(engine: Engine, conversation_id: str, days: float,
         messages_days: float | None = None) -> None:
    """Move the conversation (and its messages, feedback, hand-overs) ``days`` into the past;
    ``messages_days`` moves its latest message only that far back."""
    then = utcnow() - timedelta(days=days)
    with engine.begin() as connection:
        connection.execute(update(Conversation).where(Conversation.id == conversation_id)
                           .values(started_at=then, ended_at=None))
        connection.execute(update(Message).where(Message.conversation_id == conversation_id)
                           .values(created_at=then))
        if messages_days is not None:
            latest = connection.scalar(select(Message.id).where(
                Message.conversation_id == conversation_id).limit(1))
            connection.execute(update(Message).where(Message.id == latest).values(
                created_at=utcnow() - timedelta(days=messages_days)))


def test_purge_deletes_conversations_inactive_past_the_retention(
        service: ChatService, migrated_engine: Engine) -> None:  # noqa: F811
    old = full_conversation(service, migrated_engine)
    still_active = service.chat("how long is delivery").conversation_id
    recent = service.chat("do you ship to canada").conversation_id
    _age(migrated_engine, old, days=100)
    _age(migrated_engine, still_active, days=100, messages_days=1)  # started long ago, active
    owned = owned_rows(migrated_engine, old)

    assert service.purge(30) == 1

    assert remaining(migrated_engine, owned) == {}
    ids = {c.id for c in service.list_conversations()}
    assert ids == {still_active, recent}
    assert service.purge(30) == 0


def test_purge_uses_the_retention_setting_and_zero_keeps_everything(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    keep = ChatService(settings, StandInPipeline(), migrated_engine)
    cid = keep.chat("how long is delivery").conversation_id
    _age(migrated_engine, cid, days=400)
    assert settings.retention_days == 0 and keep.purge() == 0
    assert keep.conversation(cid).id == cid
    with pytest.raises(InvalidRequestError, match="positive"):
        keep.purge(0)
    year = ChatService(settings.model_copy(update={"retention_days": 365}), StandInPipeline(),
                       migrated_engine)
    assert year.purge() == 1


def test_purge_works_through_many_conversations_in_batches(
        service: ChatService, migrated_engine: Engine,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "PURGE_BATCH", 2)
    ids = [service.chat("how long is delivery").conversation_id for _ in range(5)]
    for cid in ids:
        _age(migrated_engine, cid, days=10)
    assert service.purge(5) == 5
    assert service.list_conversations() == []


def test_the_retention_job_purges_now_and_then_periodically(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    service = ChatService(settings.model_copy(update={"retention_days": 30}),
                          StandInPipeline(), migrated_engine)
    first = service.chat("how long is delivery").conversation_id
    _age(migrated_engine, first, days=31)
    job = RetentionJob(service.purge, interval_s=0.05)
    job.start()
    try:
        _wait(lambda: not service.list_conversations())
        second = service.chat("do you ship to canada").conversation_id
        _age(migrated_engine, second, days=31)
        _wait(lambda: not service.list_conversations())  # a later run took it
        assert job.runs >= 2
    finally:
        job.stop()


def _wait(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
