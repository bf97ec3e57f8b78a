"""The OpenAI-compatible endpoint, driven by the official `openai` package against a real
uvicorn server on a free loopback port (stand-in pipeline, SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi import FastAPI
from sqlalchemy import Engine
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.conversations.service import ChatService
from chatbot.web.app import create_app


@dataclass
class Server:
    base_url: str
    service: ChatService
    pipeline: StandInPipeline


@pytest.fixture
def server(settings: Settings, migrated_engine: Engine,  # noqa: F811
           serve: Callable[[FastAPI], str]) -> Server:
    pipeline = StandInPipeline()
    app = create_app(settings, pipeline=pipeline, engine=migrated_engine, mount_ui=False)
    return Server(f"{serve(app)}/v1", app.state.service, pipeline)


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0,
                         timeout=30)


def test_non_streaming_completion_answers_and_logs(client: openai.OpenAI, server: Server) -> None:
    completion = client.chat.completions.create(
        model="chatbot", messages=[{"role": "user", "content": "how long is delivery"}])
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == "Standard shipping takes 3-5 business days."
    extra = completion.model_extra["chatbot"]
    assert extra["route"] == "faq" and extra["sources"][0]["record_id"] == "ship-001"
    view = server.service.conversation(extra["conversation_id"])
    assert view.channel == "api"
    assert [(m.role, m.text) for m in view.messages] == [
        ("customer", "how long is delivery"), ("bot", choice.message.content)]


def test_streaming_completion_yields_deltas_that_join_to_the_answer(
    client: openai.OpenAI, server: Server
) -> None:
    stream = client.chat.completions.create(
        model="chatbot", stream=True,
        messages=[{"role": "user", "content": "can i pay with paypal"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "We accept Visa, Mastercard, American Express, PayPal and gift cards."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    conversation_id = chunks[-1].model_extra["chatbot"]["conversation_id"]
    messages = server.service.conversation(conversation_id).messages
    assert [m.text for m in messages] == ["can i pay with paypal", text]


def test_earlier_messages_are_the_history(client: openai.OpenAI, server: Server) -> None:
    client.chat.completions.create(model="chatbot", messages=[
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "how long is delivery"},
        {"role": "assistant", "content": "Standard shipping takes 3-5 business days."},
        {"role": "user", "content": "do you ship to canada"},
    ])
    question, history = server.pipeline.calls[-1]
    assert question == "do you ship to canada"
    assert [(t.role, t.text) for t in history] == [
        ("customer", "how long is delivery"),
        ("agent", "Standard shipping takes 3-5 business days."),
    ]


def test_user_field_keeps_one_conversation_per_user(client: openai.OpenAI,
                                                    server: Server) -> None:
    ids = set()
    for question in ("how long is delivery", "forgot my password"):
        completion = client.chat.completions.create(
            model="chatbot", user="customer-42",
            messages=[{"role": "user", "content": question}])
        ids.add(completion.model_extra["chatbot"]["conversation_id"])
    other = client.chat.completions.create(
        model="chatbot", messages=[{"role": "user", "content": "forgot my password"}])
    assert len(ids) == 1
    assert other.model_extra["chatbot"]["conversation_id"] not in ids
    view = server.service.conversation(ids.pop())
    assert view.customer_ref == "customer-42" and len(view.messages) == 4


def test_last_message_must_be_from_the_user(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="chatbot", messages=[
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    assert "last message must have role 'user'" in str(info.value)


def test_empty_and_over_long_questions_are_rejected(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="the message is empty"):
        client.chat.completions.create(
            model="chatbot", messages=[{"role": "user", "content": "  "}])
    with pytest.raises(openai.BadRequestError, match="more than the 4000 allowed"):
        client.chat.completions.create(
            model="chatbot", messages=[{"role": "user", "content": "x" * 4001}])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="chatbot", messages=[])


@pytest.mark.parametrize("content", ["", [{"type": "image_url",
                                           "image_url": {"url": "https://x.example/a.png"}}]])
@pytest.mark.parametrize("stream", [False, True])
def test_a_last_user_message_without_text_is_a_400(client: openai.OpenAI, content: Any,
                                                    stream: bool) -> None:
    messages: Any = [{"role": "user", "content": "hi"}, {"role": "user", "content": content}]
    with pytest.raises(openai.BadRequestError, match="the message is empty") as info:
        client.chat.completions.create(model="chatbot", stream=stream, messages=messages)
    assert info.value.status_code == 400 and info.value.param == "message"


def test_models_endpoint_lists_the_bot(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["chatbot"]
