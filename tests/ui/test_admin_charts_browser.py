"""Browser test of the admin tab's monitoring: the frustration alert banner and the charts, in
headless Chromium against the real app (stand-in pipeline whose retriever lists the FAQs with
their categories and carries the real MiniLM embedder, so the unanswered questions really are
clustered) on a SQLite database migrated by Alembic.

Two weeks of conversations go through the service first (then moved back to their days); today's
have a frustrated majority, so the server's own periodic check fires the alert at start-up: a
real local receiver gets exactly one signed ``alert.frustration`` webhook. The admin signs in and
sees the red banner and every chart (the screenshot is ``admin_charts.png``, kept in
bench/results/ with ``--screenshots bench/results``); once calm conversations bring the share
below the threshold, the banner turns quiet by itself and no second webhook goes out. Skips like
``test_ui_browser.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from live_helpers import WebhookReceiver, serve_app, wait_until
from sqlalchemy.orm import selectinload
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.conversations.alerts import EVENT
from chatbot.conversations.engine import make_sessionmaker
from chatbot.conversations.models import Conversation
from chatbot.conversations.service import ChatService
from chatbot.conversations.webhooks import SIGNATURE_HEADER, verify
from chatbot.types import Document
from chatbot.web.app import create_app

pytestmark = pytest.mark.browser

SECRET = "charts-secret"
CALM = ("Do you ship to Canada?", "How do I return an item?", "can i pay with paypal, great",
        "How long does standard shipping take?", "forgot my password")
UPSET = ("ship to canada?? awful", "forgot my password, useless",
         "when will my package arrive, worst service ever")
UNANSWERED = ("do you sell gift cards", "can I buy a gift card", "are gift cards available",
              "do you have a store in Portland", "where is your shop in portland",
              "what is the meaning of life")


class Shelf:
    """Stands in for the parts of the retriever the admin reads: documents and embedder."""

    def __init__(self, documents: list[Document], embedder: Any) -> None:
        self.documents = documents
        self.embedder = embedder


class CategorisedStandIn(StandInPipeline):
    def __init__(self, embedder: Any) -> None:
        super().__init__()
        self.retriever = Shelf(list(self._docs), embedder)


@dataclass
class Monitored:
    url: str
    service: ChatService
    receiver: WebhookReceiver


def _backdate(service: ChatService, conversation_id: str, days: int) -> None:
    """Move a conversation (and everything timed in it) ``days`` back, as if it were older."""
    delta = timedelta(days=days)
    with make_sessionmaker(service.engine)() as session, session.begin():
        conv = session.get(Conversation, conversation_id, options=[
            selectinload(Conversation.messages), selectinload(Conversation.handoffs)])
        assert conv is not None
        conv.started_at -= delta
        for message in conv.messages:
            message.created_at -= delta
        for handoff in conv.handoffs:
            handoff.requested_at -= delta


def _seed(service: ChatService) -> None:
    for day in range(13, 0, -1):  # deterministic, uneven days
        unanswered = UNANSWERED[day % 6: day % 6 + 1 + day % 2]
        texts = [*CALM[: 2 + day % 4], *UPSET[: day % 3], *unanswered]
        for text in texts:
            _backdate(service, service.chat(text, channel="web").conversation_id, day)
    for text in (*CALM[:3], *UPSET, "i want a human"):  # today: 3 of 7 frustrated
        service.chat(text, channel="web")


@pytest.fixture(scope="module")
def monitored(served_settings: Callable[..., Settings], playwright_api: Any,
              embedder: Any) -> Iterator[Monitored]:
    receiver = WebhookReceiver()
    settings = served_settings("charts", alert_min_conversations=5, alert_frustrated_share=0.3,
                               alert_interval_s=1.0, webhook_urls=[receiver.start()],
                               webhook_secret=SECRET)
    app = create_app(settings, pipeline=CategorisedStandIn(embedder))
    service: ChatService = app.state.service
    _seed(service)  # before the server starts: its first check sees today's frustration
    try:
        with serve_app(app, name="uvicorn-charts") as url:
            yield Monitored(url, service, receiver)
    finally:
        receiver.stop()


def test_admin_sees_the_alert_banner_and_the_monitoring_charts(
        shot: Callable[..., None], page: Any, monitored: Monitored) -> None:
    from playwright.sync_api import expect

    def alerts() -> list[Any]:
        return [call for call in monitored.receiver.calls if call.json()["event"] == EVENT]

    (sent,) = wait_until(alerts, timeout=60)  # the server's own check fired it
    assert verify(SECRET, sent.body, sent.headers[SIGNATURE_HEADER])

    page.goto(monitored.url + "/")
    page.get_by_role("tab", name="Admin").click()
    expect(page.locator("#admin-token input")).to_be_visible()
    expect(page.locator("#chart-conversations")).to_be_hidden()  # nothing before the token
    expect(page.locator("#admin-alert")).to_be_hidden()
    page.locator("#admin-token input").fill(monitored.service.settings.resolved_admin_token)
    page.get_by_role("button", name="Sign in").click()

    banner = page.locator("#admin-alert")
    expect(banner).to_contain_text("Frustration alert", timeout=30_000)
    expect(banner).to_contain_text("3 of 7 conversations (43%)")
    expect(banner).to_contain_text("alert.frustration")
    expect(page.locator("#admin-topics-note")).to_contain_text(
        "answered questions in 4 topics", timeout=30_000)
    # The clusters come last: the unanswered questions are embedded and clustered first.
    expect(page.locator("#admin-gaps-note")).to_contain_text("unanswered questions",
                                                             timeout=90_000)
    for chart, title in (("#chart-conversations", "Conversations per day"),
                         ("#chart-rates", "Deflection and hand-over rate per day"),
                         ("#chart-sentiment", "Average customer sentiment per day"),
                         ("#chart-frustrated", "Share of frustrated conversations per day"),
                         ("#chart-topics-volume", "Topics by volume"),
                         ("#chart-topics-sentiment", "Topics by sentiment"),
                         ("#chart-gaps", "Unanswered questions by topic")):
        expect(page.locator(chart)).to_contain_text(title)
        # vega draws each chart once it has data: wait for the drawing, not just the frame
        expect(page.locator(f"{chart} canvas, {chart} svg.marks").first).to_be_visible(
            timeout=30_000)
    page.locator("#admin-alert").scroll_into_view_if_needed()
    page.wait_for_timeout(1000)  # let the last chart finish its first paint
    shot(page, "admin_charts.png", full_page=True)
    assert len(alerts()) == 1  # checked every second all along: still the one webhook

    for text in CALM[:4]:  # 3 of 11 frustrated today: below 30%, the server's check recovers
        monitored.service.chat(text, channel="web")
    # The banner follows by itself while the admin is signed in (its timer, every 30 s).
    expect(banner).to_contain_text("No frustration alert", timeout=120_000)
    expect(banner).to_contain_text("3 of 11 conversations (27%)")
    assert len(alerts()) == 1
