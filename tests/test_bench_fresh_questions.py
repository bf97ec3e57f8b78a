"""bench/fresh_questions.py: the fresh questions of the uncached load benchmark are distinct as
the query cache sees them, the same for the same seed, made from the knowledge base's texts,
and each rewrite stays a readable variant of its source."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from chatbot.retrieval.embed import query_key
from chatbot.types import Document, Turn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from fresh_questions import (  # noqa: E402  (bench/ is not a package)
    fresh_questions,
    iter_fresh_questions,
    rewrite,
    sources,
    typo,
)

TEXTS = [
    "Where is my order?",
    "How do I return an item?",
    "Do you ship to Canada?",
    "Which payment methods do you accept?",
    "Can I change the delivery address after ordering?",
]


def test_every_question_is_new_to_the_query_cache() -> None:
    questions = fresh_questions(TEXTS, 300, seed=3, max_rounds=100)
    assert len(questions) == 300
    keys = [query_key(q) for q in questions]
    assert len(set(keys)) == len(keys)


def test_same_seed_same_questions_other_seed_other_order() -> None:
    assert fresh_questions(TEXTS, 120, seed=7) == fresh_questions(TEXTS, 120, seed=7)
    assert fresh_questions(TEXTS, 120, seed=7) != fresh_questions(TEXTS, 120, seed=8)
    # the iterator yields the same questions as the list, in the same order
    iterator = iter_fresh_questions(TEXTS, seed=7)
    assert [next(iterator) for _ in range(120)] == fresh_questions(TEXTS, 120, seed=7)


def test_first_round_is_every_source_once_then_variants() -> None:
    questions = fresh_questions(TEXTS, 40, seed=1)
    assert sorted(questions[: len(TEXTS)]) == sorted(TEXTS)
    # later rounds: consecutive questions come from different sources
    assert all(q not in TEXTS for q in questions[len(TEXTS):])


def test_stops_when_the_variants_run_out() -> None:
    questions = fresh_questions(["where is my order"], 1000, seed=0, max_rounds=5)
    assert 1 <= len(questions) <= 5
    assert len({query_key(q) for q in questions}) == len(questions)


def test_a_rewrite_keeps_its_source_readable() -> None:
    source = "Can I change the delivery address after ordering?"
    for variant in range(1, 60):
        question = rewrite(source, variant, random.Random(variant))
        words = {w.strip("?.!,:").lower() for w in question.split()}
        original = {w.strip("?.!,:").lower() for w in source.split()}
        # at most one word carries a typo; the rest of the source is there as written
        assert len(original - words) <= 1, question


@pytest.mark.parametrize("seed", range(30))
def test_typo_changes_one_long_word_by_one_edit_keeping_its_ends(seed: int) -> None:
    text = "please cancel my order"
    changed = typo(text, random.Random(seed))
    before, after = text.split(), changed.split()
    assert len(before) == len(after)
    differing = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert len(differing) <= 1  # a swap of two equal letters leaves the word unchanged
    for b, a in differing:
        assert len(b) >= 4 and abs(len(b) - len(a)) <= 1
        assert (a[0], a[-1]) == (b[0], b[-1])


def test_typo_leaves_a_text_without_long_words_alone() -> None:
    assert typo("is it ok?", random.Random(0)) == "is it ok?"


def test_sources_are_faq_phrasings_then_dialogue_turns_each_once() -> None:
    faq = Document(id="a", record_id="ord-1", kind="faq", question="Where is my order?",
                   answer="See My Account.", alternatives=("where is my stuff", "order status"))
    twin = Document(id="b", record_id="ord-2", kind="faq", question="order status",
                    answer="Same.", alternatives=())
    turn = Document(id="c", record_id="dlg-1#0", kind="dialogue",
                    question="hi, my parcel never came", answer="Sorry to hear that.",
                    context=(Turn("customer", "hello"),))
    assert sources([turn, faq, twin]) == [
        "Where is my order?", "where is my stuff", "order status", "hi, my parcel never came"]
