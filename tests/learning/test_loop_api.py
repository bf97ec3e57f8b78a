"""The learning loop through the real app, on SQLite and PostgreSQL: the end-to-end continuation
after an agent resolves (suggestion -> approve -> background re-index -> a paraphrase is answered
with the approved answer, by the real retriever and policy), and the admin API's routes.

The pipeline is the real one (MiniLM retriever over the tiny knowledge base's real index, the
policy with its default thresholds, signals); only the generator is a stand-in, and no answer
here takes the generated route.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi.testclient import TestClient
from learning_log import GIFT_ANSWER, gift_wrap_conversation, write_conversation
from sqlalchemy import Engine
from standin_stages import StandInGenerator

from chatbot.answering.pipeline import build_pipeline
from chatbot.config import DEV_ADMIN_TOKEN, Settings
from chatbot.retrieval.search import Retriever
from chatbot.web.app import create_app

ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
PARAPHRASE = "Is gift wrapping offered?"  # cosine 0.89 with the customer's question


@pytest.fixture
def client(settings: Settings, migrated_engine: Engine,  # noqa: F811
           kb_retriever: Retriever) -> Iterator[TestClient]:
    pipeline = build_pipeline(settings, retriever=kb_retriever,
                              generator=StandInGenerator("not used"))
    app = create_app(settings, pipeline=pipeline, engine=migrated_engine, mount_ui=False)
    with TestClient(app) as test_client:
        yield test_client


def _chat(client: TestClient, message: str, conversation_id: str | None = None
          ) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if conversation_id:
        body["conversation_id"] = conversation_id
    response = client.post("/api/v1/chat", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_after_resolve_a_suggestion_is_approved_reindexed_and_answers(
        client: TestClient) -> None:
    app = client.app
    service, learning = app.state.service, app.state.learning  # type: ignore[attr-defined]
    # The knowledge base cannot answer: fallback, then the customer asks for a person.
    first = _chat(client, "Do you offer gift wrapping for presents?")
    assert first["route"] == "fallback"
    conversation_id = first["conversation_id"]
    assert _chat(client, "can I talk to a human", conversation_id)["route"] == "handoff"
    before = _chat(client, PARAPHRASE)
    assert before["route"] == "fallback"

    # A person answers and resolves: the learning loop is called back.
    _, token = service.agents.add("Sam")
    agent = {"Authorization": f"Bearer {token}"}
    base = f"/api/v1/agent/conversations/{conversation_id}"
    assert client.post(f"{base}/reply", json={"text": GIFT_ANSWER},
                       headers=agent).status_code == 200
    assert client.post(f"{base}/resolve", headers=agent).status_code == 200
    learning.flush(60)

    page = client.get("/api/v1/admin/suggestions", headers=ADMIN).json()
    assert page["total"] == 1
    [suggestion] = page["items"]
    assert suggestion["question"] == "Do you offer gift wrapping for presents?"
    assert suggestion["answer"] == GIFT_ANSWER and suggestion["count"] == 1
    assert suggestion["sources"][0]["conversation_id"] == conversation_id

    approved = client.post(f"/api/v1/admin/suggestions/{suggestion['id']}/approve",
                           json={"category": "gifts"}, headers=ADMIN)
    assert approved.status_code == 200, approved.text
    assert approved.json()["suggestion"]["record_id"] == f"sug-{suggestion['id']}"
    assert approved.json()["reindex"]["state"] in ("running", "done")
    status = service.wait_reindex(120)
    assert status.state == "done", status.error
    assert status.report["added"] == 1

    after = _chat(client, PARAPHRASE)
    assert after["route"] == "faq" and after["reply"] == GIFT_ANSWER
    assert [s["record_id"] for s in after["sources"]] == [f"sug-{suggestion['id']}"]
    # The knowledge base itself still answers as before.
    assert _chat(client, "How do I reset my password?")["sources"][0]["record_id"] == "acc-001"


def test_the_admin_api_needs_the_token_and_checks_input(client: TestClient,
                                                         migrated_engine: Engine  # noqa: F811
                                                         ) -> None:
    learning = client.app.state.learning  # type: ignore[attr-defined]
    routes = [("get", "/api/v1/admin/suggestions"), ("get", "/api/v1/admin/suggestions/1"),
              ("patch", "/api/v1/admin/suggestions/1"),
              ("post", "/api/v1/admin/suggestions/1/approve"),
              ("post", "/api/v1/admin/suggestions/1/reject"), ("get", "/api/v1/admin/gaps")]
    for method, url in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = client.request(method, url, headers=headers, json={})
            assert response.status_code == 401, (method, url)
            assert "error" in response.json()

    conversation_id, _ = write_conversation(migrated_engine, gift_wrap_conversation())
    learning.resolved(conversation_id).result(60)
    [item] = client.get("/api/v1/admin/suggestions", headers=ADMIN).json()["items"]
    url = f"/api/v1/admin/suggestions/{item['id']}"

    edited = client.patch(url, json={"question": "Do you gift wrap orders?"}, headers=ADMIN)
    assert edited.status_code == 200 and edited.json()["reindex"] is None
    assert edited.json()["suggestion"]["question"] == "Do you gift wrap orders?"
    for body in ({"question": ""}, {"answer": "x\x00"}, {"colour": "red"},
                 {"linked_faq_id": "nope"}):
        bad = client.patch(url, json=body, headers=ADMIN)
        assert bad.status_code == 422 and "error" in bad.json(), body
    assert client.get("/api/v1/admin/suggestions/999", headers=ADMIN).status_code == 404
    assert client.get("/api/v1/admin/suggestions?status=done", headers=ADMIN).status_code == 422

    rejected = client.post(f"{url}/reject", headers=ADMIN).json()
    assert rejected["suggestion"]["status"] == "rejected" and rejected["reindex"] is None
    assert client.post(f"{url}/reject", headers=ADMIN).status_code == 409
    assert client.get("/api/v1/admin/suggestions", headers=ADMIN).json()["total"] == 0
    assert client.get("/api/v1/admin/suggestions?status=all",
                      headers=ADMIN).json()["total"] == 1

    report = client.get("/api/v1/admin/gaps", headers=ADMIN).json()
    assert report["questions"] == 1
    assert report["topics"][0]["label"] == "Do you offer gift wrapping for presents?"
    assert report["topics"][0]["conversation_ids"] == [conversation_id]
    exported = client.get("/api/v1/admin/gaps?format=csv", headers=ADMIN)
    assert exported.headers["content-type"].startswith("text/csv")
    assert "content-gaps.csv" in exported.headers["content-disposition"]
    assert exported.text.splitlines()[1].startswith("1,1,1,1,0,0,Do you offer gift wrapping")
