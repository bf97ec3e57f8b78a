"""Personal data in the conversation log, on SQLite and PostgreSQL: what a customer writes is
stored and exported redacted (the pipeline still answers what was written), the customer
reference is pseudonymised but still finds its conversation, the bot's approved texts are kept,
and CHATBOT_STORE_VERBATIM keeps what it names."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import replace

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from sqlalchemy import Engine, select
from standin import FALLBACK_TEXT, StandInPipeline
from standin_stages import SHIPPING, StandInGenerator, StandInRetriever, hit

from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.conversations.engine import make_sessionmaker
from chatbot.conversations.models import Conversation, Feedback, Handoff, Message
from chatbot.conversations.service import ChatService
from chatbot.types import Reply, Route, Signals, Turn

CARD, EMAIL, PHONE = "4111 1111 1111 1111", "jane.doe@example.com", "+1 415 555 2671"
SECRET = f"my card {CARD}, email {EMAIL}, phone {PHONE}: how long is delivery?"
REDACTED = "my card [card], email [email], phone [phone]: how long is delivery?"


@pytest.fixture
def service(settings: Settings, migrated_engine: Engine) -> ChatService:  # noqa: F811
    return ChatService(settings, StandInPipeline(), migrated_engine)


def _rows(engine: Engine, model: type, *columns: str) -> list[tuple]:
    with make_sessionmaker(engine)() as session:
        return [tuple(getattr(row, c) for c in columns) for row in session.scalars(select(model))]


def test_customer_text_is_stored_redacted_and_answered_as_written(
        service: ChatService, migrated_engine: Engine) -> None:  # noqa: F811
    result = service.chat(SECRET, customer_ref=EMAIL)
    question, _ = service.pipeline.calls[-1]  # type: ignore[attr-defined]
    assert question == SECRET  # the bot read what the customer wrote
    texts = _rows(migrated_engine, Message, "role", "text")
    assert texts == [("customer", REDACTED), ("bot", result.reply.text)]
    (ref,) = _rows(migrated_engine, Conversation, "customer_ref")[0]
    assert ref.startswith("[email:") and EMAIL not in ref
    # The next turn's history is the stored one.
    service.chat("and to canada?", conversation_id=result.conversation_id)
    _, history = service.pipeline.calls[-1]  # type: ignore[attr-defined]
    assert history[0].text == REDACTED
    assert service.conversation(result.conversation_id).messages[0].text == REDACTED


def test_feedback_comments_and_handoff_reasons_are_redacted(
        service: ChatService, migrated_engine: Engine) -> None:  # noqa: F811
    cid = service.chat("how long is delivery").conversation_id
    service.feedback(conversation_id=cid, csat=2, comment=f"call me back on {PHONE}")
    service.handoff(conversation_id=cid, reason=f"write to {EMAIL}")
    assert _rows(migrated_engine, Feedback, "comment") == [("call me back on [phone]",)]
    assert _rows(migrated_engine, Handoff, "reason") == [("write to [email]",)]


class QuotingHandOver(StandInPipeline):
    """Hands over with a reason that quotes the customer (as a policy's reason could)."""

    def answer(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Reply:
        reply = super().answer(question, history, signals)
        return replace(reply, route=Route.HANDOFF, reason=f"customer wrote: {question}")


def test_a_hand_over_reason_quoting_the_customer_is_redacted_everywhere(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    service = ChatService(settings, QuotingHandOver(), migrated_engine)
    cid = service.chat(SECRET).conversation_id
    expected = f"customer wrote: {REDACTED}"
    assert [r for role, r in _rows(migrated_engine, Message, "role", "reason")
            if role == "bot"] == [expected]
    assert _rows(migrated_engine, Handoff, "reason") == [(expected,)]
    (created,) = [e for e in service.events.read(cid) if e.type == "handoff_created"]
    assert created.data["reason"] == expected  # what the inbox and the webhooks get


def test_a_pseudonymised_reference_still_finds_its_conversation(service: ChatService) -> None:
    mine = service.chat("how long is delivery", customer_ref=EMAIL).conversation_id
    assert service.find_conversation(customer_ref=EMAIL) == mine
    assert service.find_conversation(customer_ref=EMAIL.upper()) == mine  # same email
    assert service.find_conversation(customer_ref="john@example.com") is None
    plain = service.chat("hi", customer_ref="cust-7").conversation_id
    assert service.find_conversation(customer_ref="cust-7") == plain
    assert [c.customer_ref for c in service.list_conversations()
            if c.id == plain] == ["cust-7"]


def test_generated_replies_are_redacted_and_approved_texts_kept(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    company = SHIPPING.answer + " Questions? Call us at 1-800-555-0142."
    faq = SHIPPING.__class__(**{**SHIPPING.__dict__, "answer": company})
    question = f"i am {EMAIL}, how long does standard shipping take?"
    retriever = StandInRetriever(
        {"how long is standard shipping": [hit(faq, 0.97)], question: [hit(faq, 0.8)]},
        {"answer": 0.6, "faq": 0.9, "support": 0.3, "source": "test"})
    generated = f"Standard shipping takes 3-5 business days, {EMAIL} [1]."
    pipeline = build_pipeline(settings, retriever=retriever, generator=StandInGenerator(generated))
    service = ChatService(settings, pipeline, migrated_engine)
    verbatim = service.chat("how long is standard shipping")
    assert verbatim.reply.route.value == "faq"
    answer = service.chat(question, conversation_id=verbatim.conversation_id)
    assert answer.reply.route.value == "generated" and answer.reply.text == generated
    bot = [t for r, t in _rows(migrated_engine, Message, "role", "text") if r == "bot"]
    assert company in bot  # the company's own phone number, as approved
    assert "Standard shipping takes 3-5 business days, [email] [1]." in bot


def test_store_verbatim_keeps_the_kinds_it_names(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    keep = ChatService(settings.model_copy(update={"store_verbatim": ["email", "phone"]}),
                       StandInPipeline(), migrated_engine)
    keep.chat(SECRET, customer_ref=EMAIL)
    texts = [t for r, t in _rows(migrated_engine, Message, "role", "text") if r == "customer"]
    assert texts == [f"my card [card], email {EMAIL}, phone {PHONE}: how long is delivery?"]
    assert _rows(migrated_engine, Conversation, "customer_ref") == [(EMAIL,)]


def test_exports_redact_rows_stored_verbatim(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    everything = settings.model_copy(update={"store_verbatim": ["all"]})
    before = ChatService(everything, StandInPipeline(), migrated_engine)
    cid = before.chat(SECRET, customer_ref=EMAIL).conversation_id
    before.feedback(conversation_id=cid, csat=3, comment=f"mail {EMAIL}")
    before.handoff(conversation_id=cid, reason=f"card {CARD}")
    assert _rows(migrated_engine, Message, "text")[0] == (SECRET,)  # stored as written

    service = ChatService(settings, StandInPipeline(), migrated_engine)  # the default: none
    exported = "".join(service.export("jsonl")) + "".join(service.export("csv"))
    for secret in (CARD, EMAIL, PHONE, "4111"):
        assert secret not in exported
    line = json.loads(next(iter(service.export("jsonl"))))
    assert line["messages"][0]["text"] == REDACTED
    assert line["customer_ref"].startswith("[email:")
    assert [f["comment"] for f in line["feedback"]] == ["mail [email]"]
    assert [h["reason"] for h in line["handoffs"]] == ["card [card]"]
    rows = list(csv.DictReader(io.StringIO("".join(service.export("csv")))))
    assert [r["text"] for r in rows] == [REDACTED, FALLBACK_TEXT]  # the bot's text as it is
    # An export under store_verbatim=all is the log as it is.
    assert EMAIL in "".join(before.export("jsonl"))
