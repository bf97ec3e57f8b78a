"""ChatService: the one place that runs a round trip with the answer pipeline and logs it.

Every edge (REST API, SSE stream, OpenAI-compatible endpoint, Gradio UI) calls this service, so
every answer is logged the same way: the customer's message is committed BEFORE the pipeline
runs (a crash never loses it), then the bot's message with its retrieval hits, route,
confidence, reason, latency, model and index version. A HANDOFF reply or a customer's
``handoff()`` marks the conversation ``handed_off`` and writes a Handoff row.

Interface (the frontend codes against these names):
  chat(message, *, conversation_id=None, channel="api", customer_ref=None, history=None)
      -> ChatResult(conversation_id, message_id, reply, handoff)
  chat_stream(same arguments) -> ChatStream: iterates text deltas, then one ChatResult.
  feedback(*, message_id=None, conversation_id=None, rating=None, csat=None, comment=None) -> str
  handoff(*, conversation_id, reason) -> str
  close(conversation_id) -> datetime: status closed, ended_at set (a new message reopens it)
  conversation(id) -> ConversationView            (raises NotFoundError; the full, staff view:
      ``Transcript.of(view)`` is what its customer may see)
  list_conversations(*, status, channel, since, until, q, limit=50, offset=0)
      -> list[ConversationSummary]
  export(fmt="csv"|"jsonl", *, since=None, until=None) -> Iterator[str]
  stats(since=None) -> Stats

Additions to the agreed interface (all optional, nothing existing changed):
  - ``history=`` on chat/chat_stream overrides the history read from the database (the
    OpenAI-compatible endpoint passes the client's own messages).
  - chat_stream validates and commits the customer message when CALLED (not on first
    iteration), so bad input raises at once; the returned ChatStream also carries
    ``.conversation_id`` for an early SSE ``meta`` event.
  - count_conversations(same filters) -> int, for pagination totals.
  - find_conversation(*, customer_ref, channel) -> str | None (latest open one).
  - sources(reply) -> list[Source]: the numbered sources shown under an answer.
  - start_reindex(full=False) -> ReindexStatus, reindex_status() -> ReindexStatus,
    wait_reindex(timeout) -> ReindexStatus; ``ChatService(..., reindexer=f)`` (keyword) swaps
    chatbot.retrieval.index.reindex for a stand-in in tests.
  - check_admin_token(token) -> bool (constant-time), for the admin tab.
  Bad input raises chatbot.errors.InvalidRequestError (with ``.field``); unknown ids raise
  NotFoundError. A customer message is checked by ``chatbot.answering.inputs.check_message``
  (the one rule and wording for every way in) and logged without surrounding whitespace.
  What the reading methods return are the pydantic read models of
  ``chatbot.conversations.views``.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.orm import selectinload

from chatbot.answering.inputs import check_message
from chatbot.config import Settings
from chatbot.conversations.engine import make_sessionmaker
from chatbot.conversations.jobs import Reindexer, ReindexJob, ReindexStatus
from chatbot.conversations.models import (
    CHANNELS,
    RATINGS,
    Conversation,
    Feedback,
    Handoff,
    Message,
    RetrievalHit,
    new_id,
    utcnow,
)
from chatbot.conversations.queries import (
    compute_stats,
    conversation_filters,
    export_lines,
    summarise,
    view_of,
)
from chatbot.conversations.views import (
    ConversationSummary,
    ConversationView,
    Source,
    Stats,
    sources,
    to_utc,
)
from chatbot.errors import GenerationError, InvalidRequestError, NotFoundError
from chatbot.types import AnswerPipeline, Hit, Reply, Route, Turn

log = logging.getLogger(__name__)

__all__ = [
    "ChatResult", "ChatService", "ChatStream", "ConversationSummary", "ConversationView",
    "Source", "Stats", "sources",
]

_NO_BOT_FIELDS = dict(latency_ms=None, route=None, confidence=None, model=None,
                      index_version=None, reason=None)
HISTORY_MESSAGES = 10  # recent messages handed to the pipeline; it picks the turns it uses


@dataclass(frozen=True)
class ChatResult:
    """One logged round trip: ``message_id`` is the bot message (feedback targets it)."""

    conversation_id: str
    message_id: str
    reply: Reply
    handoff: bool


class ChatStream:
    """Iterator of text deltas then one ChatResult; the customer message is already logged."""

    def __init__(self, conversation_id: str, customer_message_id: str,
                 items: Iterator[str | ChatResult]) -> None:
        self.conversation_id = conversation_id
        self.customer_message_id = customer_message_id
        self._items = items

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str | ChatResult:
        return next(self._items)

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


class ChatService:
    """Runs and logs conversations. Thread-safe: each call uses its own session."""

    def __init__(self, settings: Settings, pipeline: AnswerPipeline, engine: Engine,
                 *, reindexer: Reindexer | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.engine = engine
        self._sessions = make_sessionmaker(engine)
        self._reindex = ReindexJob(settings, pipeline, reindexer)
        # SQLite has one writer at a time and makes the others poll with growing sleeps (its
        # busy handler); queueing this process's writers on a lock hands the file over without
        # those sleeps. PostgreSQL writers run concurrently, so nothing is queued there.
        self._write_lock: AbstractContextManager[object] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext())

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction (see ``_write_lock``)."""
        with self._write_lock, self.engine.begin() as connection:
            yield connection

    # --- chat --------------------------------------------------------------------------------
    def chat(self, message: str, *, conversation_id: str | None = None, channel: str = "api",
             customer_ref: str | None = None, history: Sequence[Turn] | None = None) -> ChatResult:
        """Answer one customer message and log both sides of the round trip."""
        message = check_message(message, self.settings.max_message_chars)
        conv_id, _, turns = self._begin(message, conversation_id, channel, customer_ref, history)
        started = time.perf_counter()
        try:
            reply = self.pipeline.answer(message, turns)
        except Exception:
            log.exception("pipeline failed for conversation %s (customer message kept)", conv_id)
            raise
        return self._finish(conv_id, reply, (time.perf_counter() - started) * 1000.0)

    def chat_stream(self, message: str, *, conversation_id: str | None = None,
                    channel: str = "api", customer_ref: str | None = None,
                    history: Sequence[Turn] | None = None) -> ChatStream:
        """Like chat(), streamed: text deltas as the pipeline yields them, then a ChatResult.

        If the consumer stops early (client disconnected), nothing more is logged: the
        customer's message stays, without a bot reply.
        """
        message = check_message(message, self.settings.max_message_chars)
        conv_id, msg_id, turns = self._begin(
            message, conversation_id, channel, customer_ref, history
        )
        return ChatStream(conv_id, msg_id, self._stream(conv_id, message, turns))

    def _stream(self, conv_id: str, message: str,
                turns: Sequence[Turn]) -> Iterator[str | ChatResult]:
        started = time.perf_counter()
        reply: Reply | None = None
        items = self.pipeline.stream(message, turns)
        try:
            for item in items:
                if isinstance(item, Reply):
                    reply = item
                    break
                yield item
        except Exception:
            log.exception("pipeline stream failed for conversation %s", conv_id)
            raise
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        if reply is None:
            raise GenerationError("the answer stream ended without a final reply; try again")
        yield self._finish(conv_id, reply, (time.perf_counter() - started) * 1000.0)

    def _begin(self, message: str, conversation_id: str | None, channel: str,
               customer_ref: str | None, history: Sequence[Turn] | None
               ) -> tuple[str, str, list[Turn]]:
        """Validate, find or open the conversation, read its history and commit the message
        (already checked by ``check_message``)."""
        if channel not in CHANNELS:
            raise InvalidRequestError(
                f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}", field="channel"
            )
        if customer_ref is not None and len(customer_ref) > 200:
            raise InvalidRequestError("customer_ref is longer than 200 characters",
                                      field="customer_ref")
        # Core statements on one connection, not the ORM unit of work: this is the hot path
        # (two short transactions per chat) and Core costs about half the CPU per request.
        with self._writing() as connection:
            if conversation_id:
                found = connection.execute(
                    select(Conversation.status).where(Conversation.id == conversation_id)
                ).first()
                if found is None:
                    raise NotFoundError(
                        f"conversation {conversation_id} does not exist; "
                        "omit conversation_id to start a new one"
                    )
                if found.status == "closed":  # the customer came back: the chat goes on
                    pending = self._pending_handoff(connection, conversation_id)
                    connection.execute(update(Conversation)
                                       .where(Conversation.id == conversation_id)
                                       .values(status="handed_off" if pending else "open",
                                               ended_at=None))
                conv_id = conversation_id
                turns = self._history(connection, conv_id) if history is None else list(history)
            else:
                conv_id = new_id()
                connection.execute(insert(Conversation), [dict(
                    id=conv_id, channel=channel, customer_ref=customer_ref, status="open",
                    started_at=utcnow(), ended_at=None, language=None)])
                turns = list(history or ())
            msg_id = new_id()
            connection.execute(insert(Message), [dict(
                id=msg_id, conversation_id=conv_id, role="customer", text=message,
                created_at=utcnow(), **_NO_BOT_FIELDS)])
        return conv_id, msg_id, turns

    @staticmethod
    def _history(connection: Connection, conversation_id: str) -> list[Turn]:
        rows = connection.execute(
            select(Message.role, Message.text, Message.route)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.created_at.desc())
            .limit(HISTORY_MESSAGES)
        ).all()
        return [Turn("customer" if role == "customer" else "agent", text, route)
                for role, text, route in reversed(rows)]

    def _finish(self, conv_id: str, reply: Reply, latency_ms: float) -> ChatResult:
        """Log the bot's reply with its hits; a HANDOFF reply opens a hand-over."""
        route = reply.route.value if isinstance(reply.route, Route) else str(reply.route)
        cited = {hit.document.id for hit in reply.sources}
        hits: list[Hit] = list(reply.hits) or list(reply.sources)
        seen = {hit.document.id for hit in hits}
        hits += [hit for hit in reply.sources if hit.document.id not in seen]
        msg_id = new_id()
        handoff = reply.route == Route.HANDOFF
        with self._writing() as connection:
            connection.execute(insert(Message), [dict(
                id=msg_id, conversation_id=conv_id, role="bot", text=reply.text,
                created_at=utcnow(), latency_ms=round(latency_ms, 3), route=route,
                confidence=float(reply.confidence), model=reply.model,
                index_version=reply.index_version or self.pipeline.index_version,
                reason=reply.reason,
            )])
            if hits:
                connection.execute(insert(RetrievalHit), [dict(
                    message_id=msg_id, document_id=hit.document.id,
                    record_id=hit.document.record_id, source=hit.document.source or "",
                    kind=hit.document.kind, score=float(hit.score),
                    dense_score=_float(hit.dense_score), keyword_score=_float(hit.keyword_score),
                    rank=hit.rank or position, cited=hit.document.id in cited,
                ) for position, hit in enumerate(hits, start=1)])
            if handoff:
                self._open_handoff(connection, conv_id, reply.reason or "the bot handed over")
        return ChatResult(conv_id, msg_id, reply, handoff)

    # --- feedback and hand-over --------------------------------------------------------------
    def feedback(self, *, message_id: str | None = None, conversation_id: str | None = None,
                 rating: str | None = None, csat: int | None = None,
                 comment: str | None = None) -> str:
        """Record thumbs up/down on a message and/or CSAT and a comment; returns the row id.

        A second thumbs on the same message replaces the first (customers toggle them).
        """
        if not message_id and not conversation_id:
            raise InvalidRequestError("give message_id or conversation_id", field="message_id")
        if rating is not None and rating not in RATINGS:
            raise InvalidRequestError(f"rating must be 'up' or 'down', not {rating!r}",
                                      field="rating")
        if csat is not None and (isinstance(csat, bool) or not 1 <= int(csat) <= 5):
            raise InvalidRequestError(f"csat must be a whole number from 1 to 5, not {csat!r}",
                                      field="csat")
        if comment is not None and len(comment) > self.settings.max_message_chars:
            raise InvalidRequestError(
                f"comment is longer than {self.settings.max_message_chars} characters",
                field="comment",
            )
        if rating is None and csat is None and not (comment or "").strip():
            raise InvalidRequestError("give a rating, a csat score or a comment", field="rating")
        with self._write_lock, self._sessions() as session:
            if message_id:
                msg = session.get(Message, message_id)
                if msg is None:
                    raise NotFoundError(f"message {message_id} does not exist")
                if conversation_id and conversation_id != msg.conversation_id:
                    raise InvalidRequestError(
                        f"message {message_id} is not part of conversation {conversation_id}",
                        field="conversation_id",
                    )
                conversation_id = msg.conversation_id
            elif session.get(Conversation, conversation_id) is None:
                raise NotFoundError(f"conversation {conversation_id} does not exist")
            row = None
            if message_id and rating is not None:
                row = session.scalars(
                    select(Feedback).where(Feedback.message_id == message_id,
                                           Feedback.rating.is_not(None))
                    .order_by(Feedback.created_at.desc()).limit(1)
                ).first()
            if row is None:
                row = Feedback(id=new_id(), message_id=message_id,
                               conversation_id=conversation_id, created_at=utcnow())
                session.add(row)
            if rating is not None:
                row.rating = rating
            if csat is not None:
                row.csat = int(csat)
            if comment is not None and comment.strip():
                row.comment = comment
            row.created_at = utcnow()
            session.commit()
            return row.id

    def handoff(self, *, conversation_id: str, reason: str = "") -> str:
        """Ask for a human: the conversation becomes handed_off; returns the Handoff id.

        Asking again while a hand-over is pending returns the pending one.
        """
        if len(reason) > self.settings.max_message_chars:
            raise InvalidRequestError("reason is too long", field="reason")
        with self._writing() as connection:
            return self._open_handoff(
                connection, conversation_id, reason.strip() or "customer asked for a human"
            )

    def close(self, conversation_id: str) -> datetime:
        """The customer ended the chat: status ``closed`` and ``ended_at`` set; returns when it
        ended. Closing again keeps the first time; a later message reopens the conversation.
        A pending hand-over stays pending (the agents still see it)."""
        with self._writing() as connection:
            found = connection.execute(
                select(Conversation.status, Conversation.ended_at)
                .where(Conversation.id == conversation_id)
            ).first()
            if found is None:
                raise NotFoundError(f"conversation {conversation_id} does not exist")
            if found.status == "closed" and (first := to_utc(found.ended_at)) is not None:
                return first
            ended = utcnow()
            connection.execute(update(Conversation).where(Conversation.id == conversation_id)
                               .values(status="closed", ended_at=ended))
            return ended

    @staticmethod
    def _pending_handoff(connection: Connection, conversation_id: str) -> str | None:
        """The id of the conversation's unresolved hand-over, if there is one."""
        pending = connection.scalars(
            select(Handoff.id).where(Handoff.conversation_id == conversation_id,
                                     Handoff.resolved_at.is_(None)).limit(1)
        ).first()
        return None if pending is None else str(pending)

    @staticmethod
    def _open_handoff(connection: Connection, conversation_id: str, reason: str) -> str:
        changed = connection.execute(
            update(Conversation).where(Conversation.id == conversation_id)
            .values(status="handed_off")
        ).rowcount
        if not changed:
            raise NotFoundError(f"conversation {conversation_id} does not exist")
        pending = ChatService._pending_handoff(connection, conversation_id)
        if pending is not None:
            return pending
        handoff_id = new_id()
        connection.execute(insert(Handoff), [dict(
            id=handoff_id, conversation_id=conversation_id, reason=reason,
            requested_at=utcnow(), assigned_to=None, resolved_at=None)])
        return handoff_id

    # --- reading the log ---------------------------------------------------------------------
    def conversation(self, conversation_id: str) -> ConversationView:
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
                    Conversation.customer_ref == customer_ref, Conversation.channel == channel,
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
        return export_lines(self._sessions, fmt, to_utc(since), to_utc(until))

    def stats(self, since: datetime | None = None) -> Stats:
        with self._sessions() as session:
            return compute_stats(session, to_utc(since))

    # --- admin -------------------------------------------------------------------------------
    def start_reindex(self, full: bool = False) -> ReindexStatus:
        """Re-index in the background, then reload the pipeline (ConflictError if running)."""
        return self._reindex.start(full=full)

    def reindex_status(self) -> ReindexStatus:
        return self._reindex.status()

    def wait_reindex(self, timeout: float | None = None) -> ReindexStatus:
        return self._reindex.wait(timeout)

    def check_admin_token(self, token: str | None) -> bool:
        expected = self.settings.resolved_admin_token
        return bool(token) and hmac.compare_digest(str(token).encode(), expected.encode())


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
