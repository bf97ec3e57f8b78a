"""A generation that is cut short or abandoned ends its thread.

The in-process generator runs ``model.generate`` in a thread named ``GENERATION_THREAD``; a
support gate that cuts the answer, a caller that stops reading and a client that disconnects
mid-stream must each leave none running (one still running when the interpreter exits aborts
the process: "terminate called without an active exception", exit 134). Tiny real models that
repeat a chosen text (``faultkit.build_scripted_lm``) make the answers long and predictable.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from faultkit import generation_threads, uvicorn_server
from standin_stages import DIALOGUE, RETURNS, SHIPPING, StandInRetriever, hit

from chatbot.answering.pipeline import Pipeline, build_pipeline
from chatbot.config import Settings
from chatbot.conversations.engine import upgrade
from chatbot.generation.local import TransformersGenerator
from chatbot.types import Reply, Route
from chatbot.web.app import create_app

QUESTION = "when will my parcel come"  # routed to grounded generation by these hits
HITS = {QUESTION: [hit(SHIPPING, 0.72), hit(DIALOGUE, 0.6, 2), hit(RETURNS, 0.3, 3)]}
THRESHOLDS = {"answer": 0.6, "faq": 0.85, "support": 0.5, "source": "test"}
FIRST = "Standard shipping takes 3-5 business days [1]."


def _settings(settings: Settings, model: Path) -> Settings:
    # 600 new tokens: seconds of generation, so a cut or a disconnect lands mid-answer.
    return settings.model_copy(update={"generator_model": str(model), "generator_adapter": "none",
                                       "torch_threads": 1, "max_new_tokens": 600,
                                       "rate_limit_per_minute": 0})


def _pipeline(s: Settings) -> Pipeline:
    return build_pipeline(s, retriever=StandInRetriever(HITS, THRESHOLDS),
                          generator=TransformersGenerator(s))


def test_an_answer_the_gate_cuts_leaves_no_generation_running(settings: Settings,
                                                              cut_lm: Path) -> None:
    pipeline = _pipeline(_settings(settings, cut_lm))
    reply = pipeline.answer(QUESTION)
    assert reply.route == Route.GENERATED and reply.text == FIRST
    assert "cut before an unsupported sentence" in reply.reason
    assert "tokens" not in reply.extra  # stopped by the cut, not finished
    assert generation_threads() == []

    items = list(pipeline.stream(QUESTION))
    assert isinstance(items[-1], Reply) and "".join(items[:-1]) == FIRST  # type: ignore[arg-type]
    assert generation_threads() == []


def test_a_stream_closed_mid_answer_leaves_no_generation_running(settings: Settings,
                                                                 fluent_lm: Path) -> None:
    s = _settings(settings, fluent_lm)
    upgrade(s)
    service = create_app(s, pipeline=_pipeline(s), mount_ui=False).state.service
    stream = service.chat_stream(QUESTION)
    assert next(stream) == FIRST
    assert generation_threads()  # the answer is still being generated
    stream.close()  # what the SSE endpoint does when its client goes away
    assert generation_threads() == []


def test_a_client_that_disconnects_mid_stream_leaves_no_generation_running(
        settings: Settings, fluent_lm: Path) -> None:
    s = _settings(settings, fluent_lm)
    upgrade(s)
    app = create_app(s, pipeline=_pipeline(s), mount_ui=False)
    with uvicorn_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        meta: dict = {}
        with http.stream("POST", "/api/v1/chat/stream", json={"message": QUESTION}) as response:
            assert response.status_code == 200
            name = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name == "meta":
                    meta = json.loads(line[6:])
                elif line.startswith("data: ") and name == "token":
                    break  # the first sentence arrived: hang up mid-answer
        deadline = time.monotonic() + 60  # the server notices, closes the stream, stops
        while generation_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert generation_threads() == []
        transcript = http.get(f"/api/v1/conversations/{meta['conversation_id']}").json()
        assert [m["role"] for m in transcript["messages"]] == ["customer"]  # no reply logged
        assert http.get("/api/v1/health").status_code == 200  # and the server goes on
