"""Frustration signals: behaviour on constructed conversations, the output contract, and the
shape of the labelled evaluation set the weights are fitted on (numbers live in bench/)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from chatbot.answering import prompt
from chatbot.answering.signals import (
    FEATURES,
    STRONG_WEIGHTS,
    WEIGHTS,
    SignalReader,
    Signals,
    repetition,
)
from chatbot.types import Route, Turn

DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "frustration.jsonl"
FALLBACK = Turn("agent", prompt.FALLBACK_TEXT, Route.FALLBACK.value)


@pytest.fixture(scope="module")
def reader() -> SignalReader:
    return SignalReader()


def fallbacks(*questions: str) -> tuple[Turn, ...]:
    """A conversation where the bot fell back on every question."""
    return tuple(t for q in questions for t in (Turn("customer", q), FALLBACK))


@pytest.mark.parametrize("message", [
    "This is the third time I'm asking, where is my refund?! Absolutely useless",
    "I've been waiting 3 weeks for my order and nobody answers my emails. I'm furious.",
])
def test_the_issue_examples_are_frustrated(reader: SignalReader, message: str) -> None:
    signals = reader.read(message)
    assert signals.frustrated
    assert signals.sentiment < 0
    assert signals.cues  # the reason text can say why


def test_a_shouted_repeated_complaint_is_frustrated(reader: SignalReader) -> None:
    history = fallbacks("where is my refund for PC-104877", "my refund for PC-104877, where is it")
    signals = reader.read("WHERE IS MY REFUND?! I ALREADY ASKED THIS TWICE", history)
    assert signals.frustrated
    assert {"shouting", "says_repeated", "fallbacks"} <= set(signals.cues)


@pytest.mark.parametrize("message", [
    "my tent pole arrived broken, how do I claim a replacement?",
    "The boots I received are a size 10 but I ordered a 10.5. Can I exchange them?",
    "my order PC-104233 hasn't arrived yet, it's been a week. could you check on it please?",
])
def test_a_calm_complaint_is_not_frustrated(reader: SignalReader, message: str) -> None:
    signals = reader.read(message)
    assert not signals.frustrated and not signals.strongly_frustrated


@pytest.mark.parametrize("message", [
    "Hi, order PC-104233, could you confirm it ships via UPS?",  # capitals that are codes
    "love it!!",  # excitement, not shouting
    "The tent came today and it's AMAZING!!",
    "cancel my order please",  # a calm request, not a threat
    "can I talk to a human",  # the policy hands over; asking is not frustration
])
def test_look_alikes_are_not_frustrated(reader: SignalReader, message: str) -> None:
    assert not reader.read(message).frustrated


def test_frustration_builds_over_a_history_of_fallbacks(reader: SignalReader) -> None:
    asks = ["where is my refund", "refund for PC-104877?", "my refund, where is it", "refund??"]
    scores = [reader.read("where is my refund", fallbacks(*asks[:n])).frustration
              for n in range(len(asks))]
    assert scores == sorted(scores) and scores[-1] > scores[0]
    assert not reader.read("where is my refund").frustrated
    assert reader.read("where is my refund", fallbacks(*asks[:3])).frustrated


def test_answered_turns_do_not_count_as_asking_again() -> None:
    answered = (Turn("customer", "what is the return window"),
                Turn("agent", "60 days from delivery.", Route.FAQ.value))
    message = "what is the return window for footwear"
    assert repetition(message, answered) == 0.0
    unanswered = fallbacks("what is the return window", "return window for shoes?")
    assert repetition(message, unanswered) == 1.0


def test_a_threat_to_leave_is_strong_frustration(reader: SignalReader) -> None:
    signals = reader.read("8 days and nothing. I'm cancelling and disputing the charge with my "
                          "bank, and I'll never shop here again.")
    assert signals.frustrated and signals.strongly_frustrated
    assert "threat" in signals.cues


@pytest.mark.parametrize("message", [
    "hello", "THANK YOU!!!", "??!!", "WHERE IS IT", "ok", "a" * 4000, "PC-104233 PC-104234",
    "you people are useless, I want a manager NOW, I'm filing a chargeback",
])
def test_outputs_stay_in_range(reader: SignalReader, message: str) -> None:
    signals = reader.read(message, fallbacks("x", "y", "z", "w"))
    assert -1.0 <= signals.sentiment <= 1.0
    assert 0.0 <= signals.frustration <= 1.0
    assert not signals.strongly_frustrated or signals.frustrated
    assert set(signals.cues) <= set(FEATURES) and len(set(signals.cues)) == len(signals.cues)
    json.dumps(signals.to_json())  # serialisable as the API's `signals`
    values = reader.features(message)
    assert list(values) == list(FEATURES) and all(0.0 <= v <= 1.0 for v in values.values())


def test_empty_message_has_no_signals(reader: SignalReader) -> None:
    assert reader.read("   ") == Signals(0.0, 0.0, False)


def test_constructor_only_stores_settings(reader: SignalReader) -> None:
    strict = SignalReader(threshold=0.99)
    assert strict._vader is None  # VADER loads on the first read, not before
    history = fallbacks("where is my refund", "refund for PC-104877?", "my refund, where is it")
    assert reader.read("where is my refund", history).frustrated
    assert not strict.read("where is my refund", history).frustrated
    with pytest.raises(ValueError):
        SignalReader(threshold=1.5)


def test_signals_serialise_for_the_api(reader: SignalReader) -> None:
    out = reader.read("this is ridiculous, where is my order").to_json()
    assert set(out) >= {"sentiment", "frustration", "frustrated"}
    assert isinstance(out["frustrated"], bool) and isinstance(out["cues"], list)


@pytest.mark.parametrize("text", [prompt.FRUSTRATED_ACK, prompt.FRUSTRATED_OFFER,
                                  prompt.FRUSTRATED_TEXT, prompt.FRUSTRATED_HANDOFF_TEXT])
def test_texts_for_frustrated_customers_never_send_them_elsewhere(text: str) -> None:
    lowered = text.lower()
    assert not any(w in lowered for w in ("contact us", "email", "call us", "phone", "@"))
    assert "sorry" in lowered or "person" in lowered


def test_every_cue_has_a_fitted_weight() -> None:
    assert set(WEIGHTS) == set(FEATURES) == set(STRONG_WEIGHTS)
    assert WEIGHTS["polite"] < 0  # the one cue that counts against frustration


# --- the evaluation set ----------------------------------------------------------------------


def test_the_evaluation_set_has_the_promised_shape() -> None:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]
    assert len(rows) >= 300
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["message"] for r in rows}) == len(rows)
    kinds = Counter(r["kind"] for r in rows)
    assert kinds["calm_complaint"] >= 60
    assert kinds["building"] >= 40
    assert 0.28 <= sum(r["frustrated"] for r in rows) / len(rows) <= 0.38
    assert 0.35 <= sum(r["split"] == "dev" for r in rows) / len(rows) <= 0.45
    for r in rows:
        assert r["split"] in {"dev", "test"} and isinstance(r["frustrated"], bool)
        assert not r["strong"] or r["frustrated"]
        assert all(t["role"] in {"customer", "agent"} and t["text"] for t in r["history"])
        if r["kind"] == "building":
            assert r["frustrated"] and any(t["role"] == "customer" for t in r["history"])
        if r["kind"] in {"calm_complaint", "neutral", "positive", "hard_negative",
                         "calm_followup"}:
            assert not r["frustrated"]
    for kind in kinds:  # stratified: every kind is in both splits
        assert {r["split"] for r in rows if r["kind"] == kind} == {"dev", "test"}
