"""The generator fails: an OpenAI-compatible server that is unreachable, that never answers,
that stalls after its first chunk, and an in-process model that cannot load. Through the real
app and the real pipeline (a stand-in retriever routes the question to grounded generation), the
customer always gets the honest fallback with an offer of a person, as JSON and as a stream,
never a 500; the logged reason says the generator failed."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standin_stages import DIALOGUE, RETURNS, SHIPPING, StandInRetriever, hit

from chatbot.answering import prompt
from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.conversations.engine import upgrade
from chatbot.generation import make_generator
from chatbot.web.app import create_app

QUESTION = "when will my parcel come"  # evidence for generation, not for the FAQ verbatim
HITS = {QUESTION: [hit(SHIPPING, 0.72), hit(DIALOGUE, 0.6, 2), hit(RETURNS, 0.3, 3)]}
THRESHOLDS = {"answer": 0.6, "faq": 0.85, "support": 0.5, "source": "test"}
OFFERS = (prompt.FALLBACK_TEXT, prompt.UNSUPPORTED_TEXT)


class StallingServer:
    """An OpenAI-compatible server that sends the stream's headers and one chunk, then says
    nothing more until the test ends (a server that hangs mid-answer)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "m",
                         "choices": [{"index": 0, "delta": {"content": "Standard shipping "},
                                      "finish_reason": None}]}
                try:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                except OSError:
                    return
                owner.release.wait(60)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["unreachable", "never answers", "stalls mid-answer", "cannot load"])
def broken_generator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Settings for a generator that fails the way the parameter says."""
    http = dict(generator_backend="openai", generator_timeout_s=0.5, generator_retries=1)
    if request.param == "unreachable":
        with socket.socket() as probe:  # free a moment ago: nothing listens there
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        yield {**http, "generator_url": f"http://127.0.0.1:{port}/v1"}
    elif request.param == "never answers":
        # Accepts connections (the kernel's backlog) and never replies: every read times out.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)
            yield {**http, "generator_url": f"http://127.0.0.1:{silent.getsockname()[1]}/v1"}
    elif request.param == "stalls mid-answer":
        server = StallingServer()
        try:
            yield {**http, "generator_url": server.url}
        finally:
            server.close()
    else:
        yield {"generator_model": str(tmp_path / "no-such-model"), "generator_adapter": "none"}


def test_a_failing_generator_gives_the_fallback_and_a_person(
        settings: Settings, broken_generator: dict[str, Any]) -> None:
    s = settings.model_copy(update={**broken_generator, "rate_limit_per_minute": 0})
    upgrade(s)
    pipeline = build_pipeline(s, retriever=StandInRetriever(HITS, THRESHOLDS),
                              generator=make_generator(s))
    app = create_app(s, pipeline=pipeline, mount_ui=False)
    with TestClient(app, raise_server_exceptions=False) as client:  # runs the warm-up
        answered = client.post("/api/v1/chat", json={"message": QUESTION})
        assert answered.status_code == 200, answered.text
        body = answered.json()
        assert body["route"] == "fallback" and body["reply"] in OFFERS

        with client.stream("POST", "/api/v1/chat/stream", json={"message": QUESTION}) as stream:
            assert stream.status_code == 200
            events = [json.loads(line[6:]) for line in stream.iter_lines()
                      if line.startswith("data: ")]
        done = events[-1]
        assert done["route"] == "fallback" and done["reply"] in OFFERS
        assert "".join(e["text"] for e in events if set(e) == {"text"}) == done["reply"]

        service = app.state.service
        for conversation_id in (body["conversation_id"], done["conversation_id"]):
            bot = service.conversation(conversation_id).messages[-1]
            assert bot.route == "fallback" and "generator failed" in (bot.reason or "")
