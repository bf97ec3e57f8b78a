"""Browser tests of the suggested questions: the widget offers the opening questions on an empty
chat and chips under each answer; clicking one sends its question, its answer appears, the
chips are replaced, and the database logs the click on the customer message.

Like tests/ui/test_ui_browser.py: a real uvicorn server with the stand-in pipeline (its
suggestions are the FAQs after the answered one) and a temporary SQLite database migrated by
Alembic, driven through Debian's chromium by Playwright (tests/ui/conftest.py); skipped without
them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from live_helpers import open_widget, serve_app, wait_until
from sqlalchemy import select

from chatbot.config import Settings
from chatbot.conversations.models import Message
from chatbot.conversations.service import ChatService

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live(served_settings: Callable[..., Settings], playwright_api: Any
         ) -> Iterator[tuple[str, ChatService]]:
    """The real app on a free 127.0.0.1 port: (base URL, its ChatService)."""
    from standin import StandInPipeline

    from chatbot.web.app import create_app

    app = create_app(served_settings("ui-suggestions"), pipeline=StandInPipeline())
    with serve_app(app) as url:
        yield url, app.state.service


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page(timeout=30_000)


def _customer_rows(service: ChatService) -> list[tuple[str, str | None]]:
    with service._sessions() as session:
        return [tuple(r) for r in session.execute(  # type: ignore[misc]
            select(Message.text, Message.suggested_faq_id)
            .where(Message.role == "customer").order_by(Message.created_at)).all()]


def test_widget_chips_open_the_chat_and_a_click_sends_the_question(
        shot: Callable[..., None], page: Any, live: tuple[str, ChatService]) -> None:
    from playwright.sync_api import expect

    url, service = live
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    box = open_widget(page, url)

    # An empty chat offers the opening questions (nothing answered yet: the FAQs in order).
    chips = page.get_by_role("group", name="Suggested questions").get_by_role("button")
    expect(chips).to_have_count(3)
    expect(chips.first).to_have_text("How long does standard shipping take?")

    # Ask; the answer comes with chips for what usually comes next.
    box.fill("How do I return an item?")
    box.press("Enter")
    answers = page.locator(".cw-msg--bot[data-message-id]")
    expect(answers).to_have_count(1)
    expect(chips).to_have_text(["Which payment methods do you accept?",
                                "How do I reset my password?",
                                "How long does standard shipping take?"])
    shot(page, "widget_suggestions.png")

    # From the keyboard: focus the first chip and press Enter.
    chips.first.focus()
    page.keyboard.press("Enter")
    expect(answers).to_have_count(2)
    expect(page.locator(".cw-msg--customer .cw-text").last).to_have_text(
        "Which payment methods do you accept?")
    expect(answers.last.locator(".cw-text")).to_have_text(
        "We accept Visa, Mastercard, American Express, PayPal and gift cards.")
    # Only the newest answer's chips remain, without the questions already answered.
    expect(page.locator(".cw-suggestions")).to_have_count(1)
    expect(chips).to_have_text(["How do I reset my password?",
                                "How long does standard shipping take?",
                                "Do you ship to Canada?"])

    rows = wait_until(lambda: _customer_rows(service) if len(_customer_rows(service)) == 2
                      else None, timeout=20)
    assert rows == [("How do I return an item?", None),
                    ("Which payment methods do you accept?", "pay-001")]
    assert errors == []


def test_gradio_chips_follow_an_answer_and_a_click_sends_the_question(
        page: Any, live: tuple[str, ChatService]) -> None:
    from playwright.sync_api import expect

    url, service = live
    page.goto(url + "/")
    page.locator("#support-input textarea").fill("Do you ship to Canada?")
    page.locator("#support-input textarea").press("Enter")
    bot = page.locator("#support-chat [data-testid=bot]")
    expect(bot.last).to_contain_text("We ship to all Canadian provinces")
    chips = page.locator("#chat-suggestions button")
    expect(chips.filter(has_text="How do I return an item?")).to_be_visible()
    expect(chips.filter(has_text="Which payment methods do you accept?")).to_be_visible()

    chips.filter(has_text="How do I return an item?").click()
    expect(bot.last).to_contain_text("Start a return from Orders")
    expect(page.locator("#support-chat [data-testid=user]").last).to_contain_text(
        "How do I return an item?")
    # The next chips follow the new answer and skip what was answered.
    expect(chips.filter(has_text="How do I reset my password?")).to_be_visible()
    expect(chips.filter(has_text="How do I return an item?")).to_have_count(0)

    rows = wait_until(lambda: [r for r in _customer_rows(service) if r[1] == "ret-001"],
                      timeout=20)
    assert rows == [("How do I return an item?", "ret-001")]
