"""Retrieve: hybrid search finds the right document, carries scores and ranks, follows history
and index versions, and refuses an index built with another model."""

from __future__ import annotations

import time

import pytest

from chatbot.config import Settings
from chatbot.errors import IndexNotReadyError
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.index import reindex
from chatbot.retrieval.search import Retriever
from chatbot.types import Turn


@pytest.fixture
def retriever(settings: Settings, embedder: Embedder) -> Retriever:
    reindex(settings, progress=False, embedder=embedder)
    return Retriever(settings, embedder)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("when will my parcel get here", "ship-001"),
        ("can I use paypal", "pay-001"),
        ("i forgot my password", "acc-001"),
        ("the tent zipper broke", "dlg-0002#0"),
    ],
)
def test_paraphrases_find_their_document_first(
    retriever: Retriever, question: str, expected: str
) -> None:
    assert retriever.search(question)[0].document.record_id == expected


def test_hits_carry_ranks_scores_sources_and_the_matched_phrasing(retriever: Retriever) -> None:
    hits = retriever.search("how long is delivery", k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = hits[0]
    assert top.matched == "how long is delivery"
    assert top.dense_score == pytest.approx(1.0, abs=1e-3)
    assert top.keyword_score is not None and top.keyword_rank == 1 and top.dense_rank == 1
    assert top.document.source == "faq.csv:2"
    assert all(h.dense_score is not None for h in hits)


def test_keyword_only_mode_and_dense_only_mode(retriever: Retriever) -> None:
    keyword = retriever.search("paypal", mode="keyword")
    assert keyword[0].document.record_id == "pay-001"
    assert all(h.keyword_score and h.keyword_score > 0 for h in keyword)
    dense = retriever.search("paypal", mode="dense")
    assert dense[0].score == dense[0].dense_score


def test_a_keyword_only_hit_still_gets_its_true_cosine(
    settings: Settings, embedder: Embedder
) -> None:
    retriever = Retriever.from_documents(
        load_knowledge_base(settings.knowledge_base),
        settings.model_copy(update={"candidates": 1}),
        embedder,
    )
    hits = retriever.search("PC-100 order", k=3)
    assert all(h.dense_score is not None for h in hits)


def test_recent_turns_inform_a_follow_up(retriever: Retriever) -> None:
    history = [Turn("customer", "Do you ship to Canada?"), Turn("agent", "Yes, we do.")]
    plain = retriever.search("how many days?", k=8)
    followed = retriever.search("how many days?", history=history, k=8)

    def score(hits, record_id):  # type: ignore[no-untyped-def]
        return next(h.dense_score for h in hits if h.document.record_id == record_id)

    assert score(followed, "ship-002") > score(plain, "ship-002")


def test_rrf_fusion_ranks_by_reciprocal_ranks(settings: Settings, embedder: Embedder) -> None:
    reindex(settings, progress=False, embedder=embedder)
    rrf = Retriever(settings.model_copy(update={"fusion": "rrf"}), embedder)
    top = rrf.search("can I pay with paypal")[0]
    assert top.document.record_id == "pay-001"
    assert top.score == pytest.approx(2 / (settings.rrf_k + 1))


def test_reload_follows_a_new_active_version(
    retriever: Retriever, settings: Settings, embedder: Embedder
) -> None:
    old = retriever.index_version
    assert retriever.search("gift wrapping")[0].document.record_id != "gift-001"
    faq = settings.knowledge_base / "faq.csv"
    faq.write_text(
        faq.read_text()
        + "gift-001,orders,Do you offer gift wrapping?,Yes for $5.,wrap a present | gift wrap\n"
    )
    new = reindex(settings, progress=False, embedder=embedder)
    retriever.reload()
    assert retriever.index_version == new.version != old
    assert retriever.search("gift wrapping")[0].document.record_id == "gift-001"


def test_missing_index_is_not_ready_with_a_clear_message(
    settings: Settings, embedder: Embedder
) -> None:
    retriever = Retriever(settings, embedder)
    assert not retriever.ready()
    with pytest.raises(IndexNotReadyError, match="run `chatbot reindex`"):
        retriever.search("hello")


def test_index_built_with_another_model_is_refused(settings: Settings, embedder: Embedder) -> None:
    reindex(settings, progress=False, embedder=embedder)
    other = Embedder(settings.model_copy(update={"embedding_model": "some/other-model"}))
    with pytest.raises(
        IndexNotReadyError, match="settings say some/other-model: run `chatbot reindex --full`"
    ):
        Retriever(settings, other).search("hello")


def test_a_topic_change_is_as_confident_as_the_question_alone(retriever: Retriever) -> None:
    history = [Turn("customer", "the zipper on my tent broke"), Turn("agent", "Sorry!")]
    alone = retriever.search("can I pay with paypal")[0]
    after = retriever.search("can I pay with paypal", history=history)[0]
    assert after.document.record_id == alone.document.record_id == "pay-001"
    assert after.dense_score == pytest.approx(alone.dense_score)


def test_a_version_published_elsewhere_is_picked_up_without_reload(
    settings: Settings, embedder: Embedder
) -> None:
    reindex(settings, progress=False, embedder=embedder)
    replica = Retriever(settings.model_copy(update={"index_reload_interval_s": 0.01}), embedder)
    first = replica.search("gift wrapping")[0]
    assert first.document.record_id != "gift-001"
    faq = settings.knowledge_base / "faq.csv"
    faq.write_text(faq.read_text() + "gift-001,orders,Do you gift wrap?,Yes for $5.,gift wrap\n")
    published = reindex(settings, progress=False, embedder=embedder)  # another process, say
    time.sleep(0.02)
    assert replica.search("gift wrapping")[0].document.record_id == "gift-001"
    assert replica.index_version == published.version


class CountingEncoder:
    """A backend stand-in (same interface as the ONNX/PyTorch encoders): the real encoder,
    recording every text it is asked to embed."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.texts: list[str] = []
        self.calls = 0

    @property
    def dimension(self) -> int:
        return int(self.inner.dimension)

    def encode(self, texts, *, batch_size, progress=False):  # type: ignore[no-untyped-def]
        self.calls += 1
        self.texts += list(texts)
        return self.inner.encode(texts, batch_size=batch_size, progress=progress)


CONVERSATION = ["do you ship to canada", "how long does it take", "and can i pay with paypal"]


def _answer_conversation(retriever: Retriever) -> None:
    history: list[Turn] = []
    for message in CONVERSATION:
        retriever.search(message, history=history)
        history += [Turn("customer", message), Turn("agent", "an answer")]


def test_each_customer_turn_is_embedded_once_across_a_conversation(
    settings: Settings, embedder: Embedder
) -> None:
    reindex(settings, progress=False, embedder=embedder)
    counting = CountingEncoder(embedder.encoder)
    retriever = Retriever(settings, Embedder(settings, encoder=counting))
    _answer_conversation(retriever)
    assert sorted(counting.texts) == sorted(CONVERSATION)  # 3 turns, 3 encodings
    assert counting.calls == 3


def test_history_missing_from_the_cache_is_encoded_in_one_call(
    settings: Settings, embedder: Embedder
) -> None:
    """Another replica answered the first turns: they are encoded once, with the question."""
    reindex(settings, progress=False, embedder=embedder)
    counting = CountingEncoder(embedder.encoder)
    retriever = Retriever(settings, Embedder(settings, encoder=counting))
    history = [Turn("customer", CONVERSATION[0]), Turn("agent", "yes"),
               Turn("customer", CONVERSATION[1]), Turn("agent", "5-8 days")]
    hits = retriever.search(CONVERSATION[2], history=history)
    assert counting.calls == 1 and sorted(counting.texts) == sorted(CONVERSATION)
    assert hits[0].document.record_id == "pay-001"
    retriever.search(CONVERSATION[2], history=history)
    assert counting.calls == 1  # all three are cache hits now
