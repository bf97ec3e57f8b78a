"""The support gate's meaning pass: the shipped verifier rejects what the lexical check lets
through (a negation, a dropped condition, a claim only the question makes) and accepts faithful
sentences; the streamed and whole-text gates agree with it; a stand-in verifier shows what it
is given (answers only, never the question, only claims the lexical pass let through)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from standin_stages import SHIPPING, StandInGenerator, StandInRetriever, doc, hit

from chatbot.answering.grounding import SentenceGate, evidence, support_check
from chatbot.answering.pipeline import build_pipeline
from chatbot.answering.verify import (
    SHIPPED_DIR,
    Verifier,
    make_verifier,
    passages,
    resolve_weights_dir,
)
from chatbot.config import Settings
from chatbot.errors import ConfigError
from chatbot.types import Hit, Route

# The knowledge base's signature FAQ (ship-012), as the customer's case in issue 9 met it.
SIGNATURE = doc("ship-012", "Does someone need to sign for my package?",
                "Orders over $500 require a signature on delivery; other orders are usually left "
                "at your door or mailbox. If you'll be out, use the carrier's tracking link to "
                "reschedule, redirect to a pickup point, or sign for release where available.")
SIGNATURE_QUESTION = "do i need to sign for my delivery"


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    settings = Settings(_env_file=None, torch_threads=1)  # type: ignore[call-arg]
    shipped = make_verifier(settings)
    assert shipped is not None and shipped.weights_dir == SHIPPED_DIR
    return shipped


def _stream(text: str, sources: list[Hit], chunk: int, verifier: object,
            question: str = "") -> SentenceGate:
    gate = SentenceGate(sources, 0.28, question, verifier)  # type: ignore[arg-type]
    shown: list[str] = []
    for i in range(0, len(text), chunk):
        shown += gate.feed(text[i:i + chunk])
    shown += gate.finish()
    assert "".join(shown) == gate.text
    return gate


# --- the shipped verifier ------------------------------------------------------------------------


def test_the_signature_answer_from_the_issue_is_rejected(verifier: Verifier) -> None:
    sources = [hit(SIGNATURE, 0.8)]
    wrong = "You need to sign for your order, but it's usually left at your door or mailbox."
    # The lexical pass alone lets it through: every content word is in the sources.
    assert support_check(wrong, sources, 0.28, SIGNATURE_QUESTION).supported
    check = support_check(wrong, sources, 0.28, SIGNATURE_QUESTION, verifier)
    assert not check.supported and check.unsupported == (wrong,) and check.lexical == 1.0
    right = "Orders over $500 need a signature on delivery [1]."
    assert support_check(right, sources, 0.28, SIGNATURE_QUESTION, verifier).supported


def test_a_negated_claim_is_rejected_and_a_faithful_one_passes(verifier: Verifier) -> None:
    source = [SHIPPING.answer]
    assert verifier.supports("Standard shipping takes 3-5 business days within the US.", source)
    assert verifier.supports("Within the US, standard shipping normally takes 3-5 business "
                             "days.", source)
    assert not verifier.supports("Standard shipping doesn't take 3-5 business days within "
                                 "the US.", source)
    assert not verifier.supports("Standard shipping takes 3-5 business days within Canada.",
                                 source)


def test_a_sentence_supported_only_by_the_question_fails(verifier: Verifier) -> None:
    sources = [hit(SHIPPING, 0.8)]
    question = "do you rent kayaks for free on weekends"
    claim = "Kayak rentals are free on weekends."
    # Lexically the question's words count (restating it is not a claim); the verifier reads
    # the sources' answers only, so the claim fails there.
    assert support_check(claim, sources, 0.28, question).supported
    assert not support_check(claim, sources, 0.28, question, verifier).supported


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_streamed_and_whole_text_agree_with_the_verifier(verifier: Verifier, chunk: int) -> None:
    sources = [hit(SIGNATURE, 0.8), hit(SHIPPING, 0.6, 2)]
    text = ("Standard shipping takes 3-5 business days within the US [2]. Orders over $500 "
            "don't require a signature on delivery [1]. Other orders are left at your door.")
    check = support_check(text, sources, 0.28, SIGNATURE_QUESTION, verifier)
    gate = _stream(text, sources, chunk, verifier, SIGNATURE_QUESTION)
    assert gate.supported is check.supported is False
    assert gate.rejected == check.unsupported[0] == (
        "Orders over $500 don't require a signature on delivery [1].")
    assert gate.text == "Standard shipping takes 3-5 business days within the US [2]."


def test_a_long_source_is_read_in_passages_of_whole_sentences() -> None:
    text = " ".join(f"Sentence number {i} has exactly seven words." for i in range(60))
    pieces = passages(text, max_words=50)
    assert len(pieces) == 9 and all(len(p.split()) <= 50 for p in pieces)
    assert " ".join(pieces) == text
    assert passages("One short answer.") == ["One short answer."]


# --- the wiring, with a stand-in verifier ------------------------------------------------------


class RecordingVerifier:
    """Rejects sentences containing ``reject``; records what it was asked."""

    def __init__(self, reject: str = "never") -> None:
        self.reject = reject
        self.asked: list[tuple[str, tuple[str, ...]]] = []
        self.loaded = True

    def supports(self, sentence: str, sources: Sequence[str]) -> bool:
        self.asked.append((sentence, tuple(sources)))
        return self.reject not in sentence


def test_the_verifier_reads_answers_only_and_only_claims_the_lexical_pass_let_through() -> None:
    sources = [hit(SHIPPING, 0.8), hit(SIGNATURE, 0.5, 2)]
    assert evidence(sources) == [SHIPPING.answer, SIGNATURE.answer]
    recording = RecordingVerifier()
    text = ("Happy to help! Standard shipping takes 3-5 business days [1]. Kayak rentals are "
            "free on weekends.")
    check = support_check(text, sources, 0.5, "how long does shipping take", recording)
    # Courtesy makes no claim and the kayak sentence fails lexically: neither reaches it.
    assert recording.asked == [("Standard shipping takes 3-5 business days.",
                                (SHIPPING.answer, SIGNATURE.answer))]
    assert all("how long" not in s for _, texts in recording.asked for s in texts)
    assert check.lexical == 0.5 and check.groundedness == 0.5


def test_the_pipeline_cuts_at_the_first_sentence_the_verifier_rejects(settings: Settings) -> None:
    thresholds = {"answer": 0.6, "faq": 0.85, "support": 0.5, "source": "test"}
    retriever = StandInRetriever({"when will my parcel come": [hit(SHIPPING, 0.72)]}, thresholds)
    text = ("Standard shipping takes 3-5 business days [1]. Standard shipping never takes 3-5 "
            "business days [1].")
    recording = RecordingVerifier(reject="never")
    pipeline = build_pipeline(settings, retriever=retriever, generator=StandInGenerator(text),
                              verifier=recording)
    reply = pipeline.answer("when will my parcel come")
    assert reply.route == Route.GENERATED
    assert reply.text == "Standard shipping takes 3-5 business days [1]."
    assert "never" in reply.reason and len(recording.asked) == 2
    everything = StandInGenerator("Standard shipping never takes 3-5 business days [1].")
    pipeline = build_pipeline(settings, retriever=retriever, generator=everything,
                              verifier=RecordingVerifier(reject="never"))
    assert pipeline.answer("when will my parcel come").route == Route.FALLBACK


def test_the_verifier_setting(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    off = settings.model_copy(update={"verifier": "off"})
    assert make_verifier(off) is None
    assert build_pipeline(off, retriever=StandInRetriever(),
                          generator=StandInGenerator("x")).verifier is None
    with pytest.raises(ConfigError, match="chatbot finetune verifier"):
        resolve_weights_dir(str(tmp_path))
    assert resolve_weights_dir("shipped") == SHIPPED_DIR
