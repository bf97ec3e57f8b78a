"""Browser tests: the widget on the example page and the Gradio chat, in headless Chromium.

A real uvicorn server runs ``chatbot.web.app.create_app`` with the stand-in pipeline and a temporary
SQLite database migrated by Alembic; Debian's chromium (never a downloaded browser) is driven by
Playwright. The tests check what a customer sees and what the database then holds, and take
screenshots (widget.png, widget_phone.png, gradio_chat.png, gradio_admin.png) into a temporary
folder, or into ``--screenshots DIR`` (``make screenshots`` keeps them in bench/results/).

They skip with a message when /usr/bin/chromium or playwright is missing
(``apt-get update && apt-get install -y chromium`` installs the browser; ``make test`` tries).
The browser and page fixtures are in tests/ui/conftest.py, the server helpers in
tests/live_helpers.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from live_helpers import XSS, open_widget, serve_app, stored_conversation_id, wait_until
from sqlalchemy import select

from chatbot.config import Settings
from chatbot.conversations.models import Conversation, Feedback, Handoff, Message
from chatbot.conversations.service import ChatService

pytestmark = pytest.mark.browser

MAX_CHARS = 500  # a small server-side limit so the too-long test can exceed it
Shot = Callable[..., None]


@dataclass
class Live:
    url: str
    service: ChatService
    pipeline: Any
    reindexer: StandInReindexer


class StandInReindexer:
    """Stands in for chatbot.retrieval.index.reindex (same call) so the admin tab's re-index
    button can be tested without embedding models: it reports progress in steps, then a new
    version."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def __call__(self, settings: Settings, *, full: bool = False, progress: Any = True,
                 embedder: Any = None) -> Any:
        from chatbot.retrieval.index import ReindexReport

        self.calls.append(full)
        for done in range(1, 4):
            if callable(progress):
                progress(done, 3, "embedding")
            time.sleep(0.2)
        return ReindexReport("standin-v2", 1, 0, 0, 4, 5, 3, 0.6, rebuilt=True)


@pytest.fixture(scope="module")
def live(served_settings: Callable[..., Settings], playwright_api: Any) -> Iterator[Live]:
    """The real app on a free 127.0.0.1 port, in a uvicorn server thread."""
    from standin import StandInPipeline

    from chatbot.web.app import create_app

    settings = served_settings("ui", max_message_chars=MAX_CHARS)
    pipeline, reindexer = StandInPipeline(), StandInReindexer()
    app = create_app(settings, pipeline=pipeline, reindexer=reindexer)
    with serve_app(app) as url:
        yield Live(url, app.state.service, pipeline, reindexer)


class Watch:
    """What a page did that a customer must never see: dialogs, script errors, requests for
    the injected image."""

    def __init__(self, page: Any) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.image_requests: list[str] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.image_requests.append(r.url)
                if r.url.rstrip("/").endswith("/x") else None)


def _rating(service: ChatService, message_id: str) -> str | None:
    with service._sessions() as session:
        return session.scalar(select(Feedback.rating).where(Feedback.message_id == message_id))


def _conversation(service: ChatService, conversation_id: str) -> Conversation | None:
    with service._sessions() as session:
        return session.get(Conversation, conversation_id)


# --- the widget ------------------------------------------------------------------------------
def _ask_widget(page: Any, question: str) -> Any:
    """Type a question, press Enter, wait for the finished answer; returns its row."""
    before = page.locator(".cw-msg--bot[data-message-id]").count()
    box = page.get_by_label("Type your message")
    box.fill(question)
    box.press("Enter")
    answers = page.locator(".cw-msg--bot[data-message-id]")
    wait_until(lambda: answers.count() > before, timeout=20)
    return answers.last


def test_widget_streams_an_answer_with_sources_and_records_thumbs_up(shot: Shot, page: Any,
                                                                      live: Live) -> None:
    from playwright.sync_api import expect

    watch = Watch(page)
    box = open_widget(page, live.url)
    expect(box).to_be_focused()  # opening the chat puts the cursor in the message box
    with page.expect_response(lambda r: r.url.endswith("/api/v1/chat/stream")) as stream:
        answer = _ask_widget(page, "How long does shipping take?")
    body = stream.value.text()
    assert body.count("event: token") >= 2 and "event: done" in body  # it really streamed

    expect(answer.locator(".cw-text")).to_have_text("Standard shipping takes 3-5 business days.")
    expect(answer.locator(".cw-source")).to_contain_text("How long does standard shipping take?")
    up = answer.get_by_role("button", name="Yes, this helped")
    expect(up).to_be_visible()
    expect(answer.get_by_role("button", name="No, this did not help")).to_be_visible()

    up.click()
    expect(answer.locator(".cw-feedback-thanks")).to_have_text("Thanks for your feedback!")
    expect(up).to_have_attribute("aria-pressed", "true")
    message_id = answer.get_attribute("data-message-id")
    assert wait_until(lambda: _rating(live.service, message_id)) == "up"

    # The conversation the browser remembers is the one the database logged the answer in.
    conversation = _conversation(live.service, stored_conversation_id(page))
    assert conversation is not None and conversation.channel == "widget"
    with live.service._sessions() as session:
        assert session.get(Message, message_id).conversation_id == conversation.id
    assert watch.errors == [] and watch.dialogs == []
    shot(page, "widget.png")


def test_widget_shows_markup_typed_by_a_customer_as_text(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    watch = Watch(page)
    open_widget(page, live.url)
    _ask_widget(page, XSS)
    mine = page.locator(".cw-msg--customer .cw-text").last
    expect(mine).to_have_text(XSS)
    assert page.locator("#support-chat-widget img").count() == 0
    page.wait_for_timeout(300)  # an injected image would have failed to load and fired by now
    assert watch.dialogs == [] and watch.image_requests == []
    stored = live.service.conversation(stored_conversation_id(page))
    assert stored.messages[0].text == XSS  # stored exactly as typed, not mangled


def test_widget_restores_the_transcript_after_a_reload(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    open_widget(page, live.url)
    answer = _ask_widget(page, "Do you ship to Canada?")
    answer.get_by_role("button", name="No, this did not help").click()
    expect(answer.locator(".cw-feedback-thanks")).to_be_visible()
    conversation_id = stored_conversation_id(page)

    page.reload()
    page.get_by_role("button", name="Open chat: Pinecrest help").click()
    restored = page.locator(".cw-msg--bot[data-message-id]")
    expect(restored).to_have_count(1)
    expect(page.locator(".cw-msg--customer .cw-text")).to_have_text(["Do you ship to Canada?"])
    expect(restored.locator(".cw-text")).to_contain_text("We ship to all Canadian provinces")
    expect(restored.get_by_role("button", name="No, this did not help")).to_have_attribute(
        "aria-pressed", "true")
    # The next question continues the same conversation.
    _ask_widget(page, "How do I return an item?")
    assert stored_conversation_id(page) == conversation_id
    assert len(live.service.conversation(conversation_id).messages) == 4


def test_widget_new_conversation_closes_the_old_one(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    open_widget(page, live.url)
    _ask_widget(page, "Do you ship to Canada?")
    first = stored_conversation_id(page)
    page.get_by_role("button", name="Start a new conversation").click()
    expect(page.locator(".cw-msg--customer")).to_have_count(0)
    assert wait_until(lambda: live.service.conversation(first).status == "closed")
    assert live.service.conversation(first).ended_at is not None
    _ask_widget(page, "How do I return an item?")
    second = stored_conversation_id(page)
    assert second != first and live.service.conversation(second).status == "open"


def test_widget_works_from_the_keyboard_and_hands_over_to_a_human(page: Any,
                                                                   live: Live) -> None:
    from playwright.sync_api import expect

    page.goto(f"{live.url}/widget/example.html")
    launcher = page.get_by_role("button", name="Open chat: Pinecrest help")
    launcher.focus()
    page.keyboard.press("Enter")
    box = page.get_by_label("Type your message")
    expect(box).to_be_focused()
    _ask_widget(page, "Which payment methods do you accept?")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog", name="Pinecrest help")).to_be_hidden()
    expect(launcher).to_be_focused()  # focus returns to where the customer opened the chat

    page.keyboard.press("Enter")
    page.get_by_role("button", name="Talk to a human").click()
    # It says what is true: nobody is signed in to the inbox here, so the conversation waits.
    expect(page.locator(".cw-msg--handoff")).to_contain_text("No one from our team is online")
    conversation_id = stored_conversation_id(page)
    assert wait_until(lambda: _conversation(live.service, conversation_id).status
                      == "handed_off")
    with live.service._sessions() as session:
        assert session.scalars(
            select(Handoff).where(Handoff.conversation_id == conversation_id)).all()


def test_widget_reports_a_too_long_message_and_gives_the_text_back(page: Any,
                                                                   live: Live) -> None:
    from playwright.sync_api import expect

    box = open_widget(page, live.url)
    text = "Where is my order? " * 40  # longer than the server's MAX_CHARS
    box.fill(text)
    box.press("Enter")
    expect(page.locator(".cw-msg--error")).to_contain_text(f"more than the {MAX_CHARS} allowed")
    expect(box).to_have_value(text.strip())  # nothing the customer typed is lost


def test_widget_fills_a_phone_screen(shot: Shot, new_page: Callable[..., Any],
                                     live: Live) -> None:
    from playwright.sync_api import expect

    page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                    device_scale_factor=2)
    open_widget(page, live.url)
    _ask_widget(page, "How do I reset my password?")
    panel = page.get_by_role("dialog", name="Pinecrest help").bounding_box()
    assert panel == {"x": 0, "y": 0, "width": 390, "height": 844}
    expect(page.locator(".cw-launcher")).to_be_hidden()  # the panel has its own close
    shot(page, "widget_phone.png")
    page.get_by_role("button", name="Close chat").click()
    expect(page.locator(".cw-launcher")).to_be_visible()


# --- the Gradio chat ---------------------------------------------------------------------------
def _ask_gradio(page: Any, question: str, expected: str) -> Any:
    from playwright.sync_api import expect

    page.locator("#support-input textarea").fill(question)
    page.locator("#support-input textarea").press("Enter")
    answer = page.locator("#support-chat [data-testid=bot]").last
    expect(answer).to_contain_text(expected)
    return answer


def _latest_web_conversation(service: ChatService) -> str:
    (latest,) = service.list_conversations(channel="web", limit=1)
    return latest.id


def test_gradio_chat_answers_with_sources_and_records_a_like(shot: Shot, page: Any,
                                                             live: Live) -> None:
    from playwright.sync_api import expect

    watch = Watch(page)
    page.goto(live.url + "/")
    answer = _ask_gradio(page, "How long does shipping take?",
                         "Standard shipping takes 3-5 business days.")
    expect(answer).to_contain_text("Sources")
    expect(answer).to_contain_text("How long does standard shipping take?")
    like = page.locator("#support-chat").get_by_role("button", name="Like", exact=True).last
    expect(like).to_be_visible()
    expect(page.locator("#support-chat").get_by_role(
        "button", name="Dislike", exact=True).last).to_be_visible()

    conversation_id = wait_until(lambda: _latest_web_conversation(live.service))
    bot = [m for m in live.service.conversation(conversation_id).messages if m.role == "bot"]
    assert bot and bot[-1].text == "Standard shipping takes 3-5 business days."
    like.click()
    assert wait_until(lambda: _rating(live.service, bot[-1].id)) == "up"
    assert watch.errors == []
    shot(page, "gradio_chat.png")


def test_gradio_chat_shows_markup_typed_by_a_customer_as_text(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    watch = Watch(page)
    page.goto(live.url + "/")
    _ask_gradio(page, XSS, "not sure")
    mine = page.locator("#support-chat [data-testid=user]").last
    expect(mine).to_have_text(XSS)
    assert page.locator("#support-chat img").count() == 0
    page.wait_for_timeout(300)
    assert watch.dialogs == [] and watch.image_requests == []


def test_gradio_talk_to_a_human_hands_the_conversation_over(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    page.goto(live.url + "/")
    page.get_by_role("button", name="Talk to a human").click()
    expect(page.locator("#chat-status")).to_contain_text("Tell us briefly what you need first")
    _ask_gradio(page, "How do I return an item?", "Start a return from Orders")
    conversation_id = _latest_web_conversation(live.service)
    page.get_by_role("button", name="Talk to a human").click()
    expect(page.locator("#chat-status")).to_contain_text("No one from our team is online")
    assert wait_until(lambda: _conversation(live.service, conversation_id).status
                      == "handed_off")


def test_gradio_admin_tab_needs_the_token_then_shows_stats_transcripts_and_reindexes(
        shot: Shot, page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    page.goto(live.url + "/")
    _ask_gradio(page, "Do you ship to Canada?", "We ship to all Canadian provinces")
    page.get_by_role("tab", name="Admin").click()
    token = page.locator("#admin-token input")
    expect(token).to_be_visible()
    expect(page.get_by_text("Deflection rate")).to_have_count(0)

    token.fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("That token is not right.")).to_be_visible()
    expect(page.get_by_text("Deflection rate")).to_have_count(0)

    token.fill(live.service.settings.resolved_admin_token)
    page.get_by_role("button", name="Sign in").click()
    stats = page.locator("#admin-stats")
    expect(stats).to_contain_text("Deflection rate")
    expect(stats).to_contain_text("Latency p95")
    count = live.service.stats().conversations
    expect(stats.locator(".stat-card").first).to_contain_text(str(count))
    table = page.locator("#admin-conversations")
    expect(table).to_contain_text("Do you ship to Canada?")
    table.get_by_text("Do you ship to Canada?").filter(visible=True).first.click()
    expect(page.locator("#admin-transcript")).to_contain_text("route faq")

    reloads = live.pipeline.reloads
    page.get_by_role("button", name="Re-index now").click()
    expect(page.locator("#admin-reindex-result")).to_contain_text(
        "index standin-v2: 5 documents (1 added", timeout=30_000)
    assert live.reindexer.calls == [False]
    assert live.pipeline.reloads == reloads + 1  # the serving pipeline picked up the new index
    shot(page, "gradio_admin.png", full_page=True)
