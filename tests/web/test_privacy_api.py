"""Privacy at the API, on SQLite and PostgreSQL: a reply whose sources include a past dialogue
shows the customer no dialogue in /chat, the stream's done event, the OpenAI-compatible
extension and the transcript (the admin view keeps the hit); DELETE
/api/v1/admin/conversations/{id} removes a conversation and all of it. The pipeline is the real
one with stand-in retriever and generator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from standin_stages import DIALOGUE, RETURNS, SHIPPING, StandInGenerator, StandInRetriever, hit

from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.conversations.models import Conversation, Feedback, Handoff, Message, RetrievalHit
from chatbot.web.app import create_app

ADMIN = {"Authorization": "Bearer dev-admin-token"}
QUESTION = "when will my order get here"
# The dialogue ranks first, so the generator cites it as [1].
HITS = [hit(DIALOGUE, 0.9), hit(SHIPPING, 0.8, 2), hit(RETURNS, 0.7, 3)]
GENERATED = ("Late parcels are traced by the carrier after 5 business days [1]. Standard "
             "shipping takes 3-5 business days [2].")
SHOWN = ("Late parcels are traced by the carrier after 5 business days. Standard shipping "
         "takes 3-5 business days [1].")
SOURCES = [{"n": 1, "record_id": "ship-001", "kind": "faq"}]
# What of the dialogue a customer must never see: the past customer's words, its record.
NEVER = (DIALOGUE.question, DIALOGUE.record_id, '"dialogue"')


@pytest.fixture
def client(settings: Settings, migrated_engine: Engine) -> Iterator[TestClient]:  # noqa: F811
    retriever = StandInRetriever({QUESTION: HITS},
                                 {"answer": 0.6, "faq": 0.95, "support": 0.3, "source": "test"})
    pipeline = build_pipeline(settings, retriever=retriever,
                              generator=StandInGenerator(GENERATED))
    app = create_app(settings, pipeline=pipeline, engine=migrated_engine, mount_ui=False)
    with TestClient(app) as test_client:
        yield test_client


def _shown(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: s[k] for k in ("n", "record_id", "kind")} for s in sources]


def _no_dialogue(body: str) -> None:
    for secret in NEVER:
        assert secret not in body, secret


def _sse_data(text: str) -> list[Any]:
    return [json.loads(line[len("data: "):]) for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_chat_shows_faq_sources_only_with_matching_citations(client: TestClient) -> None:
    response = client.post("/api/v1/chat", json={"message": QUESTION})
    assert response.status_code == 200
    body = response.json()
    assert (body["route"], body["reply"]) == ("generated", SHOWN)
    assert _shown(body["sources"]) == SOURCES
    _no_dialogue(response.text)
    # The customer's transcript: the same text, nothing of the dialogue.
    transcript = client.get(f"/api/v1/conversations/{body['conversation_id']}")
    assert [m["text"] for m in transcript.json()["messages"]] == [QUESTION, SHOWN]
    _no_dialogue(transcript.text)
    # Staff still see every hit, the cited dialogue included.
    admin = client.get(f"/api/v1/admin/conversations/{body['conversation_id']}", headers=ADMIN)
    hits = admin.json()["messages"][1]["hits"]
    assert {(h["record_id"], h["kind"], h["cited"]) for h in hits} == {
        ("dlg-0001#0", "dialogue", True), ("ship-001", "faq", True), ("ret-001", "faq", False)}


def test_the_stream_sends_the_same_text_and_sources(client: TestClient) -> None:
    response = client.post("/api/v1/chat/stream", json={"message": QUESTION})
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    tokens = "".join(data["text"] for name, data in events if name == "token")
    name, done = events[-1]
    assert name == "done" and tokens == done["reply"] == SHOWN
    assert _shown(done["sources"]) == SOURCES
    _no_dialogue(response.text)


@pytest.mark.parametrize("stream", [False, True])
def test_the_openai_compatible_extension_shows_faq_sources_only(
        client: TestClient, stream: bool) -> None:
    response = client.post("/v1/chat/completions", json={
        "model": "chatbot", "stream": stream,
        "messages": [{"role": "user", "content": QUESTION}]})
    assert response.status_code == 200
    if stream:
        chunks = _sse_data(response.text)
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        extension = chunks[-1]["chatbot"]
    else:
        body = response.json()
        content, extension = body["choices"][0]["message"]["content"], body["chatbot"]
    assert content == SHOWN
    assert _shown(extension["sources"]) == SOURCES
    _no_dialogue(response.text)


def test_delete_removes_the_conversation_and_everything_of_it(
        client: TestClient, migrated_engine: Engine) -> None:  # noqa: F811
    cid = client.post("/api/v1/chat", json={"message": QUESTION}).json()["conversation_id"]
    message_id = client.post("/api/v1/chat", json={"message": QUESTION,
                                                   "conversation_id": cid}).json()["message_id"]
    client.post("/api/v1/feedback", json={"message_id": message_id, "rating": "down"})
    client.post("/api/v1/handoff", json={"conversation_id": cid, "reason": "a person please"})
    other = client.post("/api/v1/chat", json={"message": QUESTION}).json()["conversation_id"]
    with migrated_engine.connect() as connection:
        message_ids = list(connection.scalars(
            select(Message.id).where(Message.conversation_id == cid)))

    assert client.delete(f"/api/v1/admin/conversations/{cid}").status_code == 401
    response = client.delete(f"/api/v1/admin/conversations/{cid}", headers=ADMIN)
    assert response.status_code == 204 and response.content == b""

    assert client.get(f"/api/v1/conversations/{cid}").status_code == 404
    assert client.get(f"/api/v1/admin/conversations/{cid}", headers=ADMIN).status_code == 404
    with migrated_engine.connect() as connection:
        for model in (Conversation, Message, Feedback, Handoff):
            column = model.id if model is Conversation else model.conversation_id
            assert not connection.scalar(select(func.count()).select_from(model)
                                         .where(column == cid)), model
        assert len(message_ids) == 4 and not connection.scalar(
            select(func.count(RetrievalHit.id)).where(RetrievalHit.message_id.in_(message_ids)))
    assert client.get(f"/api/v1/conversations/{other}").status_code == 200
    again = client.delete(f"/api/v1/admin/conversations/{cid}", headers=ADMIN)
    assert again.status_code == 404 and "does not exist" in again.json()["error"]
