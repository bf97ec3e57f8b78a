"""The frustration alert on SQLite and PostgreSQL: it fires once when the window's share of
frustrated conversations crosses the threshold (with enough volume), not again until it has
recovered, then again on a new crossing; a real local receiver gets exactly one signed
``alert.frustration`` POST per crossing, also when two replicas evaluate at once; the window
slides; the periodic job fires it by itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from live_helpers import WebhookReceiver
from sqlalchemy import Engine
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.conversations.alerts import EVENT, AlertJob, FrustrationAlert
from chatbot.conversations.models import utcnow
from chatbot.conversations.service import ChatService
from chatbot.conversations.webhooks import SIGNATURE_HEADER, WebhookSender, verify

SECRET = "alert-secret"
UPSET = "forgot my password, useless"  # frustrated, answered from an FAQ
CALM = "How do I return an item?"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


def _settings(settings: Settings, **overrides: object) -> Settings:
    return settings.model_copy(update={
        "alert_min_conversations": 4, "alert_frustrated_share": 0.5, "alert_window_minutes": 60,
        "webhook_secret": SECRET, "webhook_backoff_s": 0.05, **overrides})


def _chat(service: ChatService, text: str, times: int = 1) -> None:
    for _ in range(times):  # each in a conversation of its own
        service.chat(text)


def _alerts(receiver: WebhookReceiver) -> list[dict[str, object]]:
    return [call.json() for call in receiver.calls if call.json()["event"] == EVENT]


def test_fires_once_on_crossing_not_again_until_recovered_then_again(
        settings: Settings, migrated_engine: Engine, receiver: WebhookReceiver  # noqa: F811
) -> None:
    settings = _settings(settings, webhook_urls=[receiver.start()])
    service = ChatService(settings, StandInPipeline(), migrated_engine)
    alert = FrustrationAlert(settings, migrated_engine, service.webhooks)

    _chat(service, UPSET, 2)
    assert alert.evaluate() is None  # 2 of 2 frustrated, but below the minimum volume
    assert not alert.status().active

    _chat(service, CALM)
    _chat(service, UPSET)  # 3 of 4 = 75% >= 50%, with 4 conversations
    assert alert.evaluate() == "fired"
    status = alert.status()
    assert status.active and status.fired_count == 1 and status.since is not None
    assert (status.conversations, status.frustrated, status.share) == (4, 3, 0.75)

    _chat(service, UPSET)  # still above: it stays active and stays quiet
    assert [alert.evaluate() for _ in range(3)] == [None, None, None]
    assert service.webhooks.wait_idle(30)
    (sent,) = receiver.wait_for(1)
    assert verify(SECRET, sent.body, sent.headers[SIGNATURE_HEADER])
    assert sent.headers["X-Chatbot-Event"] == EVENT
    data = sent.json()["data"]
    assert (data["conversations"], data["frustrated"], data["share"]) == (4, 3, 0.75)
    assert data["threshold"] == 0.5 and data["window_minutes"] == 60
    assert UPSET not in sent.body.decode()  # numbers only, no customer words

    _chat(service, CALM, 5)  # 4 of 10: below the threshold
    assert alert.evaluate() == "recovered"
    assert not alert.status().active
    assert alert.evaluate() is None

    _chat(service, UPSET, 3)  # 7 of 13: a new crossing
    assert alert.evaluate() == "fired"
    assert alert.status().fired_count == 2
    assert service.webhooks.wait_idle(30)
    assert len(_alerts(receiver)) == 2
    time.sleep(0.3)  # nothing else arrives late
    assert len(_alerts(receiver)) == 2


def test_two_replicas_evaluating_at_once_send_one_webhook(
        settings: Settings, migrated_engine: Engine, receiver: WebhookReceiver  # noqa: F811
) -> None:
    settings = _settings(settings, webhook_urls=[receiver.start()])
    service = ChatService(settings, StandInPipeline(), migrated_engine)
    _chat(service, UPSET, 4)
    # Two processes' worth of alert and sender on one database.
    senders = [WebhookSender(settings, migrated_engine) for _ in range(2)]
    replicas = [FrustrationAlert(settings, migrated_engine, sender) for sender in senders]
    results: list[str | None] = []
    start = threading.Barrier(len(replicas) * 3)

    def evaluate(alert: FrustrationAlert) -> None:
        start.wait()
        results.append(alert.evaluate())

    threads = [threading.Thread(target=evaluate, args=(alert,))
               for alert in replicas for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results.count("fired") == 1 and results.count(None) == 5
    for sender in senders:
        assert sender.wait_idle(30)
        sender.close()
    (sent,) = _alerts(receiver)
    assert sent["event"] == EVENT
    assert FrustrationAlert(settings, migrated_engine).status().fired_count == 1


def test_the_window_slides_and_an_empty_window_recovers(
        settings: Settings, migrated_engine: Engine  # noqa: F811
) -> None:
    settings = _settings(settings, alert_window_minutes=30)
    service = ChatService(settings, StandInPipeline(), migrated_engine)
    alert = FrustrationAlert(settings, migrated_engine)  # no sender: the state still moves
    _chat(service, UPSET, 4)
    before = utcnow() - timedelta(minutes=31)  # a window that ended before these messages
    assert alert.measure(before).conversations == 0
    assert alert.evaluate(before) is None
    assert alert.evaluate() == "fired"
    later = utcnow() + timedelta(minutes=31)  # the messages have slid out of the window
    window = alert.measure(later)
    assert (window.conversations, window.share) == (0, None)
    assert alert.evaluate(later) == "recovered"


def test_the_periodic_job_fires_the_alert_by_itself(
        settings: Settings, migrated_engine: Engine, receiver: WebhookReceiver  # noqa: F811
) -> None:
    settings = _settings(settings, webhook_urls=[receiver.start()])
    service = ChatService(settings, StandInPipeline(), migrated_engine)
    job = AlertJob(FrustrationAlert(settings, migrated_engine, service.webhooks), 0.05)
    job.start()
    try:
        _chat(service, UPSET, 4)
        (sent,) = receiver.wait_for(1)
        assert sent.json()["event"] == EVENT
        runs = job.runs
        deadline = time.monotonic() + 30
        while job.runs < runs + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_alerts(receiver)) == 1  # it keeps evaluating, and stays quiet
    finally:
        job.stop()
    with pytest.raises(ValueError):
        AlertJob(FrustrationAlert(settings, migrated_engine), 0)
