"""ChatService: every round trip is logged (customer message first), hand-overs, feedback,
the conversation browser, exports and statistics, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from pydantic import ValidationError
from sqlalchemy import Engine, func, select
from standin import FALLBACK_TEXT, INDEX_VERSION, StandInPipeline

from chatbot.config import Settings
from chatbot.conversations.engine import make_sessionmaker
from chatbot.conversations.models import Handoff, Message, RetrievalHit
from chatbot.conversations.service import ChatResult, ChatService
from chatbot.conversations.views import Transcript, TranscriptMessage
from chatbot.errors import GenerationError, InvalidRequestError, NotFoundError
from chatbot.types import Reply, Signals, Turn


@pytest.fixture
def service(settings: Settings, migrated_engine: Engine) -> ChatService:  # noqa: F811
    return ChatService(settings, StandInPipeline(), migrated_engine)


def _messages(engine: Engine, conversation_id: str) -> list[Message]:
    with make_sessionmaker(engine)() as session:
        return list(session.scalars(select(Message).where(
            Message.conversation_id == conversation_id).order_by(Message.created_at)))


class CrashingPipeline(StandInPipeline):
    """Records whether the customer's message was already committed, then crashes."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.seen_in_db: list[str] = []

    def answer(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Reply:
        with make_sessionmaker(self.engine)() as session:  # a separate connection
            self.seen_in_db += list(session.scalars(select(Message.text)))
        raise RuntimeError("model crashed")


def test_customer_message_is_committed_before_the_pipeline_runs(
    settings: Settings, migrated_engine: Engine  # noqa: F811
) -> None:
    pipeline = CrashingPipeline(migrated_engine)
    service = ChatService(settings, pipeline, migrated_engine)
    with pytest.raises(RuntimeError):
        service.chat("where is my order?")
    assert pipeline.seen_in_db == ["where is my order?"]
    with make_sessionmaker(migrated_engine)() as session:
        rows = session.execute(select(Message.role, Message.text)).all()
    assert [tuple(r) for r in rows] == [("customer", "where is my order?")]


def test_round_trip_is_logged_with_hits_route_confidence_and_latency(
    service: ChatService, migrated_engine: Engine  # noqa: F811
) -> None:
    result = service.chat("how long is delivery", channel="web", customer_ref="cust-7")
    assert result.reply.route.value == "faq" and not result.handoff
    customer, bot = _messages(migrated_engine, result.conversation_id)
    assert (customer.role, customer.text) == ("customer", "how long is delivery")
    assert bot.id == result.message_id and bot.role == "bot"
    assert bot.text == "Standard shipping takes 3-5 business days."
    assert (bot.route, bot.confidence, bot.model, bot.index_version) == (
        "faq", 1.0, "standin", INDEX_VERSION)
    assert bot.reason == "matched FAQ ship-001"
    assert bot.latency_ms is not None and bot.latency_ms >= 0
    with make_sessionmaker(migrated_engine)() as session:
        hits = session.scalars(select(RetrievalHit).where(RetrievalHit.message_id == bot.id)
                               .order_by(RetrievalHit.rank)).all()
    assert [h.record_id for h in hits][0] == "ship-001" and len(hits) == 3
    assert [h.cited for h in hits] == [True, False, False]
    assert hits[0].source == "faq.csv" and hits[0].kind == "faq"


def test_history_for_the_pipeline_comes_from_the_database(service: ChatService) -> None:
    first = service.chat("how long is delivery")
    service.chat("do you ship to canada", conversation_id=first.conversation_id)
    pipeline = service.pipeline
    assert isinstance(pipeline, StandInPipeline)
    question, history = pipeline.calls[-1]
    assert question == "do you ship to canada"
    assert [(t.role, t.text, t.route) for t in history] == [
        ("customer", "how long is delivery", None),
        ("agent", "Standard shipping takes 3-5 business days.", "faq"),
    ]


def test_stream_yields_deltas_then_result_and_logs_it(
    service: ChatService, migrated_engine: Engine  # noqa: F811
) -> None:
    stream = service.chat_stream("can i pay with paypal", channel="widget")
    items = list(stream)
    deltas, final = items[:-1], items[-1]
    assert all(isinstance(d, str) for d in deltas) and len(deltas) > 3
    assert isinstance(final, ChatResult) and final.conversation_id == stream.conversation_id
    assert "".join(deltas) == final.reply.text  # type: ignore[arg-type]
    texts = [m.text for m in _messages(migrated_engine, final.conversation_id)]
    assert texts == ["can i pay with paypal", final.reply.text]


def test_stream_without_a_final_reply_is_an_error(settings: Settings,
                                                  migrated_engine: Engine) -> None:  # noqa: F811
    class NoReply(StandInPipeline):
        def stream(self, question: str, history: Sequence[Turn] = (),
                   signals: Signals | None = None) -> Iterator[str | Reply]:
            yield "partial"

    service = ChatService(settings, NoReply(), migrated_engine)
    stream = service.chat_stream("hello")
    assert next(stream) == "partial"
    with pytest.raises(GenerationError):
        next(stream)
    assert [m.role for m in _messages(migrated_engine, stream.conversation_id)] == ["customer"]


def test_handoff_reply_marks_conversation_and_writes_handoff(
    service: ChatService, migrated_engine: Engine  # noqa: F811
) -> None:
    result = service.chat("I want to talk to a human")
    assert result.handoff and result.reply.route.value == "handoff"
    view = service.conversation(result.conversation_id)
    assert view.status == "handed_off"
    assert [h.reason for h in view.handoffs] == ["customer asked for a human"]


def test_close_keeps_a_pending_handoff_and_lists_as_closed(
    service: ChatService, migrated_engine: Engine  # noqa: F811
) -> None:
    result = service.chat("what is the meaning of life")
    service.handoff(conversation_id=result.conversation_id, reason="bot could not help")
    ended = service.close(result.conversation_id)
    view = service.conversation(result.conversation_id)
    assert (view.status, view.ended_at) == ("closed", ended)
    assert view.handoffs[0].resolved_at is None  # agents still see the pending hand-over
    listed = service.list_conversations(status="closed")
    assert [c.id for c in listed] == [result.conversation_id]
    assert listed[0].ended_at == ended
    service.chat("hello again?", conversation_id=result.conversation_id)
    assert service.conversation(result.conversation_id).status == "handed_off"  # still pending


def test_customer_handoff_is_recorded_once_while_pending(
    service: ChatService, migrated_engine: Engine  # noqa: F811
) -> None:
    result = service.chat("what is the meaning of life")
    assert result.reply.text == FALLBACK_TEXT
    first = service.handoff(conversation_id=result.conversation_id, reason="bot could not help")
    again = service.handoff(conversation_id=result.conversation_id, reason="still waiting")
    assert first == again
    assert service.conversation(result.conversation_id).status == "handed_off"
    with make_sessionmaker(migrated_engine)() as session:
        assert session.scalar(select(func.count(Handoff.id))) == 1


@pytest.mark.parametrize("message, match", [
    ("", "the message is empty"), ("   \n", "the message is empty"),
    ("x" * 4001, "has 4001 characters, more than the 4000 allowed"),
])
def test_bad_messages_are_rejected_and_nothing_is_stored(
    service: ChatService, migrated_engine: Engine, message: str, match: str  # noqa: F811
) -> None:
    with pytest.raises(InvalidRequestError, match=match) as info:
        service.chat(message)
    assert info.value.field == "message"
    with make_sessionmaker(migrated_engine)() as session:
        assert session.scalar(select(func.count(Message.id))) == 0


def test_a_message_is_answered_and_logged_without_surrounding_whitespace(
        service: ChatService) -> None:
    result = service.chat("  how long is delivery \n")
    assert service.pipeline.calls[-1][0] == "how long is delivery"  # type: ignore[attr-defined]
    assert service.conversation(result.conversation_id).messages[0].text == "how long is delivery"


def test_unknown_ids_raise_not_found(service: ChatService) -> None:
    with pytest.raises(NotFoundError):
        service.chat("hello", conversation_id="no-such-id")
    with pytest.raises(NotFoundError):
        service.conversation("no-such-id")
    with pytest.raises(NotFoundError):
        service.handoff(conversation_id="no-such-id", reason="x")
    with pytest.raises(NotFoundError):
        service.feedback(message_id="no-such-id", rating="up")


def test_feedback_on_message_replaces_thumbs_and_keeps_csat(service: ChatService) -> None:
    result = service.chat("forgot my password")
    first = service.feedback(message_id=result.message_id, rating="up")
    second = service.feedback(message_id=result.message_id, rating="down")
    service.feedback(conversation_id=result.conversation_id, csat=5, comment="quick!")
    assert first == second
    view = service.conversation(result.conversation_id)
    assert [m.rating for m in view.messages] == [None, "down"]
    assert sorted((f.rating, f.csat, f.comment) for f in view.feedback if f.csat) == [
        (None, 5, "quick!")]


@pytest.mark.parametrize("kwargs, field", [
    ({"rating": "up"}, "message_id"),
    ({"conversation_id": "c", "rating": "meh"}, "rating"),
    ({"conversation_id": "c", "csat": 6}, "csat"),
    ({"conversation_id": "c"}, "rating"),
])
def test_bad_feedback_says_which_field(service: ChatService, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        service.feedback(**kwargs)
    assert info.value.field == field


def test_list_filters_search_and_paginate(service: ChatService) -> None:
    a = service.chat("how long is delivery", channel="web")
    b = service.chat("talk to a human please", channel="widget")
    c = service.chat("Do you ship to CANADA?", channel="web")
    everything = service.list_conversations()
    assert [s.id for s in everything] == [c.conversation_id, b.conversation_id, a.conversation_id]
    assert [s.id for s in service.list_conversations(channel="web")] == [
        c.conversation_id, a.conversation_id]
    assert [s.id for s in service.list_conversations(status="handed_off")] == [b.conversation_id]
    assert [s.id for s in service.list_conversations(q="canada")] == [c.conversation_id]
    assert [s.id for s in service.list_conversations(q="100%")] == []  # % is literal
    page = service.list_conversations(limit=1, offset=1)
    assert [s.id for s in page] == [b.conversation_id]
    assert service.count_conversations(channel="web") == 2
    assert everything[0].message_count == 2 and everything[0].preview == "Do you ship to CANADA?"
    future = datetime.now(UTC) + timedelta(hours=1)
    assert service.list_conversations(since=future) == []
    assert len(service.list_conversations(until=future)) == 3


def test_export_contains_every_message_verbatim(service: ChatService) -> None:
    html = '<img src=x onerror="alert(1)"> how long is delivery'
    first = service.chat(html)
    service.chat("can i pay with paypal", conversation_id=first.conversation_id)
    service.chat("something else entirely")
    rows = list(csv.DictReader(io.StringIO("".join(service.export("csv")))))
    assert len(rows) == 6
    assert rows[0]["text"] == html and rows[3]["cited"] == "pay-001"
    lines = list(service.export("jsonl"))
    assert len(lines) == 2
    convs = [json.loads(line) for line in lines]
    assert convs[0]["messages"][0]["text"] == html
    assert [len(c["messages"]) for c in convs] == [4, 2]
    with pytest.raises(InvalidRequestError):
        service.export("xml")


def test_stats_from_a_known_log(service: ChatService) -> None:
    deflected = service.chat("how long is delivery")
    service.feedback(message_id=deflected.message_id, rating="up")
    fell_back = service.chat("what is the meaning of life")
    service.handoff(conversation_id=fell_back.conversation_id, reason="unhelpful")
    service.feedback(conversation_id=fell_back.conversation_id, csat=2)
    answered_then_human = service.chat("forgot my password")
    service.feedback(message_id=answered_then_human.message_id, rating="down")
    service.feedback(conversation_id=answered_then_human.conversation_id, csat=5)
    service.chat("talk to a human", conversation_id=answered_then_human.conversation_id)
    stats = service.stats()
    assert (stats.conversations, stats.messages, stats.bot_messages) == (3, 8, 4)
    assert stats.deflection_rate == pytest.approx(1 / 3)  # only the first never wanted a human
    assert stats.fallback_rate == pytest.approx(1 / 4)
    assert stats.handoff_rate == pytest.approx(2 / 3)
    assert stats.csat_avg == pytest.approx(3.5)
    assert stats.thumbs_up_rate == pytest.approx(0.5)
    assert stats.latency_p50_ms is not None and stats.latency_p95_ms is not None
    assert stats.latency_p50_ms <= stats.latency_p95_ms
    later = service.stats(since=datetime.now(UTC) + timedelta(minutes=1))
    assert (later.conversations, later.messages, later.fallback_rate) == (0, 0, None)


def test_latency_percentiles_interpolate_like_percentile_cont(service: ChatService) -> None:
    """numpy.percentile's default (linear) method is PostgreSQL's percentile_cont."""
    assert np.percentile([10.0, 20.0, 30.0, 40.0], 50) == 25.0
    assert np.percentile([5.0], 95) == 5.0
    assert np.percentile(list(map(float, range(1, 101))), 95) == pytest.approx(95.05)
    assert service.stats().latency_p50_ms is None  # no bot replies yet: None, not a made-up 0
    for question in ("how long is delivery", "forgot my password", "do you ship to canada"):
        service.chat(question)
    with make_sessionmaker(service.engine)() as session:
        latencies = [float(v) for v in session.scalars(
            select(Message.latency_ms).where(Message.role == "bot")) if v is not None]
    stats = service.stats()
    assert stats.latency_p50_ms == pytest.approx(round(float(np.percentile(latencies, 50)), 3))
    assert stats.latency_p95_ms == pytest.approx(round(float(np.percentile(latencies, 95)), 3))


def test_views_are_frozen_utc_and_the_transcript_drops_admin_fields(
        service: ChatService) -> None:
    result = service.chat("how long is delivery", customer_ref="acct-1")
    view = service.conversation(result.conversation_id)
    with pytest.raises(ValidationError):
        view.status = "closed"  # type: ignore[misc]
    assert view.started_at.tzinfo is not None and view.messages[0].created_at.tzinfo is not None
    assert view.customer_ref == "acct-1" and view.messages[1].hits[0].record_id == "ship-001"
    transcript = Transcript.of(view)
    assert type(transcript) is Transcript and not hasattr(transcript, "customer_ref")
    assert all(type(m) is TranscriptMessage for m in transcript.messages)
    assert [m.text for m in transcript.messages] == [m.text for m in view.messages]


def test_admin_token_check(service: ChatService) -> None:
    assert service.check_admin_token("dev-admin-token")
    assert not service.check_admin_token("wrong")
    assert not service.check_admin_token(None)
