"""The two SSE streams on a real uvicorn server: keep-alive pings that clients skip (the
widget's parser, the `openai` SDK), the proxy headers, and a client that goes away stops the
pipeline without logging a reply (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import openai
import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi import FastAPI
from sqlalchemy import Engine
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.conversations.service import ChatService
from chatbot.types import Reply, Signals, Turn
from chatbot.web import sse
from chatbot.web.app import create_app

# path -> a body that asks "can i pay with paypal" in that API's shape
STREAMS: dict[str, dict[str, Any]] = {
    "/api/v1/chat/stream": {"message": "can i pay with paypal"},
    "/v1/chat/completions": {"stream": True,
                             "messages": [{"role": "user", "content": "can i pay with paypal"}]},
}
PAYPAL = "We accept Visa, Mastercard, American Express, PayPal and gift cards."


class SlowPipeline(StandInPipeline):
    """The stand-in's stream with a pause before each word, so keep-alive pings fall between."""

    def stream(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Iterator[str | Reply]:
        for item in super().stream(question, history, signals):
            if isinstance(item, str):
                time.sleep(0.03)
            yield item


class EndlessPipeline(StandInPipeline):
    """Streams words until it is closed, and records that it was."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = threading.Event()

    def stream(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Iterator[str | Reply]:
        try:
            while True:
                time.sleep(0.01)
                yield " more"
        finally:
            self.closed.set()


def blocks(text: str) -> list[list[str]]:
    return [block.splitlines() for block in text.strip().split("\n\n")]


def start(serve: Callable[[FastAPI], str], settings: Settings, engine: Engine,
          pipeline: StandInPipeline) -> tuple[str, ChatService]:
    app = create_app(settings, pipeline=pipeline, engine=engine, mount_ui=False)
    return serve(app), app.state.service


@pytest.fixture
def fast_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "PING_S", 0.02)


@pytest.mark.parametrize("path", list(STREAMS))
def test_streams_ping_and_tell_proxies_not_to_buffer(
    path: str, fast_pings: None, serve: Callable[[FastAPI], str], settings: Settings,
    migrated_engine: Engine,  # noqa: F811
) -> None:
    url, _ = start(serve, settings, migrated_engine, SlowPipeline())
    response = httpx.post(url + path, json=STREAMS[path], timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    comments = [b for b in blocks(response.text) if all(line.startswith(":") for line in b)]
    events = [b for b in blocks(response.text) if b not in comments]
    assert comments, "no keep-alive ping in a stream of about 0.4 s with pings every 0.02 s"
    if path == "/v1/chat/completions":
        assert events[-1] == ["data: [DONE]"]
        chunks = [json.loads(b[0].removeprefix("data: ")) for b in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    else:
        named = [(b[0].removeprefix("event: "), json.loads(b[1].removeprefix("data: ")))
                 for b in events]
        assert [n for n, _ in named][:2] == ["meta", "token"] and named[-1][0] == "done"
        text = "".join(d["text"] for n, d in named if n == "token")
        assert text == named[-1][1]["reply"]
    assert text == PAYPAL


def test_the_openai_sdk_skips_the_pings(fast_pings: None, serve: Callable[[FastAPI], str],
                                        settings: Settings,
                                        migrated_engine: Engine) -> None:  # noqa: F811
    url, _ = start(serve, settings, migrated_engine, SlowPipeline())
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=30)
    chunks = list(client.chat.completions.create(model="chatbot", stream=True,
                                                 messages=STREAMS["/v1/chat/completions"]
                                                 ["messages"]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == PAYPAL
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("path", list(STREAMS))
def test_a_client_that_goes_away_stops_the_pipeline_and_no_reply_is_logged(
    path: str, serve: Callable[[FastAPI], str], settings: Settings,
    migrated_engine: Engine,  # noqa: F811
) -> None:
    pipeline = EndlessPipeline()
    url, service = start(serve, settings, migrated_engine, pipeline)
    seen: list[str] = []
    with httpx.Client(timeout=30) as client, client.stream("POST", url + path,
                                                           json=STREAMS[path]) as response:
        for line in response.iter_lines():
            seen.append(line)
            if len(seen) > 20:  # several words are through: hang up mid-answer
                break
    assert pipeline.closed.wait(10), "the pipeline's stream was not closed after the disconnect"
    assert any(" more" in line for line in seen)  # it was cut off mid-answer
    [conversation] = service.list_conversations()
    messages = service.conversation(conversation.id).messages
    assert [m.role for m in messages] == ["customer"]  # kept, and no half reply logged
