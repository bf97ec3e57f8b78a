"""The agent API and the customer's live events over HTTP, on SQLite and PostgreSQL.

The end-to-end test runs a real uvicorn server with the stand-in pipeline and a real webhook
receiver: fallback -> hand-over -> the receiver gets handoff.created -> an agent claims and
replies over the API -> the customer's event stream receives the reply -> resolve. (The
learning loop extends it: a resolved conversation feeds it.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi import FastAPI
from fastapi.testclient import TestClient
from live_helpers import EventReader, WebhookReceiver
from sqlalchemy import Engine
from standin import FALLBACK_TEXT, StandInPipeline

from chatbot.answering import prompt
from chatbot.config import Settings
from chatbot.conversations.service import ChatService
from chatbot.conversations.webhooks import SIGNATURE_HEADER, verify
from chatbot.web.app import create_app

ADMIN = {"Authorization": "Bearer dev-admin-token"}
SECRET = "hook-secret"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(settings: Settings, migrated_engine: Engine) -> FastAPI:  # noqa: F811
    return create_app(settings, pipeline=StandInPipeline(), engine=migrated_engine,
                      mount_ui=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def service_of(app: FastAPI) -> ChatService:
    service: ChatService = app.state.service
    return service


def hand_over(client: TestClient) -> str:
    chat = client.post("/api/v1/chat", json={"message": "the thing with the thing"}).json()
    assert chat["route"] == "fallback"
    answer = client.post("/api/v1/handoff", json={"conversation_id": chat["conversation_id"]})
    assert answer.status_code == 200
    return str(chat["conversation_id"])


def test_agent_routes_need_an_agent_token(client: TestClient, app: FastAPI) -> None:
    _, token = service_of(app).agents.add("Sam")
    for headers in ({}, ADMIN, bearer("agt_wrong")):
        response = client.get("/api/v1/agent/inbox", headers=headers)
        assert response.status_code == 401, headers
        assert "agent token" in response.json()["error"]
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/api/v1/agent/me", headers=bearer(token)).json()["name"] == "Sam"
    # ...and an agent token opens the inbox only, never the admin API.
    assert client.get("/api/v1/admin/stats", headers=bearer(token)).status_code == 401
    assert client.get("/api/v1/admin/webhooks", headers=ADMIN).json() == []


def test_claim_reply_hand_back_and_conflicts(client: TestClient, app: FastAPI) -> None:
    service = service_of(app)
    _, sam = service.agents.add("Sam")
    _, ana = service.agents.add("Ana")
    conv = hand_over(client)
    inbox = client.get("/api/v1/agent/inbox", headers=bearer(sam)).json()
    assert [item["conversation_id"] for item in inbox] == [conv]
    assert inbox[0]["conversation"]["messages"][1]["reason"] == "no FAQ matched well enough"

    claimed = client.post(f"/api/v1/agent/conversations/{conv}/claim", headers=bearer(sam))
    assert claimed.status_code == 200 and claimed.json()["claimed_by"] == "Sam"
    taken = client.post(f"/api/v1/agent/conversations/{conv}/claim", headers=bearer(ana))
    assert taken.status_code == 409 and "Sam has already claimed" in taken.json()["error"]

    # The customer writes: logged, no bot reply, the response says a person has it.
    chat = client.post("/api/v1/chat", json={"message": "hello?", "conversation_id": conv})
    assert chat.json()["route"] == "agent" and chat.json()["agent"] == "Sam"
    assert chat.json()["reply"] == prompt.AGENT_HAS_IT_TEXT.format(agent="Sam")

    empty = client.post(f"/api/v1/agent/conversations/{conv}/reply", headers=bearer(sam),
                        json={"text": " "})
    assert empty.status_code == 422 and empty.json()["field"] == "text"
    sent = client.post(f"/api/v1/agent/conversations/{conv}/reply", headers=bearer(sam),
                       json={"text": "<b>Hi</b>, Sam here"}).json()
    assert sent["agent"] == "Sam" and sent["text"] == "<b>Hi</b>, Sam here"  # text, as typed
    public = client.get(f"/api/v1/conversations/{conv}").json()["messages"][-1]
    assert (public["role"], public["agent_name"], public["text"]) == (
        "agent", "Sam", "<b>Hi</b>, Sam here")

    assert client.post(f"/api/v1/agent/conversations/{conv}/handback",
                       headers=bearer(ana)).status_code == 409
    back = client.post(f"/api/v1/agent/conversations/{conv}/handback", headers=bearer(sam))
    assert back.json() == {"conversation_id": conv, "status": "handed_back", "agent": "Sam"}
    again = client.post("/api/v1/chat", json={"message": "how long is delivery",
                                              "conversation_id": conv}).json()
    assert again["route"] == "faq"  # the bot has it again
    assert client.post(f"/api/v1/agent/conversations/{conv}/resolve",
                       headers=bearer(sam)).status_code == 404
    assert client.post("/api/v1/agent/conversations/nope/claim",
                       headers=bearer(sam)).status_code == 404


def test_handoff_says_when_a_person_will_answer(client: TestClient, app: FastAPI) -> None:
    chat = client.post("/api/v1/chat", json={"message": "hi"}).json()
    body = client.post("/api/v1/handoff", json={"conversation_id": chat["conversation_id"]})
    assert body.json()["notice"] == prompt.HANDOFF_NOBODY_ONLINE_TEXT
    _, token = service_of(app).agents.add("Sam")
    client.get("/api/v1/agent/me", headers=bearer(token))  # Sam is signed in
    chat = client.post("/api/v1/chat", json={"message": "hi"}).json()
    body = client.post("/api/v1/handoff", json={"conversation_id": chat["conversation_id"]})
    assert body.json()["notice"] == prompt.HANDOFF_JOINING_TEXT


def test_a_streamed_hand_over_streams_when_a_person_will_answer(client: TestClient) -> None:
    text = client.post("/api/v1/chat/stream", json={"message": "a human please"}).text
    events = [block for block in text.strip().split("\n\n") if block.startswith("event:")]
    tokens = "".join(json.loads(b.split("data: ", 1)[1])["text"] for b in events
                     if b.startswith("event: token"))
    done = json.loads(events[-1].split("data: ", 1)[1])
    assert done["route"] == "handoff" and done["handoff"] is True
    assert tokens == done["reply"] and done["reply"].endswith(prompt.HANDOFF_NOBODY_ONLINE_TEXT)


def test_event_stream_errors_answer_before_streaming(client: TestClient) -> None:
    assert client.get("/api/v1/conversations/nope/events").status_code == 404
    conv = hand_over(client)
    bad = client.get(f"/api/v1/conversations/{conv}/events",
                     headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422 and bad.json()["field"] == "last_event_id"


def test_end_to_end_fallback_handover_agent_reply_resolve(
        settings: Settings, migrated_engine: Engine,  # noqa: F811
        serve: Callable[[FastAPI], str]) -> None:
    receiver = WebhookReceiver()
    hook = receiver.start()
    settings = settings.model_copy(update={"webhook_urls": [hook], "webhook_secret": SECRET})
    app = create_app(settings, pipeline=StandInPipeline(), engine=migrated_engine,
                     mount_ui=False)
    service = service_of(app)
    _, token = service.agents.add("Sam")
    base = serve(app)
    api = f"{base}/api/v1"
    try:
        import httpx

        with httpx.Client(timeout=30) as http:
            # The bot cannot answer; the customer takes the offer of a person.
            chat = http.post(f"{api}/chat", json={"message": "my order is lost",
                                                  "channel": "widget"}).json()
            assert chat["route"] == "fallback" and chat["reply"] == FALLBACK_TEXT
            conv = chat["conversation_id"]
            handed = http.post(f"{api}/handoff", json={"conversation_id": conv}).json()
            assert handed["status"] == "handed_off"

            (created,) = receiver.wait_for(1)
            assert verify(SECRET, created.body, created.headers[SIGNATURE_HEADER])
            assert created.json()["event"] == "handoff.created"
            assert created.json()["data"]["conversation_id"] == conv

            with EventReader(f"{api}/conversations/{conv}/events") as customer:
                assert customer.status == 200
                ready = customer.next("ready")
                assert ready.data == {"status": "handed_off", "agent": None}

                agent = bearer(token)
                inbox = http.get(f"{api}/agent/inbox", headers=agent).json()
                assert [i["conversation_id"] for i in inbox] == [conv]
                assert http.post(f"{api}/agent/conversations/{conv}/claim",
                                 headers=agent).status_code == 200
                joined = customer.next()
                assert (joined.name, joined.data["agent"]) == ("agent_joined", "Sam")

                waiting = http.post(f"{api}/chat", json={"message": "anyone there?",
                                                         "conversation_id": conv}).json()
                assert waiting["route"] == "agent"
                seen = http.get(f"{api}/agent/conversations/{conv}", headers=agent).json()
                assert seen["messages"][-1]["text"] == "anyone there?"

                sent = http.post(f"{api}/agent/conversations/{conv}/reply", headers=agent,
                                 json={"text": "Hi, I'm Sam. I've found your order."}).json()
                reply = customer.next()
                assert reply.name == "agent_message"
                assert reply.data["text"] == "Hi, I'm Sam. I've found your order."
                assert (reply.data["agent"], reply.data["message_id"]) == (
                    "Sam", sent["message_id"])

                assert http.post(f"{api}/agent/conversations/{conv}/resolve",
                                 headers=agent).json()["status"] == "resolved"
                assert customer.next().name == "resolved"

            # A reconnect after the join resumes with what came next (Last-Event-ID).
            with EventReader(f"{api}/conversations/{conv}/events",
                             {"Last-Event-ID": str(joined.id)}) as resumed:
                assert resumed.next().id == reply.id
                assert resumed.next().name == "resolved"
                assert resumed.next("ready").data == {"status": "open", "agent": None}

            assert service.webhooks.wait_idle(60)
            resolved = receiver.wait_for(2)[1]
            assert resolved.json()["event"] == "conversation.resolved"
            assert verify(SECRET, resolved.body, resolved.headers[SIGNATURE_HEADER])
            # The bot has the conversation again.
            after = http.post(f"{api}/chat", json={"message": "how long is delivery",
                                                   "conversation_id": conv}).json()
            assert after["route"] == "faq"
            log: list[dict[str, Any]] = http.get(f"{api}/admin/webhooks", headers=ADMIN).json()
            assert sorted((d["event"], d["status"]) for d in log) == [
                ("conversation.resolved", "delivered"), ("handoff.created", "delivered")]
    finally:
        receiver.stop()
