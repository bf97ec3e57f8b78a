"""The monitoring routes, on SQLite and PostgreSQL: ``GET /api/v1/admin/topics`` and
``GET /api/v1/admin/alerts`` need the admin token; topics take their categories from the
serving pipeline's index; the app's background check fires the frustration alert by itself
(a real local receiver gets one signed webhook) and stops with the app, or is off at 0."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi.testclient import TestClient
from live_helpers import WebhookReceiver
from sqlalchemy import Engine
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.conversations.alerts import EVENT
from chatbot.conversations.webhooks import SIGNATURE_HEADER, verify
from chatbot.types import Document
from chatbot.web.app import create_app

ADMIN = {"Authorization": "Bearer dev-admin-token"}
SECRET = "monitoring-secret"
UPSET = "forgot my password, useless"  # frustrated; the stand-in answers it from acc-001


class Shelf:
    """Stands in for the one part of the retriever the topic report reads: its documents."""

    def __init__(self, documents: list[Document]) -> None:
        self.documents = documents


class CategorisedStandIn(StandInPipeline):
    """The stand-in pipeline with a retriever that lists its documents, like the real one."""

    def __init__(self) -> None:
        super().__init__()
        self.retriever = Shelf(list(self._docs))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


def _client(settings: Settings, engine: Engine, **overrides: object) -> TestClient:
    settings = settings.model_copy(update=overrides)
    return TestClient(create_app(settings, pipeline=CategorisedStandIn(), engine=engine,
                                 mount_ui=False))


@pytest.mark.parametrize("path", ["/api/v1/admin/topics", "/api/v1/admin/alerts"])
def test_monitoring_routes_need_the_admin_token(settings: Settings, migrated_engine: Engine,  # noqa: F811
                                                path: str) -> None:
    with _client(settings, migrated_engine, alert_interval_s=0) as client:
        assert client.get(path).status_code == 401
        wrong = client.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "admin token" in wrong.json()["error"]
        assert client.get(path, headers=ADMIN).status_code == 200


def test_topics_are_ranked_with_the_categories_of_the_serving_index(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    with _client(settings, migrated_engine, alert_interval_s=0) as client:
        for text in ("Do you ship to Canada?", "when will my package arrive, worst service ever",
                     UPSET, "can i pay with paypal, great", "what is the meaning of life"):
            assert client.post("/api/v1/chat", json={"message": text}).status_code == 200
        body = client.get("/api/v1/admin/topics", headers=ADMIN).json()
        assert (body["answered"], body["unanswered"]) == (4, 1)
        assert [(t["topic"], t["questions"]) for t in body["by_volume"]] == [
            ("shipping", 2), ("account", 1), ("payments", 1)]
        assert body["by_sentiment"][-1]["topic"] == "payments"
        assert body["by_sentiment"][0]["sentiment_avg"] < 0
        assert {t["topic"]: t["frustrated"] for t in body["by_volume"]} == {
            "shipping": 1, "account": 1, "payments": 0}
        ranked = client.get("/api/v1/admin/topics?min_questions=2", headers=ADMIN).json()
        assert [t["topic"] for t in ranked["by_sentiment"]] == ["shipping"]
        assert client.get("/api/v1/admin/topics?min_questions=0",
                          headers=ADMIN).status_code == 422


def test_the_app_checks_the_alert_in_the_background_and_fires_it_once(
        settings: Settings, migrated_engine: Engine, receiver: WebhookReceiver  # noqa: F811
) -> None:
    url = receiver.start()
    with _client(settings, migrated_engine, alert_interval_s=0.1, alert_min_conversations=3,
                 alert_frustrated_share=0.5, webhook_urls=[url], webhook_secret=SECRET) as client:
        before = client.get("/api/v1/admin/alerts", headers=ADMIN).json()[0]
        assert before["active"] is False and before["threshold"] == 0.5
        for _ in range(3):
            assert client.post("/api/v1/chat", json={"message": UPSET}).status_code == 200
        (sent,) = receiver.wait_for(1)
        assert sent.json()["event"] == EVENT
        assert verify(SECRET, sent.body, sent.headers[SIGNATURE_HEADER])
        time.sleep(0.5)  # several more checks: still one webhook
        (alert,) = client.get("/api/v1/admin/alerts", headers=ADMIN).json()
        assert alert["active"] is True and alert["fired_count"] == 1
        assert (alert["conversations"], alert["frustrated"], alert["share"]) == (3, 3, 1.0)
        assert alert["since"] is not None
    assert [call.json()["event"] for call in receiver.calls].count(EVENT) == 1


def test_the_check_is_off_at_interval_zero(settings: Settings,
                                           migrated_engine: Engine) -> None:  # noqa: F811
    with _client(settings, migrated_engine, alert_interval_s=0, alert_min_conversations=1) as c:
        assert c.post("/api/v1/chat", json={"message": UPSET}).status_code == 200
        time.sleep(0.2)
        (alert,) = c.get("/api/v1/admin/alerts", headers=ADMIN).json()
        # Measured live for the banner, but never evaluated, so never fired.
        assert (alert["frustrated"], alert["active"], alert["evaluated_at"]) == (1, False, None)
