"""Reading the conversation log: typed views, filters, statistics and exports.

The write side (and the public entry points) live in
``chatbot.conversations.service.ChatService``; this module holds the read-only queries it
delegates to, so each module stays small. Everything returned is a frozen read model from
``chatbot.conversations.views``, detached from the session, safe to hand to the API and the UI.

Statistics, over conversations started (and messages written) since a time:
- deflection_rate: conversations the bot answered (an FAQ or generated reply) that never asked
  for a human, over conversations with at least one bot reply;
- fallback_rate: bot replies that were fallbacks, over bot replies;
- handoff_rate: conversations with a hand-over, over conversations;
- csat_avg, thumbs_up_rate (up over up+down), latency p50/p95 of bot replies
  (``numpy.percentile``'s default linear interpolation, like PostgreSQL's percentile_cont);
- sentiment_avg: the mean over conversations of their average customer sentiment (each
  conversation weighs the same, however long); frustrated_rate: conversations with a frustrated
  customer message, over conversations with signals (``chatbot.conversations.signal_log``).
  Daily series of these: ``chatbot.conversations.timeseries``.
- suggestions_offered: bot replies that offered suggested questions; suggestion_clicks:
  customer messages sent by clicking one; suggestion_click_rate: clicks over offers.
Rates are None when their denominator is zero, never a made-up 0.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from chatbot.answering.privacy import Redactor
from chatbot.conversations.models import (
    CHANNELS,
    CONVERSATION_STATUSES,
    Conversation,
    Feedback,
    Handoff,
    Message,
    RetrievalHit,
)
from chatbot.conversations.views import (
    ConversationSummary,
    ConversationView,
    Stats,
    to_utc,
)
from chatbot.errors import InvalidRequestError

__all__ = [
    "compute_stats", "conversation_filters", "export_lines", "logged_text", "outcomes",
    "redacted_view", "summarise", "to_utc", "view_of",
]

PREVIEW_CHARS = 120
EXPORT_PAGE = 200
CSV_COLUMNS = (
    "conversation_id", "channel", "customer_ref", "status", "started_at", "message_id", "role",
    "created_at", "text", "route", "confidence", "latency_ms", "model", "index_version",
    "reason", "rating", "cited", "sentiment", "frustration", "frustrated",
)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# --- views -----------------------------------------------------------------------------------
def view_of(conv: Conversation) -> ConversationView:
    """A detached view of a conversation loaded with messages, hits, hand-offs and feedback."""
    ratings: dict[str, str] = {}
    for fb in sorted(conv.feedback, key=lambda f: _utc(f.created_at)):
        if fb.message_id and fb.rating:
            ratings[fb.message_id] = fb.rating
    view = ConversationView.model_validate(conv)  # the rows, read through from_attributes
    # A message's rating is its latest thumbs, which lives in the feedback rows, not on it.
    messages = tuple(m.model_copy(update={"rating": ratings.get(m.id)})
                     for m in sorted(view.messages, key=lambda m: m.created_at))
    return view.model_copy(update={"messages": messages})


def conversation_filters(status: str | None, channel: str | None, since: datetime | None,
                         until: datetime | None, q: str | None) -> list[ColumnElement[bool]]:
    """WHERE clauses for the conversation browser; bad filter values raise with the fix."""
    where: list[ColumnElement[bool]] = []
    if status:
        if status not in CONVERSATION_STATUSES:
            raise InvalidRequestError(
                f"status must be one of {', '.join(CONVERSATION_STATUSES)}", field="status"
            )
        where.append(Conversation.status == status)
    if channel:
        if channel not in CHANNELS:
            raise InvalidRequestError(f"channel must be one of {', '.join(CHANNELS)}",
                                      field="channel")
        where.append(Conversation.channel == channel)
    if since is not None:
        where.append(Conversation.started_at >= to_utc(since))
    if until is not None:
        where.append(Conversation.started_at < to_utc(until))
    if q and q.strip():
        escaped = q.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        where.append(exists().where(Message.conversation_id == Conversation.id,
                                    Message.text.ilike(pattern, escape="\\")))
    return where


def summarise(session: Session, convs: Sequence[Conversation]) -> list[ConversationSummary]:
    ids = [c.id for c in convs]
    if not ids:
        return []
    counts = {
        cid: (n, last) for cid, n, last in session.execute(
            select(Message.conversation_id, func.count(Message.id), func.max(Message.created_at))
            .where(Message.conversation_id.in_(ids)).group_by(Message.conversation_id)
        )
    }
    first_seen = (
        select(Message.conversation_id, func.min(Message.created_at).label("first"))
        .where(Message.conversation_id.in_(ids), Message.role == "customer")
        .group_by(Message.conversation_id).subquery()
    )
    previews = dict(session.execute(
        select(Message.conversation_id, Message.text).join(
            first_seen, and_(Message.conversation_id == first_seen.c.conversation_id,
                             Message.created_at == first_seen.c.first)
        ).where(Message.role == "customer")
    ).all())
    result = []
    for c in convs:
        n, last = counts.get(c.id, (0, None))
        text = previews.get(c.id, "")
        result.append(ConversationSummary(
            id=c.id, channel=c.channel, customer_ref=c.customer_ref, status=c.status,
            started_at=c.started_at, ended_at=c.ended_at, message_count=int(n),
            last_message_at=last, preview=text[:PREVIEW_CHARS], frustrated=bool(c.frustrated),
        ))
    return result


# --- export ----------------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    return None if value is None else _utc(value).isoformat()


def export_lines(sessions: Callable[[], Session], fmt: str, since: datetime | None,
                 until: datetime | None, *, redactor: Redactor | None = None) -> Iterator[str]:
    """Yield the export in pages of conversations (keyset paging: memory stays bounded), each
    redacted by ``redactor`` (``redacted_view``) when one is given."""
    if fmt == "csv":
        yield _csv_row(CSV_COLUMNS)
    after: tuple[datetime, str] | None = None
    while True:
        with sessions() as session:
            query = select(Conversation).order_by(Conversation.started_at, Conversation.id)
            if since is not None:
                query = query.where(Conversation.started_at >= since)
            if until is not None:
                query = query.where(Conversation.started_at < until)
            if after is not None:
                query = query.where(or_(
                    Conversation.started_at > after[0],
                    and_(Conversation.started_at == after[0], Conversation.id > after[1]),
                ))
            convs = session.scalars(query.limit(EXPORT_PAGE).options(
                selectinload(Conversation.messages).selectinload(Message.hits),
                selectinload(Conversation.handoffs), selectinload(Conversation.feedback),
            )).all()
            if not convs:
                return
            after = (convs[-1].started_at, convs[-1].id)
            views = [view_of(c) for c in convs]
            if redactor is not None:
                views = [redacted_view(v, redactor) for v in views]
        for view in views:
            if fmt == "csv":
                for m in view.messages:
                    yield _csv_row((
                        view.id, view.channel, view.customer_ref, view.status,
                        _iso(view.started_at), m.id, m.role, _iso(m.created_at), m.text, m.route,
                        m.confidence, m.latency_ms, m.model, m.index_version, m.reason, m.rating,
                        " ".join(h.record_id for h in m.hits if h.cited),
                        m.sentiment, m.frustration, m.frustrated,
                    ))
            else:
                yield json.dumps(_jsonable(view.model_dump()), ensure_ascii=False) + "\n"


def logged_text(redactor: Redactor, text: str, role: str, route: str | None) -> str:
    """What the log keeps of a message: the bot's approved texts (an FAQ answer, a fallback, a
    hand-over) as they are, since they are the company's words (its own phone and email
    included); anything a person wrote, and a generated reply (it may echo the customer),
    redacted."""
    if role == "bot" and route != "generated":
        return text
    return redactor.redact(text)


def redacted_view(view: ConversationView, redactor: Redactor) -> ConversationView:
    """The view as exported: every free text field redacted as the log stores it (rows written
    before redaction was on, or under another CHATBOT_STORE_VERBATIM, come out the same)."""
    messages = tuple(m.model_copy(update={
        "text": logged_text(redactor, m.text, m.role, m.route),
        "reason": redactor.redact_optional(m.reason),
    }) for m in view.messages)
    return view.model_copy(update={
        "customer_ref": redactor.pseudonymise(view.customer_ref),
        "messages": messages,
        "handoffs": tuple(h.model_copy(update={"reason": redactor.redact(h.reason)})
                          for h in view.handoffs),
        "feedback": tuple(f.model_copy(update={"comment": redactor.redact_optional(f.comment)})
                          for f in view.feedback),
    })


def _csv_row(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- statistics ------------------------------------------------------------------------------
def _ratio(part: int | float, whole: int | float) -> float | None:
    return None if not whole else part / whole


def outcomes() -> tuple[ColumnElement[bool], ColumnElement[bool], ColumnElement[bool]]:
    """Per conversation (correlated to ``Conversation.id``): the bot replied at all, the bot
    answered (FAQ or generated), a hand-over was asked for. Deflected = answered and no
    hand-over; the statistics and their daily series share these definitions."""
    has_bot = exists().where(Message.conversation_id == Conversation.id, Message.role == "bot")
    answered = exists().where(Message.conversation_id == Conversation.id, Message.role == "bot",
                              Message.route.in_(("faq", "generated")))
    has_handoff = exists().where(Handoff.conversation_id == Conversation.id)
    return has_bot, answered, has_handoff


def compute_stats(session: Session, since: datetime | None) -> Stats:
    conv_where = [Conversation.started_at >= since] if since is not None else []
    msg_where = [Message.created_at >= since] if since is not None else []
    fb_where = [Feedback.created_at >= since] if since is not None else []

    def count(query: Any) -> int:
        return int(session.scalar(query) or 0)

    n_conv = count(select(func.count(Conversation.id)).where(*conv_where))
    n_msg = count(select(func.count(Message.id)).where(*msg_where))
    bot = [Message.role == "bot", *msg_where]
    n_bot = count(select(func.count(Message.id)).where(*bot))
    n_fallback = count(select(func.count(Message.id)).where(*bot, Message.route == "fallback"))
    has_bot, answered, has_handoff = outcomes()
    n_with_bot = count(select(func.count(Conversation.id)).where(*conv_where, has_bot))
    n_deflected = count(select(func.count(Conversation.id))
                        .where(*conv_where, answered, ~has_handoff))
    n_handed = count(select(func.count(Conversation.id)).where(*conv_where, has_handoff))
    csat = session.scalar(select(func.avg(Feedback.csat)).where(*fb_where,
                                                                Feedback.csat.is_not(None)))
    ups = count(select(func.count(Feedback.id)).where(*fb_where, Feedback.rating == "up"))
    rated = count(select(func.count(Feedback.id)).where(*fb_where, Feedback.rating.is_not(None)))
    latencies = [float(v) for v in session.scalars(
        select(Message.latency_ms).where(*bot, Message.latency_ms.is_not(None))
    ) if v is not None]
    p50, p95 = np.percentile(latencies, [50, 95]).tolist() if latencies else (None, None)
    with_signals = [*conv_where, Conversation.sentiment_avg.is_not(None)]
    sentiment = session.scalar(select(func.avg(Conversation.sentiment_avg)).where(*with_signals))
    n_signals = count(select(func.count(Conversation.id)).where(*with_signals))
    n_frustrated = count(select(func.count(Conversation.id))
                         .where(*with_signals, Conversation.frustrated.is_(True)))
    n_offered = count(select(func.count(Message.id)).where(*bot, Message.suggestions.is_not(None)))
    n_clicks = count(select(func.count(Message.id)).where(
        *msg_where, Message.role == "customer", Message.suggested_faq_id.is_not(None)))
    return Stats(
        conversations=n_conv, messages=n_msg, bot_messages=n_bot,
        deflection_rate=_ratio(n_deflected, n_with_bot),
        fallback_rate=_ratio(n_fallback, n_bot),
        handoff_rate=_ratio(n_handed, n_conv),
        csat_avg=None if csat is None else float(csat),
        thumbs_up_rate=_ratio(ups, rated),
        latency_p50_ms=None if p50 is None else round(p50, 3),
        latency_p95_ms=None if p95 is None else round(p95, 3),
        sentiment_avg=None if sentiment is None else round(float(sentiment), 4),
        frustrated_rate=_ratio(n_frustrated, n_signals),
        suggestions_offered=n_offered, suggestion_clicks=n_clicks,
        suggestion_click_rate=_ratio(n_clicks, n_offered),
        since=since,
    )


def recent_answer_counts(session: Session, *, days: float = 7.0,
                         now: datetime | None = None) -> dict[str, int]:
    """FAQ id -> bot replies citing it in the last ``days`` days (the opening suggestions'
    "most asked recently")."""
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    rows = session.execute(
        select(RetrievalHit.record_id, func.count(RetrievalHit.id))
        .join(Message, Message.id == RetrievalHit.message_id)
        .where(Message.role == "bot", Message.created_at >= since,
               RetrievalHit.kind == "faq", RetrievalHit.cited.is_(True))
        .group_by(RetrievalHit.record_id)
    ).all()
    return {str(record_id): int(n) for record_id, n in rows}
