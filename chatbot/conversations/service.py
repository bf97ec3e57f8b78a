"""ChatService: the one place that runs a round trip with the answer pipeline and logs it.

Every edge (REST API, SSE stream, OpenAI-compatible endpoint, Gradio UI) calls this service, so
every answer is logged the same way: the customer's message is committed BEFORE the pipeline
runs (a crash never loses it), then the bot's message with its retrieval hits, route,
confidence, reason, latency, model and index version. The customer message's signals
(sentiment, frustration; ``pipeline.read_signals``) are read before it is logged, stored on its
row and rolled up on the conversation in the same transaction (``signal_log``), then handed to
the pipeline. A HANDOFF reply or a customer's ``handoff()`` marks the conversation
``handed_off`` and writes a Handoff row with its priority (``high`` for a frustrated customer).

Personal data (``chatbot.answering.privacy``): what a customer wrote (messages, feedback
comments, hand-over reasons) and generated replies are stored with card numbers, emails, phone
numbers and ``CHATBOT_REDACT_PATTERNS`` replaced by ``[kind]`` (except the kinds
``CHATBOT_STORE_VERBATIM`` keeps), the customer reference with them pseudonymised. The pipeline
answers the message as written; the history it gets later is the stored, redacted one (the bot
needs no one's card or email to answer from the FAQs). The bot's approved texts (FAQ answers,
its own sentences) are stored as they are: they hold the company's own phone and email.
Deleting is ``chatbot.conversations.retention``.

Interface (every edge codes against these names; bad input raises InvalidRequestError with
``.field``, unknown ids NotFoundError; reads return the read models of
``chatbot.conversations.views``):
  chat(message, *, conversation_id=None, channel="api", customer_ref=None, history=None,
       suggestion=None) -> ChatResult(conversation_id, message_id, reply, handoff, signals,
       agent). The message is checked by ``chatbot.answering.inputs.check_message`` (one rule
       and wording for every way in) and logged without surrounding whitespace. ``history``
       overrides the one read from the log (the OpenAI-compatible endpoint passes the
       client's); ``suggestion`` is the FAQ id of the chip the message was sent by (stored as
       ``messages.suggested_faq_id``, the click the statistics count). The FAQ ids offered
       under a reply are stored on its row, and the history handed to the pipeline carries
       each bot turn's answered FAQ (``Turn.faq_id``) so none is suggested twice.
  chat_stream(same arguments) -> ChatStream: text deltas, then one ChatResult. It checks and
      logs the customer message when called, not on first iteration (bad input raises at
      once), and carries ``.conversation_id`` and ``.signals`` for an early SSE event.
  opening_suggestions() -> list[Suggestion]: what to offer when a chat opens.
  feedback(*, message_id, conversation_id, rating, csat, comment) -> feedback id
  handoff(*, conversation_id, reason, priority=None) -> hand-over id; None means ``high`` when
      the conversation's customer was frustrated (its roll-up), else ``normal``.
  close(conversation_id) -> when it ended (a new message reopens it)
  conversation(id) -> ConversationView: the full, staff view (``Transcript.of(view)`` is what
      its customer may see); find_conversation(*, customer_ref, channel) -> the latest open
      one's id; list_conversations(*, status, channel, since, until, q, limit, offset) and
      count_conversations(same filters); export(fmt="csv"|"jsonl", *, since, until);
      stats(since); stats_series(since, until): per UTC day, for the admin charts (these
      reads are ``chatbot.conversations.reading.LogReader``'s). ``sources(reply)``: the
      numbered sources shown under an answer.
  start_reindex(full=False), reindex_status(), wait_reindex(timeout) -> ReindexStatus
      (``ChatService(..., reindexer=f)`` swaps the re-index function, e.g. for a stand-in);
      check_admin_token(token) (constant time); delete_conversation(id);
      purge(older_than_days=None) (default CHATBOT_RETENTION_DAYS).
  People (``chatbot.conversations.agents``): ``service.agents`` is the agent desk (accounts,
      inbox, claim/reply/handback/resolve, availability), ``service.events`` the live event
      bus, ``service.webhooks`` the webhook sender; ``on_resolved(callback)`` gets a
      ``Resolution`` after each resolve. While an agent has claimed the conversation, chat()
      logs the customer's message, sends it to the agent side and does not run the pipeline:
      the result's route is ``agent``, its ``message_id`` the customer's message and
      ``agent`` the person's name. A hand-over reply ends with the sentence saying when a
      person will answer; every new hand-over is a ``handoff_created`` event (webhook
      ``handoff.created``).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select, update

from chatbot.answering.inputs import check_message
from chatbot.answering.privacy import Redactor
from chatbot.config import Settings
from chatbot.conversations.agents import AgentDesk, Resolution
from chatbot.conversations.events import EventBus
from chatbot.conversations.feedback import check_feedback, save_feedback
from chatbot.conversations.handoffs import customer_wrote, find_open, open_handoff
from chatbot.conversations.jobs import Reindexer, ReindexJob, ReindexStatus
from chatbot.conversations.models import (
    CHANNELS,
    Conversation,
    Message,
    RetrievalHit,
    new_id,
    utcnow,
)
from chatbot.conversations.queries import logged_text, recent_answer_counts
from chatbot.conversations.reading import CUSTOMER_REF_CHARS, LogReader
from chatbot.conversations.retention import delete_conversations, purge
from chatbot.conversations.signal_log import message_fields, rollup
from chatbot.conversations.views import (
    ConversationSummary,
    ConversationView,
    Source,
    Stats,
    sources,
    to_utc,
)
from chatbot.conversations.webhooks import WebhookSender
from chatbot.errors import GenerationError, InvalidRequestError, NotFoundError
from chatbot.types import (
    PRIORITIES,
    AnswerPipeline,
    Hit,
    Priority,
    Reply,
    Route,
    Signals,
    Suggestion,
    Turn,
)

log = logging.getLogger(__name__)

__all__ = [
    "ChatResult", "ChatService", "ChatStream", "ConversationSummary", "ConversationView",
    "Source", "Stats", "sources",
]

_NO_BOT_FIELDS = dict(latency_ms=None, route=None, confidence=None, model=None,
                      index_version=None, reason=None)
HISTORY_MESSAGES = 10  # recent messages handed to the pipeline; it picks the turns it uses
OPENING_DAYS = 7  # opening suggestions: the FAQs answered most in these last days come first
# The opening counts are one grouped query over a week of the log: cached this long, since
# every chat that opens asks for them and a few minutes' lag changes nothing.
OPENING_CACHE_S = 300.0


@dataclass(frozen=True)
class ChatResult:
    """One logged round trip: ``message_id`` is the bot message (feedback targets it)."""

    conversation_id: str
    message_id: str
    reply: Reply
    handoff: bool
    signals: Signals | None = None  # of the customer's message (None: signals off)
    agent: str | None = None  # route AGENT: the person who has the conversation


class ChatStream:
    """Iterator of text deltas then one ChatResult; the customer message is already logged."""

    def __init__(self, conversation_id: str, customer_message_id: str,
                 items: Iterator[str | ChatResult], signals: Signals | None = None) -> None:
        self.conversation_id = conversation_id
        self.customer_message_id = customer_message_id
        self.signals = signals
        self._items = items

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str | ChatResult:
        return next(self._items)

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


class ChatService(LogReader):
    """Runs and logs conversations; its reading methods are ``LogReader``'s. Thread-safe: each
    call uses its own session or connection."""

    def __init__(self, settings: Settings, pipeline: AnswerPipeline, engine: Engine,
                 *, reindexer: Reindexer | None = None) -> None:
        super().__init__(engine, Redactor.from_settings(settings))
        self.settings = settings
        self.pipeline = pipeline
        self._reindex = ReindexJob(settings, pipeline, reindexer)
        # SQLite has one writer at a time and makes the others poll with growing sleeps (its
        # busy handler); queueing this process's writers on a lock hands the file over without
        # those sleeps. PostgreSQL writers run concurrently, so nothing is queued there.
        self._write_lock: AbstractContextManager[object] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext())
        # People: live events (delivered after each write commits), webhooks, the agent desk.
        self.events = EventBus(engine, settings)
        self.webhooks = WebhookSender(settings, engine)
        self.events.on_event(self.webhooks.handle)
        self.agents = AgentDesk(settings, engine, self.events, self._writing, self.conversation)
        self._opening_counts: tuple[float, dict[str, int]] | None = None  # (when read, counts)

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction (see ``_write_lock``); the conversation events it records are
        delivered once it has committed."""
        with self.events.transaction(self._write_lock) as connection:
            yield connection

    def on_resolved(self, callback: Callable[[Resolution], None]) -> None:
        """Call ``callback(resolution)`` after each hand-over an agent resolves (see
        ``AgentDesk.on_resolved``)."""
        self.agents.on_resolved(callback)

    def _held(self, conv_id: str, msg_id: str, signals: Signals | None,
              agent: str) -> ChatResult:
        """While a person (``agent``) has the conversation the bot stays silent: the result
        says who has it (``_begin`` sent the message to the agent side)."""
        reply = Reply(self.agents.holding_text(agent), Route.AGENT, 0.0,
                      f"{agent} has the conversation; the bot stayed silent", signals=signals)
        return ChatResult(conv_id, msg_id, reply, False, signals, agent=agent)

    # --- chat --------------------------------------------------------------------------------
    def chat(self, message: str, *, conversation_id: str | None = None, channel: str = "api",
             customer_ref: str | None = None, history: Sequence[Turn] | None = None,
             suggestion: str | None = None) -> ChatResult:
        """Answer one customer message and log both sides of the round trip. ``suggestion``:
        the FAQ id of the suggestion chip the message was sent by (a logged click)."""
        message = check_message(message, self.settings.max_message_chars)
        conv_id, msg_id, turns, signals, agent = self._begin(
            message, conversation_id, channel, customer_ref, history, suggestion)
        if agent is not None:
            return self._held(conv_id, msg_id, signals, agent)
        started = time.perf_counter()
        try:
            reply = self.pipeline.answer(message, turns, signals=signals)
        except Exception:
            log.exception("pipeline failed for conversation %s (customer message kept)", conv_id)
            raise
        return self._finish(conv_id, reply, (time.perf_counter() - started) * 1000.0, signals)

    def chat_stream(self, message: str, *, conversation_id: str | None = None,
                    channel: str = "api", customer_ref: str | None = None,
                    history: Sequence[Turn] | None = None,
                    suggestion: str | None = None) -> ChatStream:
        """Like chat(), streamed: text deltas as the pipeline yields them, then a ChatResult.

        If the consumer stops early (client disconnected), nothing more is logged: the
        customer's message stays, without a bot reply.
        """
        message = check_message(message, self.settings.max_message_chars)
        conv_id, msg_id, turns, signals, agent = self._begin(
            message, conversation_id, channel, customer_ref, history, suggestion)
        if agent is not None:
            held = self._held(conv_id, msg_id, signals, agent)
            return ChatStream(conv_id, msg_id, iter([held]), signals)
        return ChatStream(conv_id, msg_id, self._stream(conv_id, message, turns, signals),
                          signals)

    def _stream(self, conv_id: str, message: str, turns: Sequence[Turn],
                signals: Signals | None = None) -> Iterator[str | ChatResult]:
        started = time.perf_counter()
        reply: Reply | None = None
        items = self.pipeline.stream(message, turns, signals=signals)
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
        result = self._finish(conv_id, reply, (time.perf_counter() - started) * 1000.0, signals)
        said, final = reply.text.rstrip(), result.reply.text
        if len(final) > len(said) and final.startswith(said):
            yield final[len(said):]  # a hand-over's "when a person will answer", streamed too
        yield result

    def _begin(self, message: str, conversation_id: str | None, channel: str,
               customer_ref: str | None, history: Sequence[Turn] | None,
               suggestion: str | None = None
               ) -> tuple[str, str, list[Turn], Signals | None, str | None]:
        """Validate, find or open the conversation, read its history, read the message's
        signals and commit the message with them (already checked by ``check_message``); while
        a hand-over is open, the agent side is told in the same transaction. Returns the ids,
        the history, the signals and who holds the conversation (None: the bot answers)."""
        if channel not in CHANNELS:
            raise InvalidRequestError(
                f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}", field="channel"
            )
        if customer_ref is not None and len(customer_ref) > CUSTOMER_REF_CHARS:
            raise InvalidRequestError(
                f"customer_ref is longer than {CUSTOMER_REF_CHARS} characters",
                field="customer_ref")
        if suggestion is not None and not 0 < len(suggestion) <= 200:
            raise InvalidRequestError("suggestion.faq_id must be 1 to 200 characters",
                                      field="suggestion")
        # Redacted before the write transaction: it takes a millisecond or two with numbers in.
        stored, stored_ref = self._redactor.redact(message), self._stored_ref(customer_ref)
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
                    pending = find_open(connection, conversation_id)
                    connection.execute(update(Conversation)
                                       .where(Conversation.id == conversation_id)
                                       .values(status="handed_off" if pending else "open",
                                               ended_at=None))
                conv_id = conversation_id
                turns = self._history(connection, conv_id) if history is None else list(history)
            else:
                conv_id = new_id()
                connection.execute(insert(Conversation), [dict(
                    id=conv_id, channel=channel, customer_ref=stored_ref, status="open",
                    started_at=utcnow(), ended_at=None, language=None)])
                turns = list(history or ())
            # Read here, where the history is at hand: the row is written once, with them.
            signals = self.pipeline.read_signals(message, turns)
            msg_id = new_id()
            connection.execute(insert(Message), [dict(
                id=msg_id, conversation_id=conv_id, role="customer", text=stored,
                created_at=utcnow(), suggested_faq_id=suggestion, **_NO_BOT_FIELDS,
                **message_fields(signals))])
            if signals is not None:
                connection.execute(rollup(conv_id, signals))
            # A new conversation has no hand-over yet; anyone else's may have one open.
            agent = customer_wrote(connection, conv_id, msg_id, stored) if conversation_id \
                else None
        return conv_id, msg_id, turns, signals, agent

    @staticmethod
    def _history(connection: Connection, conversation_id: str) -> list[Turn]:
        # Each bot turn's first cited FAQ (by rank): what it answered, for the suggestions.
        answered = (select(RetrievalHit.record_id)
                    .where(RetrievalHit.message_id == Message.id, RetrievalHit.kind == "faq",
                           RetrievalHit.cited.is_(True))
                    .order_by(RetrievalHit.rank).limit(1)
                    .correlate(Message).scalar_subquery())
        rows = connection.execute(
            select(Message.role, Message.text, Message.route, answered)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.created_at.desc())
            .limit(HISTORY_MESSAGES)
        ).all()
        return [Turn("customer" if role == "customer" else "agent", text, route, faq_id)
                for role, text, route, faq_id in reversed(rows)]

    def _finish(self, conv_id: str, reply: Reply, latency_ms: float,
                signals: Signals | None = None) -> ChatResult:
        """Log the bot's reply with its hits; a HANDOFF reply opens a hand-over (with the
        reply's priority) and says when a person will answer."""
        if reply.route == Route.HANDOFF:
            reply = self.agents.with_notice(reply)
        route = reply.route.value if isinstance(reply.route, Route) else str(reply.route)
        cited = {hit.document.id for hit in reply.sources}
        hits: list[Hit] = list(reply.hits) or list(reply.sources)
        seen = {hit.document.id for hit in hits}
        hits += [hit for hit in reply.sources if hit.document.id not in seen]
        msg_id = new_id()
        handoff = reply.route == Route.HANDOFF
        stored = logged_text(self._redactor, reply.text, "bot", route)
        reason = self._redactor.redact_optional(reply.reason)  # also the hand-over's reason
        with self._writing() as connection:
            connection.execute(insert(Message), [dict(
                id=msg_id, conversation_id=conv_id, role="bot", text=stored,
                created_at=utcnow(), latency_ms=round(latency_ms, 3), route=route,
                confidence=float(reply.confidence), model=reply.model,
                index_version=reply.index_version or self.pipeline.index_version,
                reason=reason, suggestions=",".join(s.faq_id for s in reply.suggestions) or None,
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
                open_handoff(connection, conv_id, reason or "the bot handed over",
                             reply.priority)
        return ChatResult(conv_id, msg_id, reply, handoff, signals)

    # --- suggestions -------------------------------------------------------------------------
    def opening_suggestions(self) -> list[Suggestion]:
        """The questions to offer when a chat opens: the FAQs answered most in the last
        ``OPENING_DAYS`` days, then the knowledge base's usual first questions ([] while the
        pipeline has none: suggestions off, or their statistics still building)."""
        opening = getattr(self.pipeline, "opening", None)  # a pipeline may offer none
        if opening is None or self.settings.suggestions <= 0:
            return []
        cached = self._opening_counts
        if cached is None or time.monotonic() - cached[0] > OPENING_CACHE_S:
            with self._sessions() as session:
                counts = recent_answer_counts(session, days=OPENING_DAYS)
            cached = self._opening_counts = (time.monotonic(), counts)
        return list(opening(recent_counts=cached[1]))[:self.settings.suggestions]

    # --- feedback and hand-over --------------------------------------------------------------
    def feedback(self, *, message_id: str | None = None, conversation_id: str | None = None,
                 rating: str | None = None, csat: int | None = None,
                 comment: str | None = None) -> str:
        """Record thumbs up/down on a message and/or CSAT and a comment; returns the row id.

        A second thumbs on the same message replaces the first (customers toggle them).
        """
        check_feedback(message_id=message_id, conversation_id=conversation_id, rating=rating,
                       csat=csat, comment=comment, max_chars=self.settings.max_message_chars)
        with self._write_lock, self._sessions() as session:
            return save_feedback(session, self._redactor, message_id=message_id,
                                 conversation_id=conversation_id, rating=rating, csat=csat,
                                 comment=comment)

    def handoff(self, *, conversation_id: str, reason: str = "",
                priority: Priority | None = None) -> str:
        """Ask for a human: the conversation becomes handed_off; returns the Handoff id.

        Asking again while a hand-over is open (waiting or claimed) returns that one.
        ``priority`` None: ``high`` when the conversation's customer was frustrated, else
        ``normal``.
        """
        if len(reason) > self.settings.max_message_chars:
            raise InvalidRequestError(
                f"reason is longer than {self.settings.max_message_chars} characters",
                field="reason")
        if priority is not None and priority not in PRIORITIES:
            raise InvalidRequestError(f"priority must be one of {', '.join(PRIORITIES)}",
                                      field="priority")
        stored = self._redactor.redact(reason.strip()) or "customer asked for a human"
        with self._writing() as connection:
            if priority is None:
                frustrated = connection.scalar(select(Conversation.frustrated)
                                               .where(Conversation.id == conversation_id))
                priority = "high" if frustrated else "normal"
            return open_handoff(connection, conversation_id, stored, priority)

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

    # --- admin -------------------------------------------------------------------------------
    def start_reindex(self, full: bool = False) -> ReindexStatus:
        """Re-index in the background, then reload the pipeline (ConflictError if running)."""
        return self._reindex.start(full=full)

    def reindex_status(self) -> ReindexStatus:
        return self._reindex.status()

    def wait_reindex(self, timeout: float | None = None) -> ReindexStatus:
        return self._reindex.wait(timeout)

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete the conversation and every row of it in one transaction (NotFoundError if
        there is none)."""
        with self._writing() as connection:
            if not delete_conversations(connection, [conversation_id]):
                raise NotFoundError(f"conversation {conversation_id} does not exist")

    def purge(self, older_than_days: float | None = None) -> int:
        """Delete the conversations inactive for more than ``older_than_days`` (default:
        CHATBOT_RETENTION_DAYS, where 0 deletes nothing); returns how many."""
        days = self.settings.retention_days if older_than_days is None else older_than_days
        if older_than_days is None and not days:
            return 0
        return purge(self._writing, days)

    def check_admin_token(self, token: str | None) -> bool:
        expected = self.settings.resolved_admin_token
        return bool(token) and hmac.compare_digest(str(token).encode(), expected.encode())


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
