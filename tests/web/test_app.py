"""The REST API through TestClient with the stand-in pipeline, on SQLite and PostgreSQL:
chat, SSE streaming, feedback, hand-over, health, admin, and every bad-input case of issue 4
(422 with reasons, 404, 401, 429 with Retry-After, CORS, HTML kept as plain text)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi import FastAPI
from fastapi.testclient import TestClient
from live_helpers import sse_events
from sqlalchemy import Engine
from standin import INDEX_VERSION, StandInPipeline

from chatbot.config import Settings
from chatbot.types import Reply, Signals, Turn
from chatbot.web.app import create_app

ADMIN = {"Authorization": "Bearer dev-admin-token"}


def make_client(settings: Settings, engine: Engine, pipeline: StandInPipeline | None = None,
                **overrides: Any) -> TestClient:
    settings = settings.model_copy(update=overrides)
    app = create_app(settings, pipeline=pipeline or StandInPipeline(), engine=engine,
                     mount_ui=False)
    return TestClient(app)


@pytest.fixture
def client(settings: Settings, migrated_engine: Engine) -> Iterator[TestClient]:  # noqa: F811
    with make_client(settings, migrated_engine) as test_client:
        yield test_client


# --- chat ------------------------------------------------------------------------------------
def test_chat_answers_with_sources_and_continues_the_conversation(client: TestClient) -> None:
    response = client.post("/api/v1/chat", json={"message": "how long is delivery",
                                                 "channel": "widget"})
    assert response.status_code == 200
    body = response.json()
    assert body["reply"] == "Standard shipping takes 3-5 business days."
    assert (body["route"], body["confidence"], body["handoff"]) == ("faq", 1.0, False)
    assert body["sources"] == [{
        "n": 1, "record_id": "ship-001", "title": "How long does standard shipping take?",
        "snippet": "Standard shipping takes 3-5 business days.", "source": "faq.csv",
        "kind": "faq", "score": 1.0}]
    again = client.post("/api/v1/chat", json={"message": "can i pay with paypal",
                                              "conversation_id": body["conversation_id"]})
    assert again.json()["conversation_id"] == body["conversation_id"]
    conversation = client.get(f"/api/v1/conversations/{body['conversation_id']}").json()
    assert conversation["channel"] == "widget"
    assert [(m["role"], m["text"]) for m in conversation["messages"]] == [
        ("customer", "how long is delivery"),
        ("bot", "Standard shipping takes 3-5 business days."),
        ("customer", "can i pay with paypal"),
        ("bot", again.json()["reply"]),
    ]
    assert conversation["messages"][1]["id"] == body["message_id"]


def test_stream_sends_meta_tokens_and_done_with_the_chat_fields(client: TestClient) -> None:
    response = client.post("/api/v1/chat/stream", json={"message": "forgot my password"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[0][0] == "meta"
    tokens = [data["text"] for name, data in events if name == "token"]
    name, done = events[-1]
    assert name == "done" and len(tokens) > 3
    assert "".join(tokens) == done["reply"]
    assert done["conversation_id"] == events[0][1]["conversation_id"]
    assert set(done) == {"conversation_id", "message_id", "reply", "route", "confidence",
                         "sources", "handoff", "signals", "agent", "suggestions"}
    assert done["route"] == "faq" and done["sources"][0]["record_id"] == "acc-001"


class BrokenStream(StandInPipeline):
    def stream(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Iterator[str | Reply]:
        yield "Let me"
        raise RuntimeError("generator died")


def test_stream_failure_ends_with_an_error_event(settings: Settings,
                                                 migrated_engine: Engine) -> None:  # noqa: F811
    with make_client(settings, migrated_engine, BrokenStream()) as client:
        response = client.post("/api/v1/chat/stream", json={"message": "hello"})
    events = sse_events(response.text)
    assert [name for name, _ in events] == ["meta", "token", "error"]
    assert "generator died" not in events[-1][1]["error"]  # no internals leak to customers
    assert "server log" in events[-1][1]["error"]


def test_feedback_and_handoff(client: TestClient) -> None:
    chat = client.post("/api/v1/chat", json={"message": "do you ship to canada"}).json()
    thumbs = client.post("/api/v1/feedback", json={"message_id": chat["message_id"],
                                                   "rating": "up"})
    assert thumbs.status_code == 200 and thumbs.json()["feedback_id"]
    csat = client.post("/api/v1/feedback", json={"conversation_id": chat["conversation_id"],
                                                 "csat": 4, "comment": "fine"})
    assert csat.status_code == 200
    handoff = client.post("/api/v1/handoff", json={"conversation_id": chat["conversation_id"],
                                                   "reason": "want a person"})
    assert handoff.status_code == 200 and handoff.json()["status"] == "handed_off"
    conversation = client.get(f"/api/v1/conversations/{chat['conversation_id']}").json()
    assert conversation["status"] == "handed_off"
    assert conversation["messages"][1]["rating"] == "up"


def test_closing_a_conversation_sets_its_end_and_a_new_message_reopens_it(
        client: TestClient) -> None:
    chat = client.post("/api/v1/chat", json={"message": "do you ship to canada"}).json()
    url = f"/api/v1/conversations/{chat['conversation_id']}"
    closed = client.post(f"{url}/close")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    view = client.get(url).json()
    assert view["status"] == "closed" and view["ended_at"] is not None
    assert client.post(f"{url}/close").json()["ended_at"] == closed.json()["ended_at"]
    client.post("/api/v1/chat", json={"message": "and to mexico?",
                                      "conversation_id": chat["conversation_id"]})
    view = client.get(url).json()
    assert (view["status"], view["ended_at"]) == ("open", None)
    assert len(view["messages"]) == 4  # nothing lost across the close
    missing = client.post("/api/v1/conversations/nope/close")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_a_customer_transcript_never_shows_admin_fields(client: TestClient) -> None:
    chat = client.post("/api/v1/chat", json={"message": "how long is delivery",
                                             "customer_ref": "acct-7"}).json()
    client.post("/api/v1/feedback", json={"message_id": chat["message_id"], "rating": "up",
                                          "comment": "quick"})
    client.post("/api/v1/handoff", json={"conversation_id": chat["conversation_id"]})
    url = f"/api/v1/conversations/{chat['conversation_id']}"
    public = client.get(url).json()
    assert set(public) == {"id", "channel", "status", "started_at", "ended_at", "messages"}
    for message in public["messages"]:
        assert set(message) == {"id", "role", "text", "created_at", "route", "confidence",
                                "rating", "agent_name"}
    admin = client.get(f"/api/v1/admin{url.removeprefix('/api/v1')}", headers=ADMIN).json()
    assert admin["customer_ref"] == "acct-7" and len(admin["handoffs"]) == 1
    assert admin["feedback"][0]["comment"] == "quick"
    assert {"latency_ms", "model", "index_version", "reason", "hits"} <= set(admin["messages"][1])
    # The admin view is the customer's plus its own fields, with the same values.
    assert {k: admin[k] for k in public if k != "messages"} == {
        k: v for k, v in public.items() if k != "messages"}
    assert [{k: m[k] for k in public["messages"][0]} for m in admin["messages"]] == \
        public["messages"]


def test_health_is_ready_only_when_the_pipeline_is(settings: Settings,
                                                   migrated_engine: Engine) -> None:  # noqa: F811
    pipeline = StandInPipeline()
    with make_client(settings, migrated_engine, pipeline) as client:
        ready = client.get("/api/v1/health")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"
        assert ready.json()["index_version"] == INDEX_VERSION
        pipeline.set_ready(False)
        not_ready = client.get("/api/v1/health")
        assert not_ready.status_code == 503 and not_ready.json()["status"] == "not ready"


def test_openapi_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/chat", "/api/v1/chat/stream", "/api/v1/admin/export",
            "/v1/chat/completions"} <= set(paths)


def test_widget_files_are_served(client: TestClient) -> None:
    response = client.get("/widget/widget.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]


# --- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("payload, reason", [
    ({"message": ""}, "the message is empty"),
    ({"message": "   "}, "the message is empty"),
    ({"message": "x" * 4001}, "the message has 4001 characters, more than the 4000 allowed"),
    ({}, "message: is required"),
    ({"message": 5}, "message: Input should be a valid string"),
    ({"message": "hi", "channel": "fax"}, "channel: Input should be 'web', 'widget' or 'api'"),
])
def test_bad_chat_requests_get_422_that_says_why(client: TestClient, payload: dict,
                                                 reason: str) -> None:
    for path in ("/api/v1/chat", "/api/v1/chat/stream"):
        response = client.post(path, json=payload)
        assert response.status_code == 422
        assert reason in response.json()["error"]


def test_malformed_json_gets_422(client: TestClient) -> None:
    response = client.post("/api/v1/chat", content=b'{"message": "hi",',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["error"]


def test_bad_feedback_gets_422_naming_the_field(client: TestClient) -> None:
    chat = client.post("/api/v1/chat", json={"message": "hi"}).json()
    response = client.post("/api/v1/feedback", json={"message_id": chat["message_id"],
                                                     "csat": 9})
    assert response.status_code == 422 and response.json()["field"] == "csat"
    nothing = client.post("/api/v1/feedback", json={"conversation_id": chat["conversation_id"]})
    assert nothing.status_code == 422 and "give a rating" in nothing.json()["error"]


def test_unknown_conversation_gets_404(client: TestClient) -> None:
    assert client.get("/api/v1/conversations/nope").status_code == 404
    response = client.post("/api/v1/chat", json={"message": "hi", "conversation_id": "nope"})
    assert response.status_code == 404
    assert "omit conversation_id" in response.json()["error"]
    assert client.post("/api/v1/handoff", json={"conversation_id": "nope"}).status_code == 404
    assert client.post("/api/v1/feedback",
                       json={"message_id": "nope", "rating": "up"}).status_code == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": "Basic ZGV2OmRldg=="}])
def test_admin_needs_the_bearer_token(client: TestClient, headers: dict) -> None:
    for method, path in [("get", "/api/v1/admin/stats"), ("get", "/api/v1/admin/conversations"),
                         ("get", "/api/v1/admin/export"), ("post", "/api/v1/admin/reindex")]:
        response = getattr(client, method)(path, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/admin/stats", headers=ADMIN).status_code == 200


def test_rate_limit_answers_429_with_retry_after(settings: Settings,
                                                 migrated_engine: Engine) -> None:  # noqa: F811
    with make_client(settings, migrated_engine, rate_limit_per_minute=3) as client:
        codes = [client.post("/api/v1/chat", json={"message": "hi"}).status_code
                 for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.post("/api/v1/chat", json={"message": "hi"})
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "too many requests" in limited.json()["error"]
        assert client.get("/api/v1/health").status_code == 200  # health is not limited


def test_the_same_routes_are_rate_limited(settings: Settings,
                                          migrated_engine: Engine) -> None:  # noqa: F811
    with make_client(settings, migrated_engine, rate_limit_per_minute=1) as client:
        chat = client.post("/api/v1/chat", json={"message": "hi"}).json()  # the one allowed
        conversation = chat["conversation_id"]
        limited = [
            ("post", "/api/v1/chat", {"json": {"message": "hi"}}),
            ("post", "/api/v1/chat/stream", {"json": {"message": "hi"}}),
            ("post", "/api/v1/feedback", {"json": {"conversation_id": conversation, "csat": 5}}),
            ("post", "/api/v1/handoff", {"json": {"conversation_id": conversation}}),
            ("post", f"/api/v1/conversations/{conversation}/close", {}),
            ("post", "/v1/chat/completions",
             {"json": {"messages": [{"role": "user", "content": "hi"}]}}),
        ]
        for method, path, kwargs in limited:
            assert getattr(client, method)(path, **kwargs).status_code == 429, path
        free = [("get", f"/api/v1/conversations/{conversation}", {}),
                ("get", "/api/v1/health", {}), ("get", "/v1/models", {}),
                ("get", "/api/v1/admin/stats", {"headers": ADMIN})]
        for method, path, kwargs in free:
            assert getattr(client, method)(path, **kwargs).status_code == 200, path


def test_two_apps_in_one_process_keep_their_own_service_and_token(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    # The routers are module-level; each app's dependencies read its own app.state.
    with make_client(settings, migrated_engine, admin_token="token-a") as a, \
            make_client(settings, migrated_engine, admin_token="token-b",
                        rate_limit_per_minute=1) as b:
        assert a.get("/api/v1/admin/stats",
                     headers={"Authorization": "Bearer token-a"}).status_code == 200
        assert b.get("/api/v1/admin/stats",
                     headers={"Authorization": "Bearer token-a"}).status_code == 401
        assert b.get("/api/v1/admin/stats",
                     headers={"Authorization": "Bearer token-b"}).status_code == 200
        for _ in range(2):
            assert a.post("/api/v1/chat", json={"message": "hi"}).status_code == 200
        assert b.post("/api/v1/chat", json={"message": "hi"}).status_code == 200
        assert b.post("/api/v1/chat", json={"message": "hi"}).status_code == 429


def test_cors_allows_only_the_configured_origins(settings: Settings,
                                                 migrated_engine: Engine) -> None:  # noqa: F811
    with make_client(settings, migrated_engine, cors_origins=["https://shop.example"]) as client:
        def preflight(origin: str) -> Any:
            return client.options("/api/v1/chat", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type"})

        allowed = preflight("https://shop.example")
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        denied = preflight("https://evil.example")
        assert denied.status_code == 400
        assert "access-control-allow-origin" not in denied.headers
        simple = client.post("/api/v1/chat", json={"message": "hi"},
                             headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers
        # The widget on the shop's page may read a 429's Retry-After to say how long to wait.
        mine = client.post("/api/v1/chat", json={"message": "hi"},
                           headers={"Origin": "https://shop.example"})
        assert mine.headers["access-control-allow-origin"] == "https://shop.example"
        assert "retry-after" in mine.headers["access-control-expose-headers"].lower()


def test_html_is_stored_and_returned_as_plain_text(client: TestClient) -> None:
    html = '<script>alert("x")</script><img src=x onerror=alert(1)> hello'
    chat = client.post("/api/v1/chat", json={"message": html})
    assert chat.status_code == 200
    conversation = client.get(f"/api/v1/conversations/{chat.json()['conversation_id']}")
    assert conversation.headers["content-type"] == "application/json"
    assert conversation.json()["messages"][0]["text"] == html  # verbatim, not escaped or run
    export = client.get("/api/v1/admin/export?format=jsonl", headers=ADMIN)
    assert export.headers["content-type"] == "application/x-ndjson"
    assert json.loads(export.text.splitlines()[0])["messages"][0]["text"] == html
    missing = client.get("/api/v1/conversations/<script>alert(1)</script>")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.headers["x-content-type-options"] == "nosniff"


# --- admin -----------------------------------------------------------------------------------
def test_admin_conversations_filter_and_paginate(client: TestClient) -> None:
    ids = [client.post("/api/v1/chat", json={"message": m, "channel": c}).json()["conversation_id"]
           for m, c in [("how long is delivery", "web"), ("talk to a human", "widget"),
                        ("can i pay with paypal", "web")]]
    page = client.get("/api/v1/admin/conversations?limit=2", headers=ADMIN).json()
    assert page["total"] == 3 and [i["id"] for i in page["items"]] == [ids[2], ids[1]]
    rest = client.get("/api/v1/admin/conversations?limit=2&offset=2", headers=ADMIN).json()
    assert [i["id"] for i in rest["items"]] == [ids[0]]
    web = client.get("/api/v1/admin/conversations?channel=web", headers=ADMIN).json()
    assert web["total"] == 2
    handed = client.get("/api/v1/admin/conversations?status=handed_off", headers=ADMIN).json()
    assert [i["id"] for i in handed["items"]] == [ids[1]]
    found = client.get("/api/v1/admin/conversations?q=paypal", headers=ADMIN).json()
    assert [i["id"] for i in found["items"]] == [ids[2]]
    bad = client.get("/api/v1/admin/conversations?status=lost", headers=ADMIN)
    assert bad.status_code == 422 and "status" in bad.json()["error"]
    detail = client.get(f"/api/v1/admin/conversations/{ids[0]}", headers=ADMIN).json()
    bot = detail["messages"][1]
    assert bot["model"] == "standin" and bot["reason"] == "matched FAQ ship-001"
    assert bot["hits"][0]["record_id"] == "ship-001" and bot["hits"][0]["cited"] is True


def test_admin_export_streams_csv_and_jsonl(client: TestClient) -> None:
    for message in ("how long is delivery", "forgot my password"):
        client.post("/api/v1/chat", json={"message": message})
    csv_response = client.get("/api/v1/admin/export?format=csv", headers=ADMIN)
    assert csv_response.status_code == 200
    assert csv_response.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_response.headers["content-disposition"]
    assert len(csv_response.text.strip().splitlines()) == 1 + 4
    jsonl = client.get("/api/v1/admin/export?format=jsonl", headers=ADMIN)
    assert len(jsonl.text.strip().splitlines()) == 2
    assert client.get("/api/v1/admin/export?format=xml", headers=ADMIN).status_code == 422


def test_admin_stats(client: TestClient) -> None:
    chat = client.post("/api/v1/chat", json={"message": "how long is delivery"}).json()
    client.post("/api/v1/chat", json={"message": "what is the meaning of life"})
    client.post("/api/v1/feedback", json={"message_id": chat["message_id"], "rating": "up"})
    stats = client.get("/api/v1/admin/stats", headers=ADMIN).json()
    assert (stats["conversations"], stats["messages"], stats["bot_messages"]) == (2, 4, 2)
    assert stats["fallback_rate"] == 0.5 and stats["thumbs_up_rate"] == 1.0
    assert stats["deflection_rate"] == 0.5 and stats["handoff_rate"] == 0.0
    assert stats["csat_avg"] is None
    future = client.get("/api/v1/admin/stats?since=2999-01-01T00:00:00Z", headers=ADMIN).json()
    assert future["conversations"] == 0


class GatedReindexer:
    """Stands in for chatbot.retrieval.index.reindex: reports progress, then waits for the test."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, settings: Settings, *, full: bool, progress: Any) -> Any:
        self.calls += 1
        progress(1, 2, "embedding")
        self.release.wait(10)
        return {"version": "v2", "full": full}


def _wait_state(client: TestClient, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.get("/api/v1/admin/reindex/status", headers=ADMIN).json()
        if status["state"] == state:
            return status
        time.sleep(0.2)  # well inside the admin rate limit
    raise AssertionError(f"re-index never reached {state}: {status}")


def test_admin_reindex_runs_in_background_and_refuses_a_second_one(
    settings: Settings, migrated_engine: Engine  # noqa: F811
) -> None:
    pipeline, gate = StandInPipeline(), GatedReindexer()
    app: FastAPI = create_app(settings, pipeline=pipeline, engine=migrated_engine,
                              mount_ui=False, reindexer=gate)
    with TestClient(app) as client:
        started = client.post("/api/v1/admin/reindex", headers=ADMIN, json={"full": True})
        assert started.status_code == 202 and started.json()["state"] == "running"
        running = client.get("/api/v1/admin/reindex/status", headers=ADMIN).json()
        assert running["state"] == "running"
        second = client.post("/api/v1/admin/reindex", headers=ADMIN)
        assert second.status_code == 409 and "already running" in second.json()["error"]
        gate.release.set()
        done = _wait_state(client, "done")
    assert gate.calls == 1 and pipeline.reloads == 1 and done["full"] is True


@pytest.mark.slow
def test_admin_reindex_builds_the_real_index(settings: Settings,
                                             migrated_engine: Engine) -> None:  # noqa: F811
    from chatbot.retrieval.index import active_version

    pipeline = StandInPipeline()
    with make_client(settings, migrated_engine, pipeline) as client:
        assert client.post("/api/v1/admin/reindex", headers=ADMIN).status_code == 202
        done = _wait_state(client, "done")
    assert done["report"]["documents"] == 8  # five FAQs and three customer turns of dialogues
    assert active_version(settings) == done["report"]["version"]
    assert pipeline.reloads == 1 and done["fraction"] == 1.0
