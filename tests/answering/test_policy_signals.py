"""What the policy does with frustration signals: acknowledge and offer a person around an
answer, never "contact us" to someone contacting us, hand a strongly frustrated customer over
with high priority, and still hand over at once on an explicit request."""

from __future__ import annotations

import re

import pytest
from standin_stages import RETURNS, SHIPPING, hit

from chatbot.answering import prompt
from chatbot.answering.policy import Policy, Thresholds, offered_human
from chatbot.config import Settings
from chatbot.types import Route, Signals, Turn

TH = Thresholds(answer=0.6, faq=0.85, support=0.5, source="test")
CALM = Signals(sentiment=0.3, frustration=0.05, frustrated=False)
FRUSTRATED = Signals(sentiment=-0.6, frustration=0.9, frustrated=True,
                     cues=("says_repeated", "anger"))
STRONG = Signals(sentiment=-0.8, frustration=0.99, frustrated=True, strongly_frustrated=True,
                 cues=("threat", "anger"))
FAQ_HITS = [hit(SHIPPING, 0.91), hit(RETURNS, 0.4, 2)]
WEAK_HITS = [hit(RETURNS, 0.2)]
# "Contact us", "email us", "call us", "reach out": a customer writing to us is contacting us.
SENDS_AWAY = re.compile(r"\b(contact|email|e-mail|call|phone|reach out to|write to)\s+us\b",
                        re.IGNORECASE)


@pytest.fixture
def policy(settings: Settings) -> Policy:
    return Policy(settings)


def test_no_frustration_text_sends_the_customer_elsewhere() -> None:
    for text in (prompt.FRUSTRATED_ACK, prompt.FRUSTRATED_OFFER, prompt.FRUSTRATED_TEXT,
                 prompt.FRUSTRATED_HANDOFF_TEXT):
        assert not SENDS_AWAY.search(text), text


def test_no_hand_over_text_promises_that_the_person_sees_every_word() -> None:
    # Agents read the log, where card numbers, emails and phone numbers are redacted: the
    # texts promise the conversation, not "everything you wrote".
    for text in (prompt.HANDOFF_TEXT, prompt.HANDOFF_AFTER_FALLBACKS_TEXT,
                 prompt.FRUSTRATED_OFFER, prompt.FRUSTRATED_TEXT,
                 prompt.FRUSTRATED_HANDOFF_TEXT):
        lowered = text.lower()
        assert "everything" not in lowered and "anything" not in lowered, text


@pytest.mark.parametrize("signals", [None, CALM])
def test_calm_or_unread_signals_change_nothing(policy: Policy, signals: Signals | None) -> None:
    faq = policy.decide("how long is shipping", FAQ_HITS, (), TH, signals)
    assert faq.route == Route.FAQ and faq.text == SHIPPING.answer and faq.priority == "normal"
    assert (faq.before, faq.after) == ("", "")
    fallback = policy.decide("weather in bend?", WEAK_HITS, (), TH, signals)
    assert fallback.route == Route.FALLBACK and fallback.text == prompt.FALLBACK_TEXT
    assert "frustrat" not in fallback.reason


def test_a_frustrated_customer_gets_the_answer_between_an_ack_and_an_offer(
        policy: Policy) -> None:
    d = policy.decide("how long is shipping", FAQ_HITS, (), TH, FRUSTRATED)
    assert d.route == Route.FAQ and d.sources[0].document is SHIPPING
    assert d.text == (f"{prompt.FRUSTRATED_ACK} {SHIPPING.answer}\n\n"
                      f"{prompt.FRUSTRATED_OFFER}")
    assert d.priority == "normal" and d.signals is FRUSTRATED
    assert "customer frustrated: frustration 0.90 (says_repeated, anger)" in d.reason


def test_generated_answers_are_framed_when_finished(policy: Policy) -> None:
    decision = policy.decide("when will it come", [hit(SHIPPING, 0.7)], (), TH, FRUSTRATED)
    assert decision.route == Route.GENERATED and decision.text is None
    assert decision.before == prompt.FRUSTRATED_ACK + " "
    assert decision.after == "\n\n" + prompt.FRUSTRATED_OFFER
    final = policy.finish_generated(decision, "It takes 3-5 business days [1].", 1)
    assert final.route == Route.GENERATED
    assert final.text == decision.before + "It takes 3-5 business days [1]." + decision.after
    assert [s.document for s in final.sources] == [SHIPPING]  # citations still resolve


@pytest.mark.parametrize("rejected", [False, True])
def test_a_frustrated_customer_the_bot_cannot_help_is_offered_a_person(
        policy: Policy, rejected: bool) -> None:
    if rejected:  # generation found nothing supported
        decision = policy.decide("when will it come", [hit(SHIPPING, 0.7)], (), TH, FRUSTRATED)
        d = policy.finish_generated(decision, "", 0, note="nothing supported")
    else:
        d = policy.decide("weather in bend?", WEAK_HITS, (), TH, FRUSTRATED)
    assert d.route == Route.FALLBACK and d.text == prompt.FRUSTRATED_TEXT
    assert not SENDS_AWAY.search(d.text) and "customer frustrated" in d.reason


def test_a_strongly_frustrated_customer_is_handed_over_with_high_priority(
        policy: Policy) -> None:
    # Even when the bot could answer: this customer needs a person now.
    d = policy.decide("how long is shipping", FAQ_HITS, (), TH, STRONG)
    assert d.route == Route.HANDOFF and d.priority == "high"
    assert d.text == prompt.FRUSTRATED_HANDOFF_TEXT
    assert d.reason == "customer strongly frustrated: frustration 0.99 (threat, anger)"


@pytest.mark.parametrize(("signals", "priority", "text"), [
    (None, "normal", prompt.HANDOFF_TEXT),
    (CALM, "normal", prompt.HANDOFF_TEXT),
    (FRUSTRATED, "high", prompt.FRUSTRATED_HANDOFF_TEXT),
    (STRONG, "high", prompt.FRUSTRATED_HANDOFF_TEXT),
])
def test_an_explicit_request_for_a_human_still_hands_over_at_once(
        policy: Policy, signals: Signals | None, priority: str, text: str) -> None:
    d = policy.decide("can I talk to a human", FAQ_HITS, (), TH, signals)
    assert d.route == Route.HANDOFF and d.priority == priority and d.text == text
    assert d.reason.startswith("customer asked for a human")
    assert ("frustration" in d.reason) == (priority == "high")


def test_yes_to_the_offer_after_an_answer_hands_over(policy: Policy) -> None:
    framed = f"{prompt.FRUSTRATED_ACK} {SHIPPING.answer}\n\n{prompt.FRUSTRATED_OFFER}"
    history = (Turn("customer", "ugh, how long is shipping"), Turn("agent", framed, "faq"))
    assert offered_human(history)
    d = policy.decide("yes please", FAQ_HITS, history, TH, CALM)
    assert d.route == Route.HANDOFF and d.priority == "high"
    assert d.reason.startswith("customer accepted the offer of a human")
    # After a plain answer "yes" is just a word: no offer was made.
    plain = (Turn("customer", "how long is shipping"), Turn("agent", SHIPPING.answer, "faq"))
    assert not offered_human(plain)
    assert policy.decide("yes", FAQ_HITS, plain, TH, CALM).route != Route.HANDOFF


@pytest.mark.parametrize(("offer", "priority"), [
    (prompt.FRUSTRATED_TEXT, "high"), (prompt.FALLBACK_TEXT, "normal")])
def test_yes_to_a_fallback_hands_over_with_the_offer_s_priority(
        policy: Policy, offer: str, priority: str) -> None:
    history = (Turn("customer", "weather in bend?"), Turn("agent", offer, "fallback"))
    d = policy.decide("yes", WEAK_HITS, history, TH, CALM)
    assert d.route == Route.HANDOFF and d.priority == priority


def test_too_many_fallbacks_hand_over_with_high_priority_when_frustrated(
        policy: Policy) -> None:
    fallback = Turn("agent", prompt.FALLBACK_TEXT, "fallback")
    history = (Turn("customer", "a"), fallback, Turn("customer", "b"), fallback)
    calm = policy.decide("weather in bend?", WEAK_HITS, history, TH, CALM)
    assert calm.route == Route.HANDOFF and calm.priority == "normal"
    assert calm.text == prompt.HANDOFF_AFTER_FALLBACKS_TEXT
    upset = policy.decide("weather in bend?", WEAK_HITS, history, TH, FRUSTRATED)
    assert upset.route == Route.HANDOFF and upset.priority == "high"
    assert upset.text == prompt.FRUSTRATED_HANDOFF_TEXT
    assert "fallbacks in a row" in upset.reason and "customer frustrated" in upset.reason
