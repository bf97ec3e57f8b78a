"""Reading the conversation log: typed views, filters, statistics and exports.

The write side (and the public entry points) live in ``chatbot.conversations.service.ChatService``; this module
holds the read-only queries it delegates to, so each module stays small. Everything returned is
a frozen dataclass detached from the session, safe to hand to the API and the UI.

Statistics, over conversations started (and messages written) since a time:
- deflection_rate: conversations the bot answered (an FAQ or generated reply) that never asked
  for a human, over conversations with at least one bot reply;
- fallback_rate: bot replies that were fallbacks, over bot replies;
- handoff_rate: conversations with a hand-over, over conversations;
- csat_avg, thumbs_up_rate (up over up+down), latency p50/p95 of bot replies (linear
  interpolation, like PostgreSQL's percentile_cont).
Rates are None when their denominator is zero, never a made-up 0.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from chatbot.conversations.models import (
    CHANNELS,
    CONVERSATION_STATUSES,
    Conversation,
    Feedback,
    Handoff,
    Message,
)
from chatbot.errors import InvalidRequestError
from chatbot.types import Reply

PREVIEW_CHARS = 120
SNIPPET_CHARS = 240
EXPORT_PAGE = 200
CSV_COLUMNS = (
    "conversation_id", "channel", "customer_ref", "status", "started_at", "message_id", "role",
    "created_at", "text", "route", "confidence", "latency_ms", "model", "index_version",
    "reason", "rating", "cited",
)


@dataclass(frozen=True)
class HitView:
    document_id: str
    record_id: str
    source: str
    kind: str
    score: float
    dense_score: float | None
    keyword_score: float | None
    rank: int
    cited: bool


@dataclass(frozen=True)
class MessageView:
    id: str
    role: str
    text: str
    created_at: datetime
    route: str | None
    confidence: float | None
    latency_ms: float | None
    model: str | None
    index_version: str | None
    reason: str | None
    rating: str | None  # the latest thumbs up/down on this message
    hits: tuple[HitView, ...]


@dataclass(frozen=True)
class HandoffView:
    id: str
    reason: str
    requested_at: datetime
    assigned_to: str | None
    resolved_at: datetime | None


@dataclass(frozen=True)
class FeedbackView:
    id: str
    message_id: str | None
    rating: str | None
    csat: int | None
    comment: str | None
    created_at: datetime


@dataclass(frozen=True)
class ConversationView:
    id: str
    channel: str
    customer_ref: str | None
    status: str
    language: str | None
    started_at: datetime
    ended_at: datetime | None
    messages: tuple[MessageView, ...]
    handoffs: tuple[HandoffView, ...]
    feedback: tuple[FeedbackView, ...]


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    channel: str
    customer_ref: str | None
    status: str
    started_at: datetime
    ended_at: datetime | None
    message_count: int
    last_message_at: datetime | None
    preview: str  # the start of the first customer message


@dataclass(frozen=True)
class Stats:
    conversations: int
    messages: int
    bot_messages: int
    deflection_rate: float | None
    fallback_rate: float | None
    handoff_rate: float | None
    csat_avg: float | None
    thumbs_up_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    since: datetime | None = None


@dataclass(frozen=True)
class Source:
    """A numbered source shown under an answer (``n`` matches the [n] citations)."""

    n: int
    record_id: str
    title: str
    snippet: str
    source: str
    kind: str
    score: float


def sources(reply: Reply) -> list[Source]:
    """The reply's cited hits as numbered sources with a short snippet of each answer."""
    result = []
    for n, hit in enumerate(reply.sources, start=1):
        doc = hit.document
        snippet = doc.answer if len(doc.answer) <= SNIPPET_CHARS else (
            doc.answer[: SNIPPET_CHARS - 1].rstrip() + "…"
        )
        result.append(Source(n, doc.record_id, doc.question, snippet, doc.source, doc.kind,
                             float(hit.score)))
    return result


def to_utc(value: datetime | None) -> datetime | None:
    """UTC-aware; a naive time is taken as UTC (SQLite stores and returns naive UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


# --- views -----------------------------------------------------------------------------------
def view_of(conv: Conversation) -> ConversationView:
    """A detached view of a conversation loaded with messages, hits, hand-offs and feedback."""
    ratings: dict[str, str] = {}
    for fb in sorted(conv.feedback, key=lambda f: _utc(f.created_at)):
        if fb.message_id and fb.rating:
            ratings[fb.message_id] = fb.rating
    messages = tuple(
        MessageView(
            m.id, m.role, m.text, _utc(m.created_at), m.route, m.confidence, m.latency_ms,
            m.model, m.index_version, m.reason, ratings.get(m.id),
            tuple(HitView(h.document_id, h.record_id, h.source, h.kind, h.score, h.dense_score,
                          h.keyword_score, h.rank, bool(h.cited)) for h in m.hits),
        )
        for m in sorted(conv.messages, key=lambda m: _utc(m.created_at))
    )
    return ConversationView(
        conv.id, conv.channel, conv.customer_ref, conv.status, conv.language,
        _utc(conv.started_at), _opt_utc(conv.ended_at), messages,
        tuple(HandoffView(h.id, h.reason, _utc(h.requested_at), h.assigned_to,
                          _opt_utc(h.resolved_at)) for h in conv.handoffs),
        tuple(FeedbackView(f.id, f.message_id, f.rating, f.csat, f.comment, _utc(f.created_at))
              for f in conv.feedback),
    )


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
            c.id, c.channel, c.customer_ref, c.status, _utc(c.started_at), _opt_utc(c.ended_at),
            int(n), _opt_utc(last), text[:PREVIEW_CHARS],
        ))
    return result


# --- export ----------------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    return None if value is None else _utc(value).isoformat()


def export_lines(sessions: Callable[[], Session], fmt: str, since: datetime | None,
                 until: datetime | None) -> Iterator[str]:
    """Yield the export in pages of conversations (keyset paging: memory stays bounded)."""
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
        for view in views:
            if fmt == "csv":
                for m in view.messages:
                    yield _csv_row((
                        view.id, view.channel, view.customer_ref, view.status,
                        _iso(view.started_at), m.id, m.role, _iso(m.created_at), m.text, m.route,
                        m.confidence, m.latency_ms, m.model, m.index_version, m.reason, m.rating,
                        " ".join(h.record_id for h in m.hits if h.cited),
                    ))
            else:
                yield json.dumps(_jsonable(asdict(view)), ensure_ascii=False) + "\n"


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
def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..1) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ratio(part: int | float, whole: int | float) -> float | None:
    return None if not whole else part / whole


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
    has_bot = exists().where(Message.conversation_id == Conversation.id, Message.role == "bot")
    answered = exists().where(Message.conversation_id == Conversation.id, Message.role == "bot",
                              Message.route.in_(("faq", "generated")))
    has_handoff = exists().where(Handoff.conversation_id == Conversation.id)
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
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    return Stats(
        conversations=n_conv, messages=n_msg, bot_messages=n_bot,
        deflection_rate=_ratio(n_deflected, n_with_bot),
        fallback_rate=_ratio(n_fallback, n_bot),
        handoff_rate=_ratio(n_handed, n_conv),
        csat_avg=None if csat is None else float(csat),
        thumbs_up_rate=_ratio(ups, rated),
        latency_p50_ms=None if p50 is None else round(p50, 3),
        latency_p95_ms=None if p95 is None else round(p95, 3),
        since=since,
    )
