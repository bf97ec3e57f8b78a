"""Outgoing webhooks against a real HTTP receiver: signed bodies, retries with back-off, the
delivery log, the Slack payload, and a slow or dead receiver never holding up a chat."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from live_helpers import WebhookReceiver
from sqlalchemy import Engine
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.conversations.service import ChatService
from chatbot.conversations.webhooks import SIGNATURE_HEADER, sign, verify

SECRET = "s3cret-for-tests"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


def make_service(settings: Settings, engine: Engine, urls: list[str],
                 **overrides: object) -> ChatService:
    settings = settings.model_copy(update={
        "webhook_urls": urls, "webhook_secret": SECRET, "webhook_backoff_s": 0.05,
        "webhook_timeout_s": 5.0, **overrides})
    return ChatService(settings, StandInPipeline(), engine)


def test_a_hand_over_and_a_resolve_are_posted_signed_and_logged(
        settings: Settings, migrated_engine: Engine, receiver: WebhookReceiver  # noqa: F811
) -> None:
    service = make_service(settings, migrated_engine, [receiver.start()])
    conv = service.chat("I want a human", customer_ref="acct-9").conversation_id
    agent, _ = service.agents.add("Sam")
    service.agents.resolve(conv, agent)
    assert service.webhooks.wait_idle(60)
    created, resolved = receiver.wait_for(2)
    for call in (created, resolved):
        assert verify(SECRET, call.body, call.headers[SIGNATURE_HEADER])
        assert call.headers[SIGNATURE_HEADER] == sign(SECRET, call.body)
        assert call.headers["Content-Type"] == "application/json"
    assert not verify("another secret", created.body, created.headers[SIGNATURE_HEADER])
    body = created.json()
    assert body["event"] == "handoff.created" and created.headers["X-Chatbot-Event"] == body[
        "event"]
    assert body["data"]["conversation_id"] == conv and body["data"]["priority"] == "normal"
    assert body["data"]["reason"] == "customer asked for a human"
    assert "acct-9" not in created.body.decode()  # no customer reference leaves the building
    assert resolved.json()["event"] == "conversation.resolved"
    assert resolved.json()["data"]["agent"] == "Sam"
    log = service.webhooks.deliveries()
    assert {(d.event, d.status, d.attempts) for d in log} == {
        ("handoff.created", "delivered", 1), ("conversation.resolved", "delivered", 1)}
    assert all(d.url.endswith("/…") and d.delivered_at is not None for d in log)


def test_failures_are_retried_with_back_off_then_logged(
        settings: Settings, migrated_engine: Engine, receiver: WebhookReceiver  # noqa: F811
) -> None:
    receiver.fail_first = 2
    service = make_service(settings, migrated_engine, [receiver.start()], webhook_retries=3)
    service.webhooks.send("alert.test", {"n": 1})
    assert service.webhooks.wait_idle(60)
    assert len(receiver.calls) == 3  # two 500s, then delivered
    assert len({call.headers["X-Chatbot-Delivery"] for call in receiver.calls}) == 1
    (row,) = service.webhooks.deliveries()
    assert (row.status, row.attempts, row.last_error) == ("delivered", 3, "HTTP 500")

    receiver.fail_first = 100  # now it never recovers
    service.webhooks.send("alert.test", {"n": 2})
    assert service.webhooks.wait_idle(60)
    failed = service.webhooks.deliveries()[0]
    assert (failed.status, failed.attempts, failed.last_error) == ("failed", 4, "HTTP 500")


def test_a_client_error_is_final_and_a_dead_url_is_logged(
        settings: Settings, migrated_engine: Engine, receiver: WebhookReceiver  # noqa: F811
) -> None:
    receiver.status_after = 404
    dead = "http://127.0.0.1:9/hook"  # the discard port: nothing listens
    service = make_service(settings, migrated_engine, [receiver.start(), dead],
                           webhook_retries=1)
    service.webhooks.send("alert.test", {})
    assert service.webhooks.wait_idle(60)
    assert len(receiver.calls) == 1  # a 404 is not retried
    rows = {d.url: d for d in service.webhooks.deliveries()}
    assert len(rows) == 2
    by_error = sorted((d.status, d.attempts, (d.last_error or "")[:8]) for d in rows.values())
    assert by_error[0] == ("failed", 1, "HTTP 404")
    assert by_error[1][:2] == ("failed", 2) and "Error" in (
        next(d for d in rows.values() if d.attempts == 2).last_error or "")


def test_slack_format_posts_a_readable_line(
        settings: Settings, migrated_engine: Engine, receiver: WebhookReceiver  # noqa: F811
) -> None:
    service = make_service(settings, migrated_engine, [receiver.start()],
                           webhook_format="slack")
    conv = service.chat("I want a human").conversation_id
    assert service.webhooks.wait_idle(60)
    (call,) = receiver.wait_for(1)
    assert set(call.json()) == {"text"}
    assert conv in call.json()["text"] and "hand-over" in call.json()["text"]


def test_a_slow_receiver_never_holds_up_a_chat(
        settings: Settings, migrated_engine: Engine, receiver: WebhookReceiver  # noqa: F811
) -> None:
    receiver.hold = threading.Event()  # the receiver answers only when released
    service = make_service(settings, migrated_engine, [receiver.start()])
    first = service.chat("I want a human")
    receiver.wait_for(1)  # the webhook is in flight, stuck in the receiver...
    # ...and the conversation goes on regardless.
    second = service.chat("How long does shipping take?", conversation_id=first.conversation_id)
    assert second.reply.text == "Standard shipping takes 3-5 business days."
    assert service.handoff(conversation_id=first.conversation_id)
    assert not service.webhooks.wait_idle(0.1)  # still not delivered
    receiver.hold.set()
    assert service.webhooks.wait_idle(60)
    assert json.loads(receiver.calls[0].body)["event"] == "handoff.created"
