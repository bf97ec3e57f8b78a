"""Routing decisions on constructed cases and threshold picking (the support check and gate:
test_grounding.py)."""

from __future__ import annotations

import numpy as np
import pytest
from standin_stages import DIALOGUE, RETURNS, SHIPPING, hit

from chatbot.answering import prompt
from chatbot.answering.calibrate import (
    calibrate_support,
    pick_threshold,
    pick_thresholds,
    route_metrics,
)
from chatbot.answering.grounding import support_check
from chatbot.answering.policy import (
    DEFAULT_THRESHOLDS,
    Policy,
    Thresholds,
    asks_for_human,
    consecutive_fallbacks,
)
from chatbot.config import Settings
from chatbot.types import Route, Turn

TH = Thresholds(answer=0.6, faq=0.85, support=0.5, source="test")


@pytest.fixture
def policy(settings: Settings) -> Policy:
    return Policy(settings)


@pytest.mark.parametrize("text", [
    "can I talk to a human", "I want to speak to a real person please", "agent", "AGENT please",
    "get me a representative", "connect me with someone from your support team",
    "transfer me to an agent", "Is there a live agent?", "let me talk to a person",
])
def test_asks_for_human_detects_requests(text: str) -> None:
    assert asks_for_human(text)


@pytest.mark.parametrize("text", [
    "how long does shipping take", "my travel agent booked the wrong dates on my order",
    "can a person return a gift?", "which carrier delivers my parcel", "personal data deletion",
])
def test_asks_for_human_ignores_ordinary_questions(text: str) -> None:
    assert not asks_for_human(text)


def test_confident_faq_hit_is_answered_verbatim(policy: Policy) -> None:
    d = policy.decide("how long is shipping", [hit(SHIPPING, 0.91), hit(RETURNS, 0.4, 2)], (), TH)
    assert d.route == Route.FAQ
    assert d.text == SHIPPING.answer
    assert d.sources[0].document is SHIPPING
    assert "ship-001" in d.reason and "0.910" in d.reason and "0.850" in d.reason
    assert d.confidence == pytest.approx(0.91)


def test_good_but_inexact_evidence_goes_to_generation(policy: Policy) -> None:
    hits = [hit(SHIPPING, 0.7), hit(RETURNS, 0.5, 2), hit(DIALOGUE, 0.45, 3), hit(SHIPPING, 0.1, 4)]
    d = policy.decide("when does my parcel come", hits, (), TH)
    assert d.route == Route.GENERATED
    assert d.text is None
    assert len(d.sources) == prompt.MAX_SOURCES
    assert "grounded generation" in d.reason


def test_a_dialogue_hit_is_never_returned_verbatim(policy: Policy) -> None:
    d = policy.decide("my parcel is late", [hit(DIALOGUE, 0.97), hit(SHIPPING, 0.5, 2)], (), TH)
    assert d.route == Route.GENERATED


def test_weak_evidence_falls_back_honestly(policy: Policy) -> None:
    d = policy.decide("what's the weather in Bend", [hit(SHIPPING, 0.3)], (), TH)
    assert d.route == Route.FALLBACK
    assert d.text == prompt.FALLBACK_TEXT
    assert "0.300 < answer threshold 0.600" in d.reason
    assert policy.decide("anything", [], (), TH).reason == "retrieval found nothing"


def test_asking_for_a_human_hands_over_even_with_a_good_hit(policy: Policy) -> None:
    d = policy.decide("shipping is slow, talk to a human", [hit(SHIPPING, 0.95)], (), TH)
    assert d.route == Route.HANDOFF
    assert d.reason == "customer asked for a human"


def test_yes_after_the_offer_of_a_human_hands_over(policy: Policy) -> None:
    history = [Turn("customer", "weather?"), Turn("agent", prompt.FALLBACK_TEXT, "fallback")]
    assert policy.decide("yes please", [hit(SHIPPING, 0.2)], history, TH).route == Route.HANDOFF
    after_faq = [Turn("customer", "shipping?"), Turn("agent", SHIPPING.answer, "faq")]
    assert policy.decide("yes please", [hit(SHIPPING, 0.2)], after_faq, TH).route == Route.FALLBACK


def test_repeated_fallbacks_hand_over(settings: Settings) -> None:
    policy = Policy(settings)  # handoff_after_fallbacks defaults to 2
    fb = Turn("agent", prompt.FALLBACK_TEXT, "fallback")
    one = [Turn("customer", "a"), fb]
    two = [Turn("customer", "a"), fb, Turn("customer", "b"), fb]
    assert policy.decide("c", [hit(SHIPPING, 0.2)], one, TH).route == Route.FALLBACK
    d = policy.decide("c", [hit(SHIPPING, 0.2)], two, TH)
    assert d.route == Route.HANDOFF
    assert "2 fallbacks in a row" in d.reason
    broken = [Turn("customer", "a"), fb, Turn("agent", SHIPPING.answer, "faq"), fb]
    assert consecutive_fallbacks(broken) == 1
    # A confident answer is still given after fallbacks.
    assert policy.decide("c", [hit(SHIPPING, 0.9)], two, TH).route == Route.FAQ


def test_thresholds_come_from_the_manifest_or_documented_defaults() -> None:
    stored = {"answer": 0.5, "faq": 0.8, "support": 0.4, "source": "calibrated", "metrics": {}}
    t = Thresholds.from_manifest({"thresholds": stored})
    assert (t.answer, t.faq, t.support, t.source) == (0.5, 0.8, 0.4, "calibrated")
    assert Thresholds.from_manifest({}) is DEFAULT_THRESHOLDS
    assert "calibrate" in DEFAULT_THRESHOLDS.source
    assert Thresholds.from_manifest({"thresholds": t.to_json()}) == t


def test_pick_threshold_takes_the_lowest_score_reaching_the_target() -> None:
    in_scores = np.array([0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.92, 0.88] * 3)
    in_ok = np.array([True] * 36)
    out_scores = np.array([0.55, 0.2, 0.1, 0.3])
    t, p, reached = pick_threshold(in_scores, in_ok, out_scores, 0.8)
    # At 0.55 one of four out-of-scope questions is answered: balanced precision
    # (21/36) / (21/36 + 1/4) = 0.7 < 0.8; at 0.6 none is: precision 1.0.
    assert (t, reached) == (0.6, True) and p == 1.0
    _, _, reachable = pick_threshold(in_scores, np.array([False] * 36), out_scores, 0.8)
    assert not reachable


def test_pick_thresholds_makes_the_verbatim_path_stricter() -> None:
    rng = np.random.default_rng(0)
    in_hits, labels = [], []
    for _ in range(200):
        right = rng.random() < 0.9
        score = float(rng.uniform(0.6, 1.0) if right else rng.uniform(0.5, 0.8))
        target = SHIPPING if right else RETURNS
        in_hits.append([hit(target, score), hit(DIALOGUE, score - 0.1, 2)])
        labels.append("ship-001")
    out_hits = [[hit(RETURNS, float(s))] for s in rng.uniform(0.2, 0.7, 100)]
    answer, faq, metrics = pick_thresholds(in_hits, labels, out_hits,
                                           lambda h: h.document.record_id, 0.9)
    assert 0.5 < answer <= faq <= 1.0
    assert metrics["answer_precision"] >= 0.9 and metrics["faq_precision"] >= 0.95
    report = route_metrics(in_hits, labels, out_hits, lambda h: h.document.record_id,
                           Thresholds(answer, faq, 0.5), Settings(_env_file=None))
    assert report["oos_fallback"] >= 0.9
    assert report["in_scope_correct"] <= report["in_scope_answered"]


def test_support_threshold_rejects_most_unrelated_sentences() -> None:
    answers = [("ship-001", SHIPPING.answer), ("ret-001", RETURNS.answer),
               ("x", "Our gift cards never expire and carry no fees."),
               ("y", "Trail Points expire after 12 months without activity.")]
    in_hits = [[hit(SHIPPING, 0.9)] for _ in range(30)]
    threshold, metrics = calibrate_support(in_hits, ["ship-001"] * 30, answers,
                                           lambda h: h.document.record_id, 0.95)
    assert 0.0 < threshold <= 1.0
    assert metrics["support_negative_pass_rate"] <= 0.05
    assert support_check(SHIPPING.answer, [hit(SHIPPING, 0.9)], threshold).supported
