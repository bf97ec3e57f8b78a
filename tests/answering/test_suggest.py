"""Suggested questions on the tiny knowledge base: learnt next questions, exclusions, the back-off
to neighbours and popularity, opening questions, limits and determinism (the real embedder)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from chatbot.answering.suggest import Suggester, dialogue_turns, map_dialogues
from chatbot.config import Settings
from chatbot.errors import ConfigError, IngestError
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.search import Retriever
from chatbot.types import Document, Suggestion

FAQS = ["ship-001", "ship-002", "ret-001", "pay-001", "acc-001"]  # the tiny base, in file order


def ids(suggestions: list[Suggestion]) -> list[str]:
    return [s.faq_id for s in suggestions]


def faq_only(settings: Settings) -> list[Document]:
    return [d for d in load_knowledge_base(settings.knowledge_base) if d.kind == "faq"]


def make(settings: Settings, embedder: Embedder, logged: Iterable[Sequence[str]] = (),
         **kwargs: Any) -> Suggester:
    return Suggester(settings, embedder=embedder, documents=faq_only(settings),
                     logged_sequences=logged, **kwargs)


def write_dialogues(kb: Path, dialogues: list[list[str]]) -> None:
    """Customer turns only; each gets a short agent reply, as in the knowledge base format."""
    lines = []
    for n, customer in enumerate(dialogues, start=1):
        turns = [t for text in customer
                 for t in ({"role": "customer", "text": text}, {"role": "agent", "text": "Sure."})]
        lines.append(json.dumps({"id": f"extra-{n}", "topic": "orders", "turns": turns}))
    (kb / "more_dialogues.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_an_observed_next_question_ranks_first(settings: Settings, embedder: Embedder) -> None:
    # acc-001 is ship-001's least similar FAQ: only the statistics can put it first.
    suggester = make(settings, embedder, logged=[["ship-001", "acc-001"]])
    assert ids(suggester.suggest("ship-001"))[0] == "acc-001"
    assert ids(make(settings, embedder).suggest("ship-001"))[0] != "acc-001"


def test_more_often_observed_next_questions_rank_higher(settings: Settings,
                                                        embedder: Embedder) -> None:
    logged = [["ret-001", "pay-001"]] * 3 + [["ret-001", "acc-001"]]
    assert ids(make(settings, embedder, logged=logged).suggest("ret-001", k=2)) == [
        "pay-001", "acc-001"]


def test_faqs_answered_in_the_conversation_are_never_suggested(
    settings: Settings, embedder: Embedder
) -> None:
    suggester = make(settings, embedder, logged=[["ship-001", "acc-001"]])
    found = ids(suggester.suggest("ship-001", history_faq_ids=["acc-001", "ship-002"], k=5))
    assert found == [f for f in found if f not in {"ship-001", "acc-001", "ship-002"}]
    assert sorted(found) == ["pay-001", "ret-001"]


def test_without_statistics_the_nearest_faqs_come_first(settings: Settings,
                                                         embedder: Embedder) -> None:
    suggester = make(settings, embedder)
    assert suggester.sequences == []
    assert ids(suggester.suggest("ship-001", k=1)) == ["ship-002"]
    assert ids(suggester.suggest("ship-002", k=1)) == ["ship-001"]
    assert ids(suggester.suggest("ship-001")) == ids(suggester.neighbours("ship-001"))


def test_an_unknown_faq_gets_the_most_asked_questions(settings: Settings,
                                                      embedder: Embedder) -> None:
    logged = [["pay-001"], ["acc-001", "pay-001"], ["acc-001", "pay-001"], ["ret-001"]]
    suggester = make(settings, embedder, logged=logged)
    assert ids(suggester.suggest("dlg-0001#0")) == ["pay-001", "acc-001", "ret-001"]
    assert ids(suggester.suggest(None, history_faq_ids=["pay-001"], k=2)) == [
        "acc-001", "ret-001"]


def test_logged_ids_missing_from_the_knowledge_base_are_ignored(
    settings: Settings, embedder: Embedder
) -> None:
    suggester = make(settings, embedder, logged=iter([["ship-001", "gone-007", "acc-001"]]))
    assert suggester.sequences == [("ship-001", "acc-001")]
    assert ids(suggester.suggest("ship-001"))[0] == "acc-001"


def test_dialogues_are_mapped_to_faq_sequences_and_learnt(
    settings: Settings, embedder: Embedder, tiny_kb: Path
) -> None:
    write_dialogues(tiny_kb, [
        ["how long will delivery take", "PC-104233", "ok and how can i return an item"],
        ["hello", "thanks"],
    ])
    documents = load_knowledge_base(tiny_kb)
    assert [t.record_id for t in dialogue_turns(documents)["extra-1"]] == [
        "extra-1#0", "extra-1#2", "extra-1#4"]
    retriever = Retriever.from_documents([d for d in documents if d.kind == "faq"], settings,
                                         embedder)
    mapped = map_dialogues(documents, retriever)
    assert mapped["extra-1"] == ["ship-001", None, "ret-001"]  # the order number maps to nothing
    assert mapped["extra-2"] == [None, None]

    suggester = Suggester(settings, embedder=embedder)  # reads the knowledge base itself
    assert ("ship-001", "ret-001") in suggester.sequences
    assert ids(suggester.suggest("ship-001"))[0] == "ret-001"


def test_opening_uses_recent_counts_then_knowledge_base_popularity(
    settings: Settings, embedder: Embedder
) -> None:
    # pay-001 opens two conversations, acc-001 one; ret-001 is asked but never first.
    logged = [["pay-001", "ret-001"], ["pay-001"], ["acc-001", "ret-001"]]
    suggester = make(settings, embedder, logged=logged)
    assert ids(suggester.opening()) == ["pay-001", "acc-001", "ret-001"]
    assert ids(suggester.opening(recent_counts={"ship-002": 5, "ret-001": 9})) == [
        "ret-001", "ship-002", "pay-001"]
    # Zero counts and ids the knowledge base lacks change nothing.
    assert ids(suggester.opening(recent_counts={"gone-001": 50, "acc-001": 0})) == ids(
        suggester.opening())
    # Nothing learnt, nothing recent: the knowledge base's order.
    assert ids(make(settings, embedder).opening(k=2)) == FAQS[:2]


def test_at_most_k_and_always_whole_suggestions(settings: Settings, embedder: Embedder) -> None:
    suggester = make(settings, embedder, logged=[["ship-001", "acc-001"]])
    assert len(suggester.suggest("ship-001", k=2)) == 2
    assert len(suggester.suggest("ship-001", k=10)) == len(FAQS) - 1
    assert suggester.suggest("ship-001", k=0) == []
    assert len(suggester.opening(k=10)) == len(FAQS)
    first = suggester.suggest("ship-001", k=1)[0]
    assert first == Suggestion("acc-001", "How do I reset my password?")


def test_rankings_are_deterministic(settings: Settings, embedder: Embedder) -> None:
    logged = [["ship-001", "ret-001"], ["ship-001", "pay-001"], ["acc-001"]]
    a, b = make(settings, embedder, logged=logged), make(settings, embedder, logged=logged)
    for faq in FAQS:
        assert a.suggest(faq, k=4) == b.suggest(faq, k=4) == a.suggest(faq, k=4)
    assert a.opening(k=5) == b.opening(k=5)
    # A tie in P(next | ship-001) breaks by knowledge-base order.
    assert ids(a.suggest("ship-001", k=2)) == ["ret-001", "pay-001"]


def test_scores_are_a_distribution_over_the_faqs(settings: Settings, embedder: Embedder) -> None:
    scores = make(settings, embedder, logged=[["ship-001", "acc-001"]]).scores("ship-001")
    assert set(scores) == set(FAQS)
    assert sum(scores.values()) == pytest.approx(1.0)
    assert max(scores, key=scores.__getitem__) == "acc-001"


def test_the_constructor_only_stores_settings(settings: Settings, tmp_path: Path) -> None:
    missing = settings.model_copy(update={"knowledge_base": tmp_path / "nowhere"})
    suggester = Suggester(missing)  # no model, no files touched yet
    with pytest.raises(IngestError, match="knowledge base not found"):
        suggester.suggest("ship-001")


@pytest.mark.parametrize("kwargs", [{"smoothing": 0}, {"popularity_weight": 1.5},
                                    {"neighbours": 0}, {"temperature": 0}])
def test_bad_constants_are_refused(settings: Settings, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Suggester(settings, **kwargs)  # type: ignore[arg-type]
