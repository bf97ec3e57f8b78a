"""Signals at the edges, on SQLite and PostgreSQL: the /chat body, the SSE ``meta`` and ``done``
events, the OpenAI-compatible ``chatbot`` extension, and the admin statistics and their daily
series. The pipeline is the real one with stand-in retriever and generator where the reply's
wording matters, the stand-in pipeline (real SignalReader) elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi.testclient import TestClient
from live_helpers import sse_events
from sqlalchemy import Engine
from standin import StandInPipeline
from standin_stages import SHIPPING, StandInGenerator, StandInRetriever, hit

from chatbot.answering import prompt
from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.types import AnswerPipeline
from chatbot.web.app import create_app

ADMIN = {"Authorization": "Bearer dev-admin-token"}
UPSET = "I already asked this, when will my parcel come"  # frustrated, not strongly
ANSWER = "Standard shipping takes 3-5 business days [1]."
SIGNAL_KEYS = {"sentiment", "frustration", "frustrated"}


def _client(settings: Settings, engine: Engine, pipeline: AnswerPipeline) -> TestClient:
    return TestClient(create_app(settings, pipeline=pipeline, engine=engine, mount_ui=False))


def _real_pipeline(settings: Settings) -> AnswerPipeline:
    retriever = StandInRetriever({UPSET: [hit(SHIPPING, 0.72)]},
                                 {"answer": 0.6, "faq": 0.85, "support": 0.5, "source": "test"})
    return build_pipeline(settings, retriever=retriever, generator=StandInGenerator(ANSWER))


@pytest.fixture
def client(settings: Settings, migrated_engine: Engine) -> Iterator[TestClient]:  # noqa: F811
    with _client(settings, migrated_engine, StandInPipeline()) as test_client:
        yield test_client


def test_chat_returns_the_signals_of_the_customer_message(client: TestClient) -> None:
    calm = client.post("/api/v1/chat", json={"message": "how long is delivery"}).json()
    assert set(calm["signals"]) == SIGNAL_KEYS and calm["signals"]["frustrated"] is False
    upset = client.post("/api/v1/chat", json={
        "message": "This is RIDICULOUS, third time asking: how long is delivery?!"}).json()
    signals = upset["signals"]
    assert signals["frustrated"] is True and signals["sentiment"] < 0
    assert 0.0 <= signals["frustration"] <= 1.0


def test_a_frustrated_stream_sends_signals_first_and_streams_exactly_the_reply(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    with _client(settings, migrated_engine, _real_pipeline(settings)) as client:
        response = client.post("/api/v1/chat/stream", json={"message": UPSET})
    events = sse_events(response.text)
    name, meta = events[0]
    assert name == "meta" and meta["signals"]["frustrated"] is True
    name, done = events[-1]
    assert name == "done" and done["signals"] == meta["signals"]
    tokens = "".join(data["text"] for name, data in events if name == "token")
    assert tokens == done["reply"] == (
        f"{prompt.FRUSTRATED_ACK} {ANSWER}\n\n{prompt.FRUSTRATED_OFFER}")
    assert done["route"] == "generated" and not done["handoff"]


def test_signals_are_null_when_switched_off(settings: Settings,
                                           migrated_engine: Engine) -> None:  # noqa: F811
    off = settings.model_copy(update={"signals": False})
    with _client(off, migrated_engine, _real_pipeline(off)) as client:
        body = client.post("/api/v1/chat", json={"message": UPSET}).json()
        events = sse_events(client.post("/api/v1/chat/stream", json={"message": UPSET}).text)
    assert body["signals"] is None and body["reply"] == ANSWER
    assert events[0][1]["signals"] is None and events[-1][1]["signals"] is None


def test_openai_compatible_extension_carries_the_signals(client: TestClient) -> None:
    body = client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "how long is delivery"}]}).json()
    assert set(body["chatbot"]["signals"]) == SIGNAL_KEYS


def test_admin_stats_and_daily_series_show_sentiment(client: TestClient) -> None:
    client.post("/api/v1/chat", json={"message": "how long is delivery"})
    client.post("/api/v1/chat", json={"message": "Useless. how long is delivery"})
    stats = client.get("/api/v1/admin/stats", headers=ADMIN).json()
    assert stats["frustrated_rate"] == 0.5 and -1.0 <= stats["sentiment_avg"] <= 1.0

    today = datetime.now(UTC).date()
    series = client.get("/api/v1/admin/stats/timeseries", headers=ADMIN).json()
    assert series["until"] == today.isoformat() and len(series["days"]) == 30
    last = series["days"][-1]
    assert last["day"] == today.isoformat() and last["conversations"] == 2
    assert last["frustrated_rate"] == 0.5 and last["deflection_rate"] == 1.0
    assert last["sentiment_avg"] == pytest.approx(stats["sentiment_avg"], abs=1e-4)
    assert set(last) == {"day", "conversations", "deflection_rate", "handoff_rate",
                         "sentiment_avg", "frustrated_rate"}
    week = client.get("/api/v1/admin/stats/timeseries", headers=ADMIN, params={
        "since": (today - timedelta(days=6)).isoformat(), "until": today.isoformat()}).json()
    assert [d["conversations"] for d in week["days"]] == [0] * 6 + [2]


def test_daily_series_rejects_bad_ranges_and_needs_the_token(client: TestClient) -> None:
    path = "/api/v1/admin/stats/timeseries"
    assert client.get(path).status_code == 401
    reversed_range = client.get(path, headers=ADMIN,
                                params={"since": "2026-03-02", "until": "2026-03-01"})
    assert reversed_range.status_code == 422 and "after" in reversed_range.json()["error"]
    too_long = client.get(path, headers=ADMIN,
                          params={"since": "2024-01-01", "until": "2026-03-01"})
    assert too_long.status_code == 422
    assert client.get(path, headers=ADMIN, params={"since": "yesterday"}).status_code == 422
