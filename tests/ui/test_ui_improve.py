"""Browser test of the Improve tab: the review queue and the content-gap report, in headless
Chromium against the real app with the real tiny pipeline (MiniLM retriever, policy; a stand-in
generator that no answer here uses) and a SQLite database migrated by Alembic.

A conversation goes the whole way through the service first (fallback, hand-over, an agent's
reply, resolve); the admin then signs in, opens the suggestion, edits and approves it, and the
assistant answers a paraphrase from the new index. Skips like ``test_ui_browser.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from live_helpers import serve_app
from standin_stages import StandInGenerator

from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.conversations.engine import upgrade
from chatbot.conversations.service import ChatService
from chatbot.retrieval.index import reindex
from chatbot.retrieval.search import Retriever
from chatbot.web.app import create_app

pytestmark = pytest.mark.browser

ANSWER = "Yes! Gift wrapping costs $5 an item: tick Gift wrap at checkout and add a card note."


@pytest.fixture
def improve_live(settings: Settings, playwright_api: Any,
                 embedder: Any) -> Iterator[tuple[str, ChatService]]:
    """The app on a free port over the tiny knowledge base (``settings``: temporary folders)."""
    upgrade(settings)
    reindex(settings, embedder=embedder, progress=False)
    pipeline = build_pipeline(settings, retriever=Retriever(settings, embedder),
                              generator=StandInGenerator("not used"))
    app = create_app(settings, pipeline=pipeline)
    with serve_app(app) as url:
        service: ChatService = app.state.service
        # The loop's first half, through the service: the bot cannot answer, a person does.
        first = service.chat("Do you offer gift wrapping for presents?", channel="web")
        service.chat("can I talk to a human", conversation_id=first.conversation_id)
        agent, _ = service.agents.add("Sam")
        service.agents.reply(first.conversation_id, agent, ANSWER)
        service.agents.resolve(first.conversation_id, agent)
        app.state.learning.flush(60)
        yield url, service


def test_improve_tab_reviews_approves_and_reports_gaps(shot: Any, page: Any,
                                                       improve_live: tuple[str, ChatService]
                                                       ) -> None:
    from playwright.sync_api import expect

    url, service = improve_live
    page.goto(url + "/")
    page.get_by_role("tab", name="Improve").click()
    token = page.locator("#improve-token input")
    token.fill("not-the-token")
    page.locator("#improve-sign-in").click()
    expect(page.get_by_text("That token is not right.")).to_be_visible()
    expect(page.locator("#improve-queue")).to_be_hidden()

    token.fill(service.settings.resolved_admin_token)
    page.locator("#improve-sign-in").click()
    queue = page.locator("#improve-queue")
    expect(queue).to_contain_text("Do you offer gift wrapping for presents?")
    queue.get_by_text("Do you offer gift wrapping for presents?").filter(visible=True).first.click()
    expect(page.locator("#improve-details")).to_contain_text("A new FAQ entry")
    answer = page.locator("#improve-answer textarea")
    expect(answer).to_have_value(ANSWER)
    answer.fill(ANSWER + " Gift receipts hide the price.")
    page.locator("#improve-approve").click()
    expect(page.locator("#improve-outcome")).to_contain_text("approved", timeout=30_000)
    expect(page.locator("#improve-outcome")).to_contain_text("Re-indexing in the background")
    expect(answer).to_have_value("")  # it left the queue: the editor is empty again
    expect(queue).not_to_contain_text("Do you offer gift wrapping")
    status = service.wait_reindex(120)
    assert status.state == "done", status.error
    reply = service.chat("Is gift wrapping offered?").reply
    assert reply.route.value == "faq" and reply.text.endswith("Gift receipts hide the price.")

    page.locator("#improve-gaps").click()
    gaps = page.locator("#improve-gap-table")
    expect(gaps).to_contain_text("Do you offer gift wrapping for presents?")
    expect(page.get_by_role("button", name="Download CSV")).to_be_visible()
    gaps.get_by_text("Do you offer gift wrapping for presents?").filter(visible=True).first.click()
    expect(page.locator("#improve-topic")).to_contain_text("1 question(s) in 1 conversation(s)")
    page.get_by_label("Open a conversation of this topic").click()
    page.get_by_role("option").first.click()
    expect(page.locator("#improve-transcript")).to_contain_text("Gift wrapping costs $5")
    shot(page, "gradio_improve.png", full_page=True)
