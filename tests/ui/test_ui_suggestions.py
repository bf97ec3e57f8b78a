"""Browser tests of the suggested questions: the widget offers the opening questions on an empty
chat and chips under each answer; clicking one sends its question, its answer appears, the
chips are replaced, and the database logs the click on the customer message.

The fixtures follow tests/ui/test_ui_browser.py: a real uvicorn server with the stand-in
pipeline (its suggestions are the FAQs after the answered one) and a temporary SQLite database
migrated by Alembic, driven through Debian's chromium by Playwright; skipped without them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from chatbot.config import Settings
from chatbot.conversations.models import Message
from chatbot.conversations.service import ChatService

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"condition not met within {timeout} s (last value {value!r})"
            return value
        time.sleep(0.1)


@pytest.fixture(scope="module")
def playwright_api() -> Any:
    if not CHROMIUM.exists():
        pytest.skip("browser tests skipped: /usr/bin/chromium is missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests skipped: playwright is not installed")
    return sync_playwright


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, playwright_api: Any
         ) -> Iterator[tuple[str, ChatService]]:
    """The real app on a free 127.0.0.1 port: (base URL, its ChatService)."""
    import uvicorn
    from standin import StandInPipeline

    from chatbot.conversations.engine import upgrade
    from chatbot.web.app import create_app

    root = tmp_path_factory.mktemp("ui-suggestions")
    settings = Settings(var_dir=root / "var", knowledge_base=root / "kb",
                        _env_file=None)  # type: ignore[call-arg]
    upgrade(settings)
    app = create_app(settings, pipeline=StandInPipeline())
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), timeout=60)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", app.state.service
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def browser(playwright_api: Any) -> Iterator[Any]:
    with playwright_api() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def shot(screenshot_dir: Path) -> Callable[..., None]:
    """Save a screenshot of ``page`` as ``name`` (see ``--screenshots`` in tests/conftest.py)."""

    def take(page: Any, name: str, **kwargs: Any) -> None:
        page.screenshot(path=str(screenshot_dir / name), **kwargs)

    return take


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
    page.goto(f"{url}/widget/example.html")
    page.get_by_role("button", name="Open chat: Pinecrest help").click()

    # An empty chat offers the opening questions (nothing answered yet: the FAQs in order).
    chips = page.get_by_role("group", name="Suggested questions").get_by_role("button")
    expect(chips).to_have_count(3)
    expect(chips.first).to_have_text("How long does standard shipping take?")

    # Ask; the answer comes with chips for what usually comes next.
    box = page.get_by_label("Type your message")
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
                      else None)
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

    rows = wait_until(lambda: [r for r in _customer_rows(service) if r[1] == "ret-001"])
    assert rows == [("How do I return an item?", "ret-001")]
