"""The support check under random answers and sources (hypothesis): ``support_check`` (whole
text) and ``SentenceGate`` (streamed in random pieces) never raise and always reach the same
verdict, stopping at the same sentence; what streamed is exactly the gate's final text."""

from __future__ import annotations

from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from standin_stages import DIALOGUE, RETURNS, SHIPPING, doc, hit

from chatbot.answering.grounding import SentenceGate, support_check
from chatbot.types import Hit

FUZZ = fuzz_settings(300)
SOURCE_WORDS = sorted({w.strip(".?!,").lower() for d in (SHIPPING, RETURNS, DIALOGUE)
                       for w in f"{d.question} {d.answer}".split()})
OTHER_WORDS = ["kayak", "rentals", "weekends", "free", "licences", "refund", "Happy", "help",
               "thanks", "7-9", "3-5", "60", "100%", "$20", "é", "日本"]
# Pieces an answer is made of: words (from the sources and not), numbers, citations of given
# and missing sources, sentence ends, line breaks, echoes of the prompt's "Q:"/"A:" blocks.
def pieces(characters: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(SOURCE_WORDS), st.sampled_from(OTHER_WORDS),
        st.integers(0, 9).map(lambda n: f"[{n}]"), st.integers(0, 999).map(str),
        st.sampled_from([".", "!", "?", ". ", "! ", "? ", "\n", "\n\n", " ", "  ", "Q:", "A:",
                         "[", "]", "[1", ",", "...", "\t"]),
        st.text(characters, max_size=4),
    )


PIECES = pieces(st.characters(exclude_categories=()))  # any code point, surrogates too
# Knowledge-base text: ingest rejects control characters and surrogates.
SOURCE_PIECES = pieces(st.characters(exclude_categories=("Cc", "Cs")))
ANSWERS = st.one_of(
    st.lists(PIECES, max_size=40).map(lambda parts: " ".join(parts)),
    st.lists(PIECES, max_size=40).map("".join),
    st.text(st.characters(exclude_categories=()), max_size=120),
)
GIVEN_SOURCES = st.lists(st.sampled_from([SHIPPING, RETURNS, DIALOGUE]), max_size=3)
RANDOM_SOURCES = st.lists(
    st.tuples(st.lists(SOURCE_PIECES, max_size=12).map(" ".join),
              st.lists(SOURCE_PIECES, max_size=20).map(" ".join)), max_size=3,
).map(lambda pairs: [doc(f"r{i}", q, a) for i, (q, a) in enumerate(pairs)])


def streamed(text: str, sources: list[Hit], threshold: float, question: str,
             cuts: list[int]) -> SentenceGate:
    """The gate fed ``text`` cut at ``cuts``, then finished; checks that the pieces it let
    through join to its final text."""
    gate = SentenceGate(sources, threshold, question)
    shown: list[str] = []
    start = 0
    for cut in [*sorted(c % (len(text) + 1) for c in cuts), len(text)]:
        shown += gate.feed(text[start:cut])
        start = max(start, cut)
    shown += gate.finish()
    assert "".join(shown) == gate.text
    return gate


@FUZZ
@given(text=ANSWERS, documents=st.one_of(GIVEN_SOURCES, RANDOM_SOURCES),
       threshold=st.floats(0.0, 1.0), question=st.one_of(st.just(""), ANSWERS),
       cuts=st.lists(st.integers(0, 500), max_size=12))
def test_the_gate_and_the_whole_text_check_agree_on_any_answer(
        text: str, documents: list, threshold: float, question: str, cuts: list[int]) -> None:
    sources = [hit(d, 0.5, rank) for rank, d in enumerate(documents, start=1)]
    check = support_check(text, sources, threshold, question)
    gate = streamed(text, sources, threshold, question, cuts)
    assert gate.supported is check.supported
    assert gate.rejected == (check.unsupported[0] if check.unsupported else None)
    assert 0.0 <= check.groundedness <= 1.0
    assert all(1 <= n <= len(sources) for n in check.cited)
    if check.supported:
        assert gate.claims == check.sentences
        # Everything was let through (a space before a line break may stay at its end).
        assert gate.text.strip() == text.strip()
