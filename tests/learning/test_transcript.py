"""Reading a transcript: which questions the bot failed on, and a person's answer to them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chatbot.learning.transcript import Line, exchanges, failed_questions, is_question, questions

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ANSWER = "Yes! Gift wrapping costs $5 an item: tick Gift wrap at checkout and add a card note."


def lines(*spec: tuple[str, str] | tuple[str, str, str]) -> list[Line]:
    """(role, text[, route]) rows; a route ending in '-' is a bot reply rated thumbs-down."""
    made = []
    for i, row in enumerate(spec):
        role, text = row[0], row[1]
        route = row[2] if len(row) > 2 else None  # type: ignore[misc]
        down = bool(route and route.endswith("-"))
        made.append(Line(id=f"m{i}", role=role, text=text, route=(route or "").rstrip("-") or None,
                         created_at=START + timedelta(seconds=i), rated_down=down,
                         cited=("ship-001",) if route in ("faq", "faq-") else ()))
    return made


@pytest.mark.parametrize(("text", "expected"), [
    ("Do you offer gift wrapping?", True),
    ("where is my order PC-1234", True),
    ("hi", False),
    ("Thanks so much!", False),
    ("yes please", False),
    ("ok thanks", False),
    ("can I talk to a human please", False),
    ("I want to talk to a human about my broken tent pole and the replacement part", True),
])
def test_what_reads_as_a_question(text: str, expected: bool) -> None:
    assert is_question(text) is expected


def test_outcomes_come_from_the_bot_reply_that_follows() -> None:
    transcript = lines(
        ("customer", "how long does shipping take"), ("bot", "3-5 days", "faq"),
        ("customer", "do you offer gift wrapping?"), ("bot", "not sure", "fallback"),
        ("customer", "is the tent waterproof at all"), ("bot", "It is.", "faq-"),
        ("customer", "can i talk to a person"), ("bot", "passing you on", "handoff"),
        ("customer", "are you still there for my question"),
    )
    found = {q.text: q.outcome for q in questions("c1", transcript)}
    assert found == {
        "how long does shipping take": "answered",
        "do you offer gift wrapping?": "fallback",
        "is the tent waterproof at all": "thumbs_down",
        "are you still there for my question": "unanswered",
    }  # the request for a person is not a question
    failed = failed_questions("c1", transcript)
    assert [q.outcome for q in failed] == ["fallback", "thumbs_down"]
    assert failed[1].cited == ("ship-001",)  # what the customer rejected


def test_rephrasings_and_the_agents_answer_make_one_exchange() -> None:
    transcript = lines(
        ("customer", "how long is shipping to canada"), ("bot", "5-8 days", "faq"),
        ("customer", "do you offer gift wrapping?"), ("bot", "not sure", "fallback"),
        ("customer", "can you wrap a present for me"), ("bot", "not sure", "fallback"),
        ("customer", "human please"), ("bot", "passing you on", "handoff"),
        ("agent", "Let me check."),
        ("customer", "ok"),
        ("agent", ANSWER),
        ("customer", "great thanks!"),
        ("agent", "You're welcome, have a lovely day and enjoy the trip!"),
    )
    [exchange] = exchanges("c1", transcript)
    assert [q.text for q in exchange.questions] == [
        "do you offer gift wrapping?", "can you wrap a present for me"]  # not the answered one
    assert exchange.answer == ANSWER  # no filler, no goodbye
    assert exchange.answer_message_id == "m10"


def test_a_question_asked_to_the_person_is_paired_with_their_answer() -> None:
    transcript = lines(
        ("customer", "my order never came"), ("bot", "not sure", "fallback"),
        ("customer", "talk to a human"), ("bot", "passing you on", "handoff"),
        ("agent", "Sorry about that! I have reshipped order PC-1 by express, no charge."),
        ("customer", "also do you sell replacement tent stakes?"),
        ("agent", "Yes, packs of 10 aluminium stakes are on the Accessories page for $12."),
    )
    first, second = exchanges("c1", transcript)
    assert [q.text for q in first.questions] == ["my order never came"]
    assert [q.outcome for q in second.questions] == ["unanswered"]
    assert second.answer.startswith("Yes, packs of 10")


def test_nothing_to_learn_without_an_agent_or_a_failed_question() -> None:
    assert exchanges("c1", lines(("customer", "do you offer gift wrapping?"),
                                 ("bot", "not sure", "fallback"))) == []
    assert exchanges("c1", lines(("customer", "how long does shipping take"),
                                 ("bot", "3-5 days", "faq"),
                                 ("agent", "Anything else I can help you with today, friend?"))
                     ) == []
