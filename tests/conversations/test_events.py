"""The live event bus: events are rows read by id (resumable), delivered after commit and never
on a rollback, followers are woken in-process, and across processes by PostgreSQL NOTIFY or
Redis pub/sub (two buses on two engines stand for two replicas)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import OperationalError

from chatbot.config import Settings
from chatbot.conversations.engine import make_engine, unavailable, upgrade
from chatbot.conversations.events import (
    CUSTOMER_EVENTS,
    Event,
    EventBus,
    _ThreadWaiter,
    record,
)
from chatbot.conversations.models import Conversation, utcnow


def new_conversation(engine: Engine) -> str:
    conversation_id = f"c-{os.urandom(4).hex()}"
    with engine.begin() as connection:
        connection.execute(insert(Conversation).values(
            id=conversation_id, channel="web", status="open", started_at=utcnow()))
    return conversation_id


@pytest.fixture
def bus(settings: Settings, migrated_engine: Engine) -> Iterator[EventBus]:  # noqa: F811
    bus = EventBus(migrated_engine, settings)
    yield bus
    bus.close()


def test_events_are_read_by_id_and_resumable(bus: EventBus) -> None:
    conv = new_conversation(bus.engine)
    ids = [bus.emit(conv, kind, {"n": n}) for n, kind in enumerate(
        ["handoff_created", "agent_joined", "customer_message", "agent_message"])]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert [e.data["n"] for e in bus.read(conv)] == [0, 1, 2, 3]
    assert [e.type for e in bus.read(conv, after=ids[1])] == ["customer_message",
                                                               "agent_message"]
    assert [e.type for e in bus.read(conv, types=CUSTOMER_EVENTS)] == ["agent_joined",
                                                                       "agent_message"]
    assert bus.last_id(conv) == ids[-1] and bus.last_id("nothing") == 0
    assert bus.read(new_conversation(bus.engine)) == []


def test_handlers_run_after_commit_and_never_on_rollback(bus: EventBus) -> None:
    conv = new_conversation(bus.engine)
    seen: list[Event] = []
    bus.on_event(seen.append)
    bus.on_event(lambda event: 1 / 0)  # a failing handler harms nobody
    lock = threading.Lock()
    with pytest.raises(RuntimeError), bus.transaction(lock) as connection:
        record(connection, conv, "agent_message", {"text": "never sent"})
        raise RuntimeError("the write fails")
    assert seen == [] and bus.read(conv) == []
    with bus.transaction(lock) as connection:
        event_id = record(connection, conv, "agent_message", {"text": "hello"})
        assert seen == []  # not before the commit
    assert [(e.id, e.data["text"]) for e in seen] == [(event_id, "hello")]


@pytest.fixture
def postgres_bus(settings: Settings, postgres_url: str) -> Iterator[EventBus]:
    """A bus on a fresh, migrated PostgreSQL schema."""
    from dbfixtures import create_schema, drop_schema, postgres_schema_url

    schema = create_schema(postgres_url)
    url = postgres_schema_url(postgres_url, schema)
    engine = make_engine(url)
    upgrade(url, engine=engine)
    bus = EventBus(engine, settings)
    try:
        yield bus
    finally:
        bus.close()
        engine.dispose()
        drop_schema(postgres_url, schema)


@pytest.mark.postgres
def test_a_dropped_connection_raises_the_database_error(postgres_bus: EventBus) -> None:
    """The server drops the connection mid-transaction (as a database restart does): what comes
    out is the driver's error (the edges answer it with 503), not an error of the cleanup
    hiding it, and nothing is delivered."""
    bus = postgres_bus
    conv = new_conversation(bus.engine)
    seen: list[Event] = []
    bus.on_event(seen.append)
    with pytest.raises(OperationalError) as raised, \
            bus.transaction(contextlib.nullcontext()) as connection:
        record(connection, conv, "agent_message", {"text": "lost with the connection"})
        pid = connection.scalar(text("SELECT pg_backend_pid()"))
        with bus.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        connection.execute(text("SELECT 1"))
    assert raised.value.connection_invalidated
    assert unavailable(raised.value) is not None
    assert seen == [] and bus.read(conv) == []
    # The pool replaces the dropped connection: the next transaction works.
    assert bus.emit(conv, "agent_message", {"text": "after"}) > 0


def test_a_follower_gets_the_backlog_then_live_events(bus: EventBus) -> None:
    conv = new_conversation(bus.engine)
    first = bus.emit(conv, "agent_joined", {"agent": "Sam"})

    async def scenario() -> list[tuple[str, int]]:
        got: list[tuple[str, int]] = []
        stream = bus.follow(conv, 0, CUSTOMER_EVENTS)
        got.append(((e := await anext(stream)).type, e.id))
        # Written from another thread while the follower waits (as a request handler would).
        later = asyncio.get_running_loop().run_in_executor(
            None, bus.emit, conv, "agent_message", {"text": "hi"})
        got.append(((e := await asyncio.wait_for(anext(stream), 60)).type, e.id))
        await later
        await stream.aclose()
        return got

    got = asyncio.run(scenario())
    assert got[0] == ("agent_joined", first)
    assert got[1][0] == "agent_message" and got[1][1] > first
    assert bus._waiters == {}  # the follower unregistered when it stopped


def _woken_across(bus_a: EventBus, bus_b: EventBus, conv: str) -> bool:
    """Whether a waiter on bus A is woken by an event written through bus B (another
    process's engine): only the cross-process transport can do that."""
    waiter = _ThreadWaiter()
    bus_a._add(conv, waiter)
    try:
        bus_a.start()
        # The listener wakes everyone once it is connected; wait for that first.
        assert waiter.flag.wait(60), "the listener did not connect"
        waiter.flag.clear()
        bus_b.emit(conv, "agent_message", {"text": "from the other replica"})
        return waiter.flag.wait(60)
    finally:
        bus_a._remove(conv, waiter)


@pytest.mark.postgres
def test_postgres_notify_wakes_followers_in_another_process(settings: Settings,
                                                             postgres_url: str) -> None:
    from dbfixtures import create_schema, drop_schema, postgres_schema_url

    schema = create_schema(postgres_url)
    url = postgres_schema_url(postgres_url, schema)
    engines = [make_engine(url), make_engine(url)]
    buses: list[EventBus] = []
    try:
        upgrade(url, engine=engines[0])
        buses = [EventBus(engine, settings) for engine in engines]
        assert buses[0].transport == "postgresql"
        conv = new_conversation(engines[0])
        assert _woken_across(buses[0], buses[1], conv)
        assert [e.data["text"] for e in buses[0].wait(conv, 0, timeout=5)] == [
            "from the other replica"]
    finally:
        for bus in buses:
            bus.close()
        for engine in engines:
            engine.dispose()
        drop_schema(postgres_url, schema)


def _redis_available() -> str | None:
    url = os.environ.get("CHATBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception:
        return None
    return url


def test_redis_pubsub_wakes_followers_in_another_process(tmp_path: Path) -> None:
    url = _redis_available()
    if url is None:
        pytest.skip("no Redis at CHATBOT_TEST_REDIS_URL (default redis://127.0.0.1:6379/15)")
    from chatbot.conversations.engine import upgrade

    settings = Settings(var_dir=tmp_path / "var", redis_url=url,
                        _env_file=None)  # type: ignore[call-arg]
    upgrade(settings)
    engines = [make_engine(settings), make_engine(settings)]  # one SQLite file, two "processes"
    buses = [EventBus(engine, settings) for engine in engines]
    try:
        assert buses[0].transport == "redis"
        conv = new_conversation(engines[0])
        assert _woken_across(buses[0], buses[1], conv)
    finally:
        for bus in buses:
            with contextlib.suppress(Exception):
                bus.close()
        for engine in engines:
            engine.dispose()
