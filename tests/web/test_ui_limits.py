"""The Gradio web UI counts against the API's rate limits (``ui.ratelimit``): its chat shares
the chat limit with /api/v1/chat, its admin sign-in the failed sign-in limit with the admin
API. Driven over HTTP the way the page does it (Gradio's queue: join, then read the events),
against a real uvicorn server with the stand-in pipeline."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi import FastAPI
from sqlalchemy import Engine
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.web.app import create_app

ADMIN = {"Authorization": "Bearer dev-admin-token"}


class Page:
    """One browser session of the Gradio page: calls its event handlers by name."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = uuid.uuid4().hex
        config = httpx.get(f"{base}/config", timeout=30).json()
        self.dependencies = config["dependencies"]
        self.elements = {c["props"].get("elem_id"): c["id"] for c in config["components"]}

    def handler(self, elem_id: str, event: str, step: int = 0) -> int:
        """The index of the handler run by ``event`` on the element ``elem_id`` (``step``: the
        n-th ``.then`` after it)."""
        target = [self.elements[elem_id], event]
        index = next(i for i, d in enumerate(self.dependencies) if target in d["targets"])
        return index + step

    def call(self, index: int, data: list[Any]) -> list[Any]:
        """Run handler ``index`` with ``data`` (None for server-side state); its outputs."""
        joined = httpx.post(f"{self.base}/gradio_api/queue/join", timeout=30, json={
            "data": data, "fn_index": index, "session_hash": self.session,
            "event_data": None, "trigger_id": None})
        assert joined.status_code == 200, joined.text
        with httpx.stream("GET", f"{self.base}/gradio_api/queue/data", timeout=30,
                          params={"session_hash": self.session}) as events:
            for line in events.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        assert message["success"], message
                        return list(message["output"]["data"])
        raise AssertionError(f"handler {index} never completed")

    def send(self, text: str) -> list[Any]:
        """Type ``text`` and press Enter: the customer's bubble, then the streamed answer."""
        self.call(self.handler("support-input", "submit"), [text, []])
        return self.call(self.handler("support-input", "submit", step=1),
                         [None, None, None, None, None])


@pytest.fixture
def live(settings: Settings, migrated_engine: Engine,  # noqa: F811
         serve: Callable[[FastAPI], str]) -> Callable[..., str]:
    def start(**overrides: Any) -> str:
        app = create_app(settings.model_copy(update=overrides), pipeline=StandInPipeline(),
                         engine=migrated_engine)
        return serve(app)
    return start


def test_the_web_chat_shares_the_chat_limit_with_the_api(live: Callable[..., str]) -> None:
    base = live(rate_limit_per_minute=2)
    page = Page(base)
    chatbot, *_, status, textbox = page.send("how long is delivery")
    # No notice: the answer's first update clears the status line, the last leaves it alone.
    assert "Standard shipping takes 3-5 business days" in json.dumps(chatbot)
    assert status in ("", {"__type__": "update"})
    assert httpx.post(f"{base}/api/v1/chat", json={"message": "hi"}).status_code == 200
    chatbot, *_, status, textbox = page.send("do you ship to canada")
    assert "sending messages too quickly" in status
    assert textbox == "do you ship to canada"  # given back to send again later
    assert "canada" not in json.dumps(chatbot)  # the bubble was taken back
    assert httpx.post(f"{base}/api/v1/chat", json={"message": "hi"}).status_code == 429


def test_the_admin_sign_in_shares_the_failed_sign_in_limit(live: Callable[..., str]) -> None:
    base = live(sign_in_failures_per_minute=2)
    page = Page(base)
    sign_in = page.handler("admin-sign-in", "click")
    for _ in range(2):  # (the signed-in flag is server-side state: the page never sees it)
        *_, message, _token = page.call(sign_in, ["a guess"])
        assert "not right" in message
    *_, message, _token = page.call(sign_in, ["dev-admin-token"])
    assert "Too many failed sign-ins" in message
    assert httpx.get(f"{base}/api/v1/admin/stats", headers=ADMIN).status_code == 429
