"""The topic report on SQLite and PostgreSQL: answered questions by the category of the cited
FAQ, ranked by volume and by the sentiment of the customer message each answered; unanswered
questions counted; entries missing from the index uncategorised; the categories read from the
serving index."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from sqlalchemy import Engine
from standin import FAQS, StandInPipeline

from chatbot.config import Settings
from chatbot.conversations.models import utcnow
from chatbot.conversations.service import ChatService
from chatbot.conversations.topics import UNCATEGORISED, categories_from, topic_report
from chatbot.errors import IndexNotReadyError
from chatbot.types import Document

CATEGORIES = {record_id: category for record_id, category, *_ in FAQS}
# Each opens its own conversation; the stand-in answers the first seven from an FAQ.
ASKED = {
    "Do you ship to Canada?": "shipping",
    "ship to canada?? awful": "shipping",  # frustrated
    "terrible: when will my package arrive": "shipping",
    "can i pay with paypal, great": "payments",
    "can i pay with paypal, great thanks": "payments",
    "forgot my password, useless": "account",  # frustrated
    "How do I return an item?": "returns",
}
UNANSWERED = ("what is the meaning of life", "i want a human")


@pytest.fixture
def service(settings: Settings, migrated_engine: Engine) -> ChatService:  # noqa: F811
    service = ChatService(settings, StandInPipeline(), migrated_engine)
    for text in (*ASKED, *UNANSWERED):
        service.chat(text)
    return service


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_answered_questions_are_ranked_by_volume_and_by_negative_sentiment(
        service: ChatService) -> None:
    reader = service.pipeline
    signals = {text: reader.read_signals(text) for text in (*ASKED, *UNANSWERED)}
    report = topic_report(service.engine, CATEGORIES)

    assert (report.answered, report.unanswered) == (7, 2)
    assert [(t.topic, t.questions) for t in report.by_volume] == [
        ("shipping", 3), ("payments", 2), ("account", 1), ("returns", 1)]
    by_name = {t.topic: t for t in report.by_volume}
    for name in by_name:
        expected = _mean([signals[text].sentiment for text, category in ASKED.items()
                          if category == name])
        assert by_name[name].sentiment_avg == pytest.approx(expected, abs=1e-3)
    assert [t.topic for t in report.by_sentiment] == sorted(
        by_name, key=lambda name: by_name[name].sentiment_avg)
    assert report.by_sentiment[-1].topic == "payments"  # the happiest customers last
    assert (by_name["shipping"].frustrated, by_name["account"].frustrated) == (1, 1)
    assert by_name["shipping"].frustrated_rate == pytest.approx(1 / 3)
    assert by_name["payments"].frustrated == 0
    assert by_name["shipping"].share == pytest.approx(3 / 7)
    assert by_name["shipping"].entries == ["ship-002", "ship-001"]  # most answered first
    assert report.unanswered_sentiment_avg == pytest.approx(
        _mean([signals[text].sentiment for text in UNANSWERED]), abs=1e-3)
    assert report.unanswered_frustrated == 0


def test_a_reply_takes_the_sentiment_of_the_message_it_answered(service: ChatService) -> None:
    first = service.chat("can i pay with paypal, great")
    later = service.chat("forgot my password!! ridiculous", conversation_id=first.conversation_id)
    assert later.signals is not None and later.signals.frustrated
    report = topic_report(service.engine, CATEGORIES)
    account = next(t for t in report.by_volume if t.topic == "account")
    assert account.questions == 2 and account.frustrated == 2
    payments = next(t for t in report.by_volume if t.topic == "payments")
    assert payments.frustrated == 0 and payments.sentiment_avg is not None
    assert payments.sentiment_avg > 0  # the later angry message is not the paypal question's


def test_filters_unknown_entries_and_the_sentiment_ranking_threshold(
        service: ChatService) -> None:
    report = topic_report(service.engine, {})  # no index: every answer is uncategorised
    assert [(t.topic, t.questions) for t in report.by_volume] == [(UNCATEGORISED, 7)]

    ranked = topic_report(service.engine, CATEGORIES, min_questions=2).by_sentiment
    assert [t.topic for t in ranked] == ["shipping", "payments"]

    later = topic_report(service.engine, CATEGORIES, since=utcnow() + timedelta(minutes=5))
    assert (later.answered, later.unanswered, later.by_volume) == (0, 0, [])
    assert later.unanswered_sentiment_avg is None


def test_categories_come_from_the_serving_index() -> None:
    documents = [
        Document(id="a", record_id="ship-001", kind="faq", question="q", answer="a",
                 category="shipping"),
        Document(id="b", record_id="misc-1", kind="faq", question="q", answer="a"),
    ]
    pipeline = SimpleNamespace(retriever=SimpleNamespace(documents=documents))
    assert categories_from(pipeline) == {"ship-001": "shipping"}
    assert categories_from(StandInPipeline()) == {}  # no retriever: no categories

    class NoIndex:
        @property
        def documents(self) -> list[Document]:
            raise IndexNotReadyError("no index: run `chatbot reindex`")

    assert categories_from(SimpleNamespace(retriever=NoIndex())) == {}
