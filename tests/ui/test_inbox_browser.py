"""Browser tests of the people side, in headless Chromium: an agent's reply arriving live in the
widget and in the Gradio chat while the page is open, and the Inbox tab (sign in, see the
conversation with its transcript and the customer's reference, claim, reply, a second agent
told who has it, resolve).

A real uvicorn server runs the app with the stand-in pipeline on a temporary SQLite database;
agents reply through the agent REST API (or the Inbox tab). Screenshots (widget_agent.png,
gradio_chat_agent.png, inbox.png) go to the ``screenshot_dir`` (see tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from live_helpers import XSS, WebhookReceiver, open_widget, serve_app, stored_conversation_id
from sqlalchemy import select

from chatbot.config import Settings
from chatbot.conversations.models import Message
from chatbot.conversations.service import ChatService

pytestmark = pytest.mark.browser


@dataclass
class Live:
    url: str
    service: ChatService
    tokens: dict[str, str]
    receiver: Any

    def agent(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def api(self, path: str, name: str = "Sam", **body: Any) -> httpx.Response:
        response = httpx.post(f"{self.url}/api/v1/agent{path}", headers=self.agent(name),
                              json=body or None, timeout=30)
        assert response.status_code == 200, response.text
        return response


@pytest.fixture(scope="module")
def live(served_settings: Callable[..., Settings], playwright_api: Any) -> Iterator[Live]:
    from standin import StandInPipeline

    from chatbot.web.app import create_app

    receiver = WebhookReceiver()
    settings = served_settings("inbox", webhook_urls=[receiver.start()],
                               webhook_secret="browser-secret")
    app = create_app(settings, pipeline=StandInPipeline())
    service: ChatService = app.state.service
    tokens = {name: service.agents.add(name)[1] for name in ("Sam", "Ana")}
    try:
        with serve_app(app) as url:
            yield Live(url, service, tokens, receiver)
    finally:
        receiver.stop()


@pytest.fixture
def new_page(new_page: Callable[..., Any]) -> Callable[[], Any]:
    """Pages a little taller than the default, on which any dialog fails the test."""

    def make() -> Any:
        page = new_page(viewport={"width": 1280, "height": 860})
        page.on("dialog", lambda d: (_ for _ in ()).throw(AssertionError(d.message)))
        return page

    return make


def test_widget_shows_an_agents_reply_as_it_arrives(new_page: Callable[[], Any], live: Live,
                                                    shot: Callable[..., None]) -> None:
    from playwright.sync_api import expect

    page = new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    box = open_widget(page, live.url)
    box.fill("I need a human please")
    box.press("Enter")
    expect(page.locator(".cw-msg--handoff")).to_contain_text("Their reply will appear here")
    conv = stored_conversation_id(page)

    # An agent takes it over the API; the open page shows it without a reload.
    live.api(f"/conversations/{conv}/claim")
    expect(page.locator(".cw-msg--joined")).to_contain_text("Sam from our support team has "
                                                            "joined the chat")
    live.api(f"/conversations/{conv}/reply", text="Hi, I'm Sam. I'll sort this out for you.")
    agent = page.locator(".cw-msg--agent")
    expect(agent).to_have_count(1)
    expect(agent.locator(".cw-author")).to_have_text("Sam · Support team")
    expect(agent.locator(".cw-text")).to_have_text("Hi, I'm Sam. I'll sort this out for you.")

    # While Sam has it the bot stays silent: no answer bubble, a line saying who has it.
    bot_answers = page.locator(".cw-msg--bot[data-message-id]:not(.cw-msg--agent)").count()
    box.fill("Thank you!")
    box.press("Enter")
    expect(page.locator(".cw-status")).to_contain_text("Sam from our support team has your "
                                                       "message")
    assert page.locator(".cw-msg--bot[data-message-id]:not(.cw-msg--agent)").count() == \
        bot_answers

    live.api(f"/conversations/{conv}/reply", text=XSS)  # an agent's text is text too
    expect(agent.last.locator(".cw-text")).to_have_text(XSS)
    assert page.locator("#support-chat-widget img").count() == 0
    shot(page, "widget_agent.png")

    live.api(f"/conversations/{conv}/resolve")
    expect(page.locator(".cw-msg--left")).to_contain_text("Sam has marked this conversation "
                                                          "resolved")
    expect(page.get_by_role("button", name="Talk to a human")).to_be_enabled()
    # A reload restores the agent's messages with the name, once each.
    page.reload()
    page.get_by_role("button", name="Open chat: Pinecrest help").click()
    expect(page.locator(".cw-msg--agent")).to_have_count(2)
    expect(page.locator(".cw-msg--agent .cw-author").first).to_have_text("Sam · Support team")
    assert errors == []


def test_gradio_chat_shows_an_agents_reply_as_it_arrives(new_page: Callable[[], Any],
                                                         live: Live,
                                                         shot: Callable[..., None]) -> None:
    from playwright.sync_api import expect

    page = new_page()
    page.goto(live.url + "/")
    page.locator("#support-input textarea").fill("Can I talk to a person?")
    page.locator("#support-input textarea").press("Enter")
    expect(page.locator("#chat-status")).to_contain_text("a person will reply here")
    (latest,) = live.service.list_conversations(channel="web", limit=1)
    live.api(f"/conversations/{latest.id}/reply", text="Hello, Ana here? No, Sam!")
    message = page.locator("#support-chat [data-testid=bot]").last
    expect(message).to_contain_text("Hello, Ana here? No, Sam!", timeout=30_000)
    expect(message).to_contain_text("Sam (support team)")
    expect(page.locator("#chat-status")).to_contain_text("Sam from our support team has joined")
    shot(page, "gradio_chat_agent.png")
    live.api(f"/conversations/{latest.id}/resolve")
    expect(page.locator("#chat-status")).to_contain_text("marked this conversation resolved",
                                                         timeout=30_000)


def _sign_in(page: Any, live: Live, token: str) -> None:
    from playwright.sync_api import expect

    page.goto(live.url + "/")
    page.get_by_role("tab", name="Inbox").click()
    page.locator("#inbox-token input").fill(token)
    page.get_by_role("button", name="Open the inbox").click()
    expect(page.locator("#inbox-table")).to_be_visible()


def test_inbox_shows_the_conversation_and_sends_the_reply(new_page: Callable[[], Any],
                                                          live: Live,
                                                          shot: Callable[..., None]) -> None:
    from playwright.sync_api import expect

    first = live.service.chat("My tent pole snapped, I want a person", channel="widget",
                              customer_ref="acct-42")
    conv = first.conversation_id

    page = new_page()
    page.goto(live.url + "/")
    page.get_by_role("tab", name="Inbox").click()
    page.locator("#inbox-token input").fill("agt_not-a-token")
    page.get_by_role("button", name="Open the inbox").click()
    expect(page.get_by_text("That token is not right.")).to_be_visible()
    expect(page.locator("#inbox-table")).to_be_hidden()

    _sign_in(page, live, live.tokens["Sam"])
    expect(page.locator("#inbox-who")).to_contain_text("Signed in as Sam")
    table = page.locator("#inbox-table")
    expect(table).to_contain_text("My tent pole snapped")
    table.get_by_text("My tent pole snapped").filter(visible=True).first.click()
    expect(page.locator("#inbox-summary")).to_contain_text("acct-42")
    transcript = page.locator("#inbox-transcript")
    expect(transcript).to_contain_text("My tent pole snapped, I want a person")
    expect(transcript).to_contain_text("why: customer asked for a human")  # the bot's reason

    page.get_by_role("button", name="Claim").click()
    expect(page.locator("#inbox-status")).to_contain_text("You have this conversation")
    expect(table).to_contain_text("claimed by Sam")

    # A second agent at the same time sees who has it and cannot take it.
    other = new_page()
    _sign_in(other, live, live.tokens["Ana"])
    other.locator("#inbox-table").get_by_text("My tent pole snapped").filter(
        visible=True).first.click()
    expect(other.locator("#inbox-summary")).to_contain_text("claimed by Sam")
    other.get_by_role("button", name="Claim").click()
    expect(other.locator("#inbox-status")).to_contain_text("Sam has already claimed")

    page.locator("#inbox-reply textarea").fill("Sorry about the pole! A new one ships today.")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator("#inbox-status")).to_contain_text("Sent")
    expect(transcript).to_contain_text("Sorry about the pole! A new one ships today.")
    with live.service._sessions() as session:
        stored = session.scalars(select(Message).where(Message.conversation_id == conv,
                                                       Message.role == "agent")).one()
        assert (stored.agent_name, stored.text) == (
            "Sam", "Sorry about the pole! A new one ships today.")

    # The customer answers; the open inbox shows it by itself.
    live.service.chat("Great, thanks!", conversation_id=conv)
    expect(transcript).to_contain_text("Great, thanks!", timeout=30_000)
    shot(page, "inbox.png", full_page=True)

    page.get_by_role("button", name="Resolve").click()
    expect(page.locator("#inbox-status")).to_contain_text("Resolved")
    expect(page.locator("#inbox-counts")).to_contain_text("Nothing is waiting")
    assert live.service.conversation(conv).handoffs[-1].status == "resolved"


def test_the_admin_tab_shows_the_webhook_log(new_page: Callable[[], Any], live: Live) -> None:
    from playwright.sync_api import expect

    conv = live.service.chat("I want a human").conversation_id
    live.api(f"/conversations/{conv}/resolve")
    assert live.service.webhooks.wait_idle(60)
    page = new_page()
    page.goto(live.url + "/")
    page.get_by_role("tab", name="Admin").click()
    page.locator("#admin-token input").fill(live.service.settings.resolved_admin_token)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_text("Webhook deliveries").click()
    page.get_by_role("button", name="Show the latest").click()
    log = page.locator("#admin-webhooks")
    expect(log).to_contain_text("conversation.resolved")
    expect(log).to_contain_text("handoff.created")
    expect(log).to_contain_text("delivered")
    expect(log).not_to_contain_text("/hook")  # the path of a webhook URL may be its secret
