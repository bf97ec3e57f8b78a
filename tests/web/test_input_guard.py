"""Input limits and cleaning at the edge (``chatbot.web.guard`` and the OpenAI route's limits),
on SQLite and PostgreSQL: control characters get a 422 naming the field before anything is
stored (PostgreSQL used to answer NUL with a 500), bodies over the limit get a 413 without
being read, and an OpenAI request is limited in messages and in the length of each."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from standin import StandInPipeline
from starlette.types import Message

from chatbot.config import Settings
from chatbot.web.app import create_app
from chatbot.web.guard import UI_BODY_FACTOR

ADMIN = {"Authorization": "Bearer dev-admin-token"}
NUL = "hi\u0000there"


@pytest.fixture
def client(settings: Settings, migrated_engine: Engine) -> Iterator[TestClient]:  # noqa: F811
    app = create_app(settings, pipeline=StandInPipeline(), engine=migrated_engine,
                     mount_ui=False)
    with TestClient(app) as test_client:
        yield test_client


def conversations(client: TestClient) -> int:
    return int(client.get("/api/v1/admin/conversations", headers=ADMIN).json()["total"])


def completion(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "chatbot", "messages": [{"role": "user", "content": content}], **extra}


# --- control characters ------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/v1/chat", "/api/v1/chat/stream"])
def test_a_nul_in_a_message_is_a_422_that_names_it_and_nothing_is_stored(
        client: TestClient, path: str) -> None:
    response = client.post(path, json={"message": NUL})
    assert response.status_code == 422
    assert response.json() == {
        "error": "the message contains a control character (U+0000) at position 2: remove it "
                 "(tabs and line breaks are fine)", "field": "message"}
    assert conversations(client) == 0


def test_a_nul_in_an_openai_message_is_a_400_in_openais_shape(client: TestClient) -> None:
    for body in (completion(NUL), completion(NUL, stream=True),
                 completion([{"type": "text", "text": NUL}])):
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"].startswith("messages.0.content")
        assert "U+0000" in error["message"]
    user = client.post("/v1/chat/completions", json=completion("hi", user="acct\x00"))
    assert user.status_code == 400 and user.json()["error"]["param"] == "user"
    assert conversations(client) == 0


@pytest.mark.parametrize("body, field", [
    ({"message": "hi", "customer_ref": "acct-\x007"}, "customer_ref"),
    ({"message": "hi", "conversation_id": "abc\x00"}, "conversation_id"),
    ({"message": "bell\x07"}, "message"),
    ('{"message": "lone \\ud800 surrogate"}', "message"),  # JSON can spell one; not a character
    ({"message": "hi", "bad\x00key": 1}, "body"),
])
def test_control_characters_in_any_chat_field_are_rejected(client: TestClient,
                                                           body: dict | str, field: str) -> None:
    response = (client.post("/api/v1/chat", json=body) if isinstance(body, dict) else
                client.post("/api/v1/chat", content=body,
                            headers={"Content-Type": "application/json"}))
    assert response.status_code == 422
    assert response.json()["field"] == field and "control character" in response.json()["error"]
    assert conversations(client) == 0


def test_feedback_comment_and_handoff_reason_are_cleaned_too(client: TestClient) -> None:
    chat = client.post("/api/v1/chat", json={"message": "do you ship to canada"}).json()
    comment = client.post("/api/v1/feedback", json={
        "conversation_id": chat["conversation_id"], "csat": 4, "comment": "fine\x00"})
    assert comment.status_code == 422 and comment.json()["field"] == "comment"
    reason = client.post("/api/v1/handoff", json={
        "conversation_id": chat["conversation_id"], "reason": "now\x1b[2J"})
    assert reason.status_code == 422 and reason.json()["field"] == "reason"
    view = client.get(f"/api/v1/admin/conversations/{chat['conversation_id']}",
                      headers=ADMIN).json()
    assert view["feedback"] == [] and view["handoffs"] == []


def test_control_characters_in_paths_and_query_parameters_are_rejected(
        client: TestClient) -> None:
    for url in ("/api/v1/conversations/abc%00def", "/api/v1/conversations/abc%00def/close",
                "/api/v1/admin/conversations/abc%07"):
        response = client.request("POST" if url.endswith("close") else "GET", url,
                                  headers=ADMIN)
        assert response.status_code == 422, url
        assert response.json()["field"] == "path" and "U+00" in response.json()["error"]
    query = client.get("/api/v1/admin/conversations?q=pay%00pal", headers=ADMIN)
    assert query.status_code == 422 and query.json()["field"] == "q"


def test_tabs_and_line_breaks_are_ordinary_text(client: TestClient) -> None:
    text = "my order:\n\tPC-100\r\nhasn't arrived"
    chat = client.post("/api/v1/chat", json={"message": text, "customer_ref": "a\tb"})
    assert chat.status_code == 200
    view = client.get(f"/api/v1/conversations/{chat.json()['conversation_id']}").json()
    assert view["messages"][0]["text"] == text


# --- body size -------------------------------------------------------------------------------
def test_a_body_over_the_limit_is_a_413_before_it_is_read(client: TestClient) -> None:
    big = b'{"message": "' + b"x" * 70_000 + b'"}'
    response = client.post("/api/v1/chat", content=big,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "larger than 65536 bytes" in response.json()["error"]
    openai = client.post("/v1/chat/completions", content=big,
                         headers={"Content-Type": "application/json"})
    assert openai.status_code == 413 and openai.json()["error"]["code"] == 413
    assert conversations(client) == 0


def test_a_chunked_body_is_counted_as_it_arrives(settings: Settings,
                                                 migrated_engine: Engine) -> None:  # noqa: F811
    """50 MB sent in 1 MB pieces without a Content-Length, straight into the app's ASGI
    interface: the guard answers 413 after the piece that crosses the limit and asks for no
    more."""
    app = create_app(settings, pipeline=StandInPipeline(), engine=migrated_engine,
                     mount_ui=False)
    pulled: list[int] = []
    sent: list[Message] = []

    async def receive() -> Message:
        pulled.append(len(pulled))
        return {"type": "http.request", "body": b"x" * 1_000_000, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/api/v1/chat",
             "raw_path": b"/api/v1/chat", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json"),
                         (b"transfer-encoding", b"chunked")],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert b"larger than 65536 bytes" in b"".join(m.get("body", b"") for m in sent[1:])
    assert len(pulled) == 1  # one 1 MB piece crossed 64 KiB; the other 49 were never read


def test_the_limit_is_a_setting_and_the_web_ui_gets_more(settings: Settings,
                                                         migrated_engine: Engine) -> None:  # noqa: F811
    app = create_app(settings.model_copy(update={"max_body_bytes": 2048}),
                     pipeline=StandInPipeline(), engine=migrated_engine, mount_ui=False)
    with TestClient(app) as client:
        fits = client.post("/api/v1/chat", json={"message": "x" * 1500})
        assert fits.status_code == 200
        assert client.post("/api/v1/chat", json={"message": "x" * 2100}).status_code == 413
        # Not an API path (the Gradio UI's would be): a larger limit, then the route decides.
        ui_sized = b"x" * (2048 * 2)
        assert client.post("/gradio_api/queue/join", content=ui_sized).status_code == 404
        too_big = b"x" * (2048 * UI_BODY_FACTOR + 1)
        assert client.post("/gradio_api/queue/join", content=too_big).status_code == 413


# --- the OpenAI-compatible request -------------------------------------------------------------
def test_openai_requests_are_limited_in_messages_and_length(client: TestClient) -> None:
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hello there"}
             for i in range(51)]
    many = client.post("/v1/chat/completions", json={"messages": turns})
    assert many.status_code == 400
    assert "51 messages, more than the 50 allowed" in many.json()["error"]["message"]
    assert client.post("/v1/chat/completions", json={"messages": turns[:49]}).status_code == 200
    long_history = [{"role": "assistant", "content": "y" * 4001},
                    {"role": "user", "content": "and?"}]
    response = client.post("/v1/chat/completions", json={"messages": long_history})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.content"
    assert "4001 characters, more than the 4000 allowed" in response.json()["error"]["message"]
    model = client.post("/v1/chat/completions", json=completion("hi", model="m" * 201))
    assert model.status_code == 400 and model.json()["error"]["param"] == "model"
