"""Suggested questions at the API, on SQLite and PostgreSQL: the /chat body and the SSE ``done``
event carry them, the opening endpoint ranks recent answers first, a chip click is logged on
the customer message (and the offers on the bot message), and the admin statistics count both.
The pipeline is the stand-in (its suggestions are the FAQs after the answered one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi.testclient import TestClient
from live_helpers import sse_events
from sqlalchemy import Engine, select
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.conversations.models import Message
from chatbot.web.app import create_app

ADMIN = {"Authorization": "Bearer dev-admin-token"}


@pytest.fixture
def client(settings: Settings, migrated_engine: Engine) -> Iterator[TestClient]:  # noqa: F811
    app = create_app(settings, pipeline=StandInPipeline(), engine=migrated_engine,
                     mount_ui=False)
    with TestClient(app) as test_client:
        yield test_client


def _ids(body: dict[str, Any]) -> list[str]:
    return [s["faq_id"] for s in body["suggestions"]]


def test_an_answer_carries_suggestions_and_a_later_one_skips_what_was_answered(
        client: TestClient) -> None:
    first = client.post("/api/v1/chat", json={"message": "How do I return an item?"}).json()
    assert first["route"] == "faq"
    assert first["suggestions"] == [
        {"faq_id": "pay-001", "question": "Which payment methods do you accept?"},
        {"faq_id": "acc-001", "question": "How do I reset my password?"},
        {"faq_id": "ship-001", "question": "How long does standard shipping take?"},
    ]
    # The history the service hands the pipeline says ret-001 was answered: never offered again.
    second = client.post("/api/v1/chat", json={
        "message": "Which payment methods do you accept?",
        "conversation_id": first["conversation_id"]}).json()
    assert _ids(second) == ["acc-001", "ship-001", "ship-002"]


def test_no_suggestions_after_a_hand_over(client: TestClient) -> None:
    body = client.post("/api/v1/chat", json={"message": "I want a human"}).json()
    assert body["route"] == "handoff" and body["suggestions"] == []


def test_the_stream_done_event_carries_the_suggestions(client: TestClient) -> None:
    response = client.post("/api/v1/chat/stream", json={"message": "Do you ship to Canada?"})
    name, done = sse_events(response.text)[-1]
    assert name == "done" and _ids(done) == ["ret-001", "pay-001", "acc-001"]


def test_opening_suggestions_put_the_recently_answered_first(client: TestClient) -> None:
    for _ in range(2):
        client.post("/api/v1/chat", json={"message": "How do I reset my password?"})
    body = client.get("/api/v1/suggestions/opening").json()
    assert _ids(body) == ["acc-001", "ship-001", "ship-002"]
    assert body["suggestions"][0]["question"] == "How do I reset my password?"


def test_a_click_is_logged_and_counted_in_the_statistics(
        client: TestClient, migrated_engine: Engine) -> None:  # noqa: F811
    first = client.post("/api/v1/chat", json={"message": "How do I return an item?"}).json()
    chip = first["suggestions"][0]
    clicked = client.post("/api/v1/chat", json={
        "message": chip["question"], "conversation_id": first["conversation_id"],
        "channel": "widget", "suggestion": {"faq_id": chip["faq_id"]}}).json()
    assert clicked["route"] == "faq"
    with migrated_engine.connect() as connection:
        rows = connection.execute(
            select(Message.role, Message.suggested_faq_id, Message.suggestions)
            .where(Message.conversation_id == first["conversation_id"])
            .order_by(Message.created_at)).all()
    assert [tuple(r) for r in rows] == [
        ("customer", None, None),
        ("bot", None, "pay-001,acc-001,ship-001"),
        ("customer", "pay-001", None),
        ("bot", None, "acc-001,ship-001,ship-002"),
    ]
    stats = client.get("/api/v1/admin/stats", headers=ADMIN).json()
    assert stats["suggestions_offered"] == 2 and stats["suggestion_clicks"] == 1
    assert stats["suggestion_click_rate"] == 0.5


def test_a_bad_suggestion_field_is_a_422(client: TestClient,
                                         migrated_engine: Engine) -> None:  # noqa: F811
    response = client.post("/api/v1/chat", json={"message": "hello",
                                                 "suggestion": {"faq_id": ""}})
    assert response.status_code == 422
    assert response.json()["field"] == "suggestion.faq_id"  # says which field
    with migrated_engine.connect() as connection:  # and nothing was logged
        assert connection.execute(select(Message.id)).all() == []
