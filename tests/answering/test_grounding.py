"""The support check: one judgement, the same verdict streamed (``SentenceGate``) or whole
(``support_check``), and the cases it must catch."""

from __future__ import annotations

import pytest
from standin_stages import DIALOGUE, RETURNS, SHIPPING, hit

from chatbot.answering.grounding import (
    SentenceGate,
    sentence_coverage,
    sentences,
    source_vocabulary,
    support_check,
)
from chatbot.types import Hit

THREE = [hit(SHIPPING, 0.8), hit(RETURNS, 0.6, 2), hit(DIALOGUE, 0.5, 3)]


def _stream(text: str, sources: list[Hit], chunk: int, threshold: float = 0.5) -> SentenceGate:
    """The gate fed ``text`` in pieces of ``chunk`` characters, then finished."""
    gate = SentenceGate(sources, threshold)
    shown: list[str] = []
    for i in range(0, len(text), chunk):
        shown += gate.feed(text[i:i + chunk])
    shown += gate.finish()
    assert "".join(shown) == gate.text  # what streamed is exactly the final text
    return gate


# --- streamed and whole text agree ------------------------------------------------------------

SAME_VERDICT = {
    "invented citation": (
        "Standard shipping takes 3-5 business days within the US [4].", False),
    "invented citation after the period": (
        "Standard shipping takes 3-5 business days within the US. [4]", False),
    "invented citation in the second sentence": (
        "Standard shipping takes 3-5 business days [1]. Start a return from Orders in your "
        "account within 60 days [4].", False),
    "echo of the prompt's source blocks": (
        "[1] Q: How long does standard shipping take?\n"
        "A: Standard shipping takes 3-5 business days within the US.", False),
    "supported, valid citations": (
        "Happy to help! Standard shipping takes 3-5 business days within the US [1]. Start a "
        "return from Orders in your account within 60 days [2].", True),
    "supported, citations after the periods": (
        "Standard shipping takes 3-5 business days. [1] Late parcels are traced by the carrier "
        "after 5 business days. [3]", True),
    "a number the sources lack": (
        "Standard shipping takes 7-9 business days within the US [1].", False),
    "courtesy only": ("Happy to help! Thanks for your question.", False),
}


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
@pytest.mark.parametrize("case", list(SAME_VERDICT))
def test_the_streaming_gate_and_the_whole_text_check_agree(case: str, chunk: int) -> None:
    text, expected = SAME_VERDICT[case]
    check = support_check(text, THREE, 0.5)
    gate = _stream(text, THREE, chunk)
    assert check.supported is expected
    assert gate.supported is expected
    # The gate stops at the first sentence the whole-text check finds unsupported.
    assert gate.rejected == (check.unsupported[0] if check.unsupported else None)
    if expected:
        assert gate.text == text and gate.claims == check.sentences


def test_an_invented_citation_never_reaches_the_customer_while_streaming() -> None:
    # The gate used to judge sentences without their [n] markers, so "[4]" streamed through.
    text = ("Standard shipping takes 3-5 business days [1]. Start a return from Orders in your "
            "account within 60 days [4]. Late parcels are traced by the carrier.")
    for chunk in (1, 2, 5, len(text)):
        gate = _stream(text, THREE, chunk)
        assert gate.text == "Standard shipping takes 3-5 business days [1]."
        assert gate.rejected == "Start a return from Orders in your account within 60 days [4]."


def test_trailing_citations_stay_with_their_sentence_however_the_text_is_chunked() -> None:
    text = "Standard shipping takes 3-5 business days. [1] Kayak rentals are free on weekends."
    assert sentences(text) == ["Standard shipping takes 3-5 business days. [1]",
                               "Kayak rentals are free on weekends."]
    for chunk in (1, 2, 3, 4, len(text)):
        gate = _stream(text, THREE, chunk)
        assert gate.text == "Standard shipping takes 3-5 business days. [1]"
        assert gate.rejected == "Kayak rentals are free on weekends."


def test_no_released_piece_ends_in_whitespace() -> None:
    # Spaces before a line break, and after the last sentence, stay out of the pieces: a piece
    # ends where its sentence does, and the whitespace after it starts the next piece.
    text = ("Standard shipping takes 3-5 business days  \n"
            "Start a return from Orders in your account within 60 days [2]. \t\n\n"
            "Late parcels are traced by the carrier [3].  Thanks!   ")
    assert support_check(text, THREE, 0.5).supported
    for chunk in (1, 2, 5, len(text)):
        gate = SentenceGate(THREE, 0.5)
        pieces = [p for i in range(0, len(text), chunk) for p in gate.feed(text[i:i + chunk])]
        pieces += gate.finish()
        assert len(pieces) == 4 and all(p == p.rstrip() for p in pieces), pieces
        assert "".join(pieces) == gate.text == text.rstrip() and gate.claims == 3


def test_sentence_coverage_judges_words_without_markers_but_checks_the_markers() -> None:
    vocabulary = source_vocabulary(THREE)
    assert sentence_coverage("Standard shipping takes 3-5 business days [1].", vocabulary) == 1.0
    assert sentence_coverage("Standard shipping takes 3-5 business days [9].", vocabulary) == 0.0
    assert sentence_coverage("Thanks [2]!", vocabulary) is None
    assert sentence_coverage("Thanks [0]!", vocabulary) == 0.0


# --- the support check (moved from test_policy.py) ---------------------------------------------


def test_support_check_accepts_sentences_from_the_sources() -> None:
    sources = [hit(SHIPPING, 0.8)]
    ok = support_check("Standard shipping takes 3-5 business days [1].", sources, 0.5)
    assert ok.supported and ok.groundedness == 1.0 and ok.cited == (1,)


def test_support_check_rejects_a_wrong_number_and_an_invented_claim() -> None:
    sources = [hit(SHIPPING, 0.8)]
    assert not support_check("Standard shipping takes 7-9 business days.", sources, 0.5).supported
    mixed = support_check("Standard shipping takes 3-5 business days. We also sell fishing "
                          "licences and kayak rentals.", sources, 0.5)
    assert not mixed.supported and mixed.groundedness == 0.5 and mixed.sentences == 2


def test_support_check_rejects_an_echo_of_the_prompt_and_citations_of_missing_sources() -> None:
    sources = [hit(SHIPPING, 0.8), hit(RETURNS, 0.6, 2)]
    # Every word is in the sources, yet it answers nothing: the model copied a source block.
    echo = "[1] Q: How long does standard shipping take?\nA: Standard shipping takes 3-5 days."
    assert not support_check(echo, sources, 0.5).supported
    invented = "Standard shipping takes 3-5 business days within the US [4]."
    assert not support_check(invented, sources, 0.5).supported
    assert support_check(invented.replace("[4]", "[1]"), sources, 0.5).supported
    gate = SentenceGate(sources, 0.5)
    gate.feed(echo + " ")
    gate.finish()
    assert gate.closed and gate.text == ""


def test_sentence_gate_releases_supported_sentences_and_cuts_at_the_first_unsupported() -> None:
    gate = SentenceGate([hit(SHIPPING, 0.8)], 0.5)
    out: list[str] = []
    text = ("Happy to help! Standard shipping takes 3-5 business days [1]. Kayak rentals are "
            "free on weekends. Standard shipping is within the US.")
    for i in range(0, len(text), 7):  # stream in arbitrary chunks
        out += gate.feed(text[i:i + 7])
    out += gate.finish()
    assert "".join(out) == gate.text
    assert gate.text == "Happy to help! Standard shipping takes 3-5 business days [1]."
    assert gate.claims == 1 and gate.rejected == "Kayak rentals are free on weekends."


def test_sentence_gate_holds_back_text_without_a_claim() -> None:
    gate = SentenceGate([hit(SHIPPING, 0.8)], 0.5)
    assert gate.feed("Sure thing! ") == []
    assert gate.finish() == [] and gate.claims == 0 and gate.text == ""
