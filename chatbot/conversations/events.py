"""Live conversation events: one table, one wake-up signal, any number of listeners.

Owns: recording an event (a row of ``conversation_events`` written in the writer's own
transaction), waking whoever follows that conversation once the transaction has committed — in
this process directly, in other processes through PostgreSQL NOTIFY or Redis pub/sub — and
reading a conversation's events after an id (the customer's SSE stream, its Last-Event-ID
resumption, the agent's stream). It also runs the in-process handlers of committed events
(webhooks, ``on_resolved`` callbacks) in the process that wrote them, so each runs once.

The table is the truth; a notification only says "conversation X has something new". A lost
notification therefore delays an event by at most ``POLL_S`` (every follower re-reads that
often anyway), never loses it, and a client that reconnects reads what it missed by id. Event
ids grow in commit order within a conversation: ``record`` locks the conversation's row on
PostgreSQL, so two writers of one conversation commit one after the other (SQLite has a single
writer anyway) and a follower that has read id N never later finds a smaller one committed.

Transports (``EventBus(engine, settings)`` picks one): Redis pub/sub when ``redis_url`` is set;
else PostgreSQL LISTEN/NOTIFY on a PostgreSQL database; else nothing beyond this process (the
embedded SQLite default is one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import anyio
from sqlalchemy import Connection, Engine, insert, select, text

from chatbot.config import Settings, mask_url
from chatbot.conversations.models import Conversation, ConversationEvent, utcnow
from chatbot.conversations.views import to_utc
from chatbot.errors import ConfigError

log = logging.getLogger(__name__)

# What the customer's stream shows; the agent's stream also sees the customer and new hand-overs.
CUSTOMER_EVENTS = ("agent_joined", "agent_message", "agent_left", "resolved")
AGENT_EVENTS = (*CUSTOMER_EVENTS, "customer_message", "handoff_created")
CHANNEL = "chatbot_events"  # the NOTIFY channel and the Redis channel
POLL_S = 10.0  # a follower re-reads at least this often, notification or not
AFTER_COMMIT = "chatbot.events.after_commit"  # connection.info key of a transaction's events
READ_LIMIT = 500


@dataclass(frozen=True)
class Event:
    """One committed event; ``id`` is its SSE id."""

    id: int
    conversation_id: str
    type: str
    data: dict[str, Any]
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "conversation_id": self.conversation_id, "type": self.type,
                "data": self.data, "created_at": self.created_at.isoformat()}


Handler = Callable[[Event], None]
# Opens one write transaction whose events are delivered after it commits: ``ChatService``'s
# ``EventBus.transaction`` under its SQLite writer lock, handed to the agent desk and the purge.
Writing = Callable[[], AbstractContextManager[Connection]]


def record(connection: Connection, conversation_id: str, kind: str,
           data: dict[str, Any]) -> int:
    """Write an event in the caller's transaction and return its id. Followers are woken after
    the commit (``EventBus.transaction``); on PostgreSQL the NOTIFY rides the same transaction,
    so other processes hear of it exactly when it is visible."""
    postgres = connection.dialect.name == "postgresql"
    if postgres:  # ids in commit order per conversation (see the module docstring)
        connection.execute(select(Conversation.id).where(Conversation.id == conversation_id)
                           .with_for_update())
    created = utcnow()
    result = connection.execute(insert(ConversationEvent).values(
        conversation_id=conversation_id, type=kind, data=json.dumps(data, ensure_ascii=False),
        created_at=created))
    key = result.inserted_primary_key
    assert key is not None  # an INSERT of one row always has it
    event_id = int(key[0])
    if postgres:
        connection.execute(text("SELECT pg_notify(:channel, :payload)"),
                           {"channel": CHANNEL, "payload": conversation_id})
    pending = connection.info.get(AFTER_COMMIT)
    if pending is not None:
        pending.append(Event(event_id, conversation_id, kind, data, created))
    return event_id


class _Waiter(Protocol):
    def wake(self) -> None: ...


class _AsyncWaiter:
    """Wakes a coroutine on its own event loop from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.flag = asyncio.Event()

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            self.loop.call_soon_threadsafe(self.flag.set)


class _ThreadWaiter:
    def __init__(self) -> None:
        self.flag = threading.Event()

    def wake(self) -> None:
        self.flag.set()


class EventBus:
    """Records, reads and delivers conversation events (see the module docstring)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self._waiters: dict[str, set[_Waiter]] = {}
        self._lock = threading.Lock()
        self._handlers: list[Handler] = []
        self._transport: _Transport | None = None
        if settings.redis_url:
            self._transport = _RedisTransport(settings.redis_url, self._wake)
        elif engine.dialect.name == "postgresql":
            self._transport = _PostgresListener(engine, self._wake)

    # --- writing -------------------------------------------------------------------------------
    @contextmanager
    def transaction(self, lock: AbstractContextManager[object]) -> Iterator[Connection]:
        """One write transaction (under ``lock``: the service's SQLite writer queue) whose
        recorded events are delivered once it has committed; nothing is delivered on a
        rollback."""
        committed: list[Event] = []
        with lock, self.engine.begin() as connection:
            # info outlives this checkout (it belongs to the DBAPI connection), so the list is
            # taken off again. Through the dict held here: once the database has dropped the
            # connection, reading ``connection.info`` raises PendingRollbackError, which would
            # hide the error that says why (the edges answer an outage with 503).
            info = connection.info
            info[AFTER_COMMIT] = committed
            try:
                yield connection
            finally:
                info.pop(AFTER_COMMIT, None)
        self.deliver(committed)

    def emit(self, conversation_id: str, kind: str, data: dict[str, Any]) -> int:
        """Record one event in a transaction of its own and deliver it."""
        with self.transaction(contextlib.nullcontext()) as connection:
            return record(connection, conversation_id, kind, data)

    def deliver(self, events: Collection[Event]) -> None:
        """Wake this process's followers, tell the other processes, run the handlers. Never
        raises: the write it follows has already committed, whatever a handler does."""
        for conversation_id in {event.conversation_id for event in events}:
            self._wake(conversation_id)
            if isinstance(self._transport, _RedisTransport):
                self._transport.publish(conversation_id)
        for event in events:
            for handler in list(self._handlers):
                try:
                    handler(event)
                except Exception:
                    log.exception("event handler %r failed on %s", handler, event.type)

    def on_event(self, handler: Handler) -> None:
        """Call ``handler(event)`` after each commit of an event written in this process (in
        the writer's thread: keep it short, or hand the work to a queue)."""
        self._handlers.append(handler)

    # --- reading and following -----------------------------------------------------------------
    def read(self, conversation_id: str, after: int = 0,
             types: Collection[str] | None = None) -> list[Event]:
        """The conversation's events with an id above ``after``, oldest first."""
        query = (select(ConversationEvent)
                 .where(ConversationEvent.conversation_id == conversation_id,
                        ConversationEvent.id > after)
                 .order_by(ConversationEvent.id).limit(READ_LIMIT))
        if types is not None:
            query = query.where(ConversationEvent.type.in_(list(types)))
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [Event(row.id, row.conversation_id, row.type, json.loads(row.data or "{}"),
                      to_utc(row.created_at) or utcnow()) for row in rows]

    def last_id(self, conversation_id: str) -> int:
        """The id of the conversation's latest event, 0 when it has none."""
        with self.engine.connect() as connection:
            found = connection.scalar(select(ConversationEvent.id)
                                      .where(ConversationEvent.conversation_id == conversation_id)
                                      .order_by(ConversationEvent.id.desc()).limit(1))
        return int(found or 0)

    async def follow(self, conversation_id: str, after: int = 0,
                     types: Collection[str] | None = None,
                     poll_s: float | None = None) -> AsyncIterator[Event]:
        """Every event after ``after``, then each new one as it commits, until the caller stops
        iterating (a client disconnect cancels it)."""
        self.start()
        waiter = _AsyncWaiter()
        self._add(conversation_id, waiter)
        try:
            while True:
                waiter.flag.clear()  # before reading: a wake during the read is not lost
                # Every type is read, so ``after`` moves past the ones this follower skips.
                events = await anyio.to_thread.run_sync(self.read, conversation_id, after)
                for event in events:
                    after = event.id
                    if types is None or event.type in types:
                        yield event
                if len(events) == READ_LIMIT:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.flag.wait(), poll_s or POLL_S)
        finally:
            self._remove(conversation_id, waiter)

    def wait(self, conversation_id: str, after: int = 0, types: Collection[str] | None = None,
             timeout: float = POLL_S) -> list[Event]:
        """Block until the conversation has events of ``types`` after ``after`` (or until
        ``timeout``); returns them (empty on timeout). For threads: the Gradio UI, tests."""
        self.start()
        waiter = _ThreadWaiter()
        self._add(conversation_id, waiter)
        deadline = time.monotonic() + timeout
        try:
            while True:
                waiter.flag.clear()
                found = self.read(conversation_id, after, types)
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                waiter.flag.wait(min(left, POLL_S))
        finally:
            self._remove(conversation_id, waiter)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start listening to other processes (idempotent; followers call it)."""
        if self._transport is not None:
            self._transport.start()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    @property
    def transport(self) -> str:
        """'redis', 'postgresql' or 'in-process': how events reach other processes."""
        return "in-process" if self._transport is None else self._transport.name

    def _add(self, conversation_id: str, waiter: _Waiter) -> None:
        with self._lock:
            self._waiters.setdefault(conversation_id, set()).add(waiter)

    def _remove(self, conversation_id: str, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(conversation_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[conversation_id]

    def _wake(self, conversation_id: str | None) -> None:
        """Wake the followers of one conversation, or all of them (None: after a transport
        reconnected, anything may have been missed)."""
        with self._lock:
            if conversation_id is None:
                waiters = [w for group in self._waiters.values() for w in group]
            else:
                waiters = list(self._waiters.get(conversation_id, ()))
        for waiter in waiters:
            waiter.wake()


class _Transport:
    """A daemon thread that hears of other processes' events and wakes local followers."""

    name = ""
    RETRY_S = 2.0

    def __init__(self, wake: Callable[[str | None], None]) -> None:
        self._wake = wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name=f"events-{self.name}")
                self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as error:  # the database or Redis went away: reconnect
                log.warning("live events: %s listener failed (%s); reconnecting in %.0f s",
                            self.name, error, self.RETRY_S)
                self._stop.wait(self.RETRY_S)

    def _listen(self) -> None:
        raise NotImplementedError


class _PostgresListener(_Transport):
    """LISTEN on a dedicated autocommit connection (never a pooled one: it stays open)."""

    name = "postgresql"

    def __init__(self, engine: Engine, wake: Callable[[str | None], None]) -> None:
        super().__init__(wake)
        url = engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f"LISTEN {CHANNEL}")
            self._wake(None)  # (re)connected: re-read whatever happened while away
            while not self._stop.is_set():
                for note in connection.notifies(timeout=1.0):
                    self._wake(note.payload or None)


class _RedisTransport(_Transport):
    name = "redis"

    def __init__(self, url: str, wake: Callable[[str | None], None]) -> None:
        super().__init__(wake)
        try:
            import redis
        except ImportError as error:
            raise ConfigError("CHATBOT_REDIS_URL is set but the redis package is missing: "
                              "pip install redis") from error
        self._url = url
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def publish(self, conversation_id: str) -> None:
        try:
            self._client.publish(CHANNEL, conversation_id)
        except Exception as error:  # followers elsewhere catch up on their next poll
            log.warning("live events: publishing to Redis %s failed: %s",
                        mask_url(self._url, keep_path=True), error)

    def _listen(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(CHANNEL)
            self._wake(None)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message and message.get("type") == "message":
                    payload = message.get("data")
                    if isinstance(payload, bytes):
                        payload = payload.decode("utf-8", "replace")
                    self._wake(str(payload) or None)
        finally:
            pubsub.close()


def conversation_exists(engine: Engine, conversation_id: str) -> bool:
    with engine.connect() as connection:
        return connection.scalar(select(Conversation.id)
                                 .where(Conversation.id == conversation_id)) is not None
