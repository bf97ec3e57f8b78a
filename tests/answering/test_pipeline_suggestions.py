"""The pipeline's suggested questions on the tiny knowledge base (real retriever and embedder,
stand-in generator): none before the statistics are built, then related FAQs after an FAQ
answer, never the answered one nor one the history answered, none after a hand-over, and the
opening questions; a new index version rebuilt once, in the background, from the vectors
already known."""

from __future__ import annotations

import threading
from typing import Any

from standin_stages import CountingEncoder, StandInGenerator

from chatbot.answering.pipeline import Pipeline, build_pipeline
from chatbot.config import Settings
from chatbot.errors import IndexNotReadyError
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.search import Retriever
from chatbot.types import Route, Turn

FAQS = {"ship-001", "ship-002", "ret-001", "pay-001", "acc-001"}


def _pipeline(settings: Settings, embedder: Embedder) -> Pipeline:
    retriever = Retriever.from_documents(load_knowledge_base(settings.knowledge_base), settings,
                                         embedder)
    return build_pipeline(settings, retriever=retriever, generator=StandInGenerator("Sure."))


def test_an_faq_answer_offers_related_questions_once_built(settings: Settings,
                                                           embedder: Embedder) -> None:
    pipeline = _pipeline(settings, embedder)
    before = pipeline.answer("How do I return an item?")
    assert before.route == Route.FAQ and before.suggestions == ()  # not built: none, no wait

    assert pipeline.warm_up_suggestions()
    reply = pipeline.answer("How do I return an item?")
    offered = [s.faq_id for s in reply.suggestions]
    assert reply.route == Route.FAQ and len(offered) == settings.suggestions == 3
    assert set(offered) <= FAQS - {"ret-001"} and len(set(offered)) == 3
    assert all(s.question for s in reply.suggestions)

    # An FAQ the conversation already answered is not offered again.
    history = (Turn("customer", "which cards do you take"),
               Turn("agent", "We accept Visa ...", "faq", faq_id=offered[0]))
    again = pipeline.answer("How do I return an item?", history)
    assert offered[0] not in {s.faq_id for s in again.suggestions}
    assert "ret-001" not in {s.faq_id for s in again.suggestions}


def test_no_suggestions_after_a_hand_over_and_opening_questions(settings: Settings,
                                                               embedder: Embedder) -> None:
    pipeline = _pipeline(settings, embedder)
    assert pipeline.opening() == []  # not built yet
    pipeline.warm_up_suggestions()
    handoff = pipeline.answer("I want to talk to a human agent")
    assert handoff.route == Route.HANDOFF and handoff.suggestions == ()
    opening = pipeline.opening(recent_counts={"pay-001": 5})
    assert [s.faq_id for s in opening][0] == "pay-001" and len(opening) == 3


def test_suggestions_off(settings: Settings, embedder: Embedder) -> None:
    pipeline = _pipeline(settings.model_copy(update={"suggestions": 0}), embedder)
    assert not pipeline.warm_up_suggestions()
    assert pipeline.answer("How do I return an item?").suggestions == ()


class MovingRetriever:
    """A real in-memory retriever whose index version the test moves on, as a re-index
    elsewhere would; with ``broken`` set, reading its documents fails. Counts those reads."""

    def __init__(self, inner: Retriever) -> None:
        self.inner = inner
        self.version = "v1"
        self.broken = False
        self.reads = 0

    @property
    def index_version(self) -> str:
        return self.version

    @property
    def documents(self) -> list[Any]:
        self.reads += 1
        if self.broken:
            raise IndexNotReadyError("the index is unreadable")
        return self.inner.documents

    def __getattr__(self, name: str) -> Any:  # search, embedder, manifest, ...: the real ones
        return getattr(self.inner, name)


def _wait_for_rebuild() -> None:
    for thread in threading.enumerate():
        if thread.name == "suggestions":
            thread.join(120)


def test_a_new_index_version_is_rebuilt_once_from_the_vectors_already_known(
        settings: Settings, embedder: Embedder) -> None:
    documents = load_knowledge_base(settings.knowledge_base)
    counting = CountingEncoder(embedder.encoder)
    serving = Embedder(settings, encoder=counting)
    retriever = MovingRetriever(Retriever.from_documents(documents, settings, serving))
    pipeline = build_pipeline(settings, retriever=retriever, generator=StandInGenerator("Sure."))
    counting.texts.clear()  # what building the index embedded

    assert pipeline.warm_up_suggestions()
    # Every FAQ question and dialogue turn is an indexed phrasing: only the answers are new.
    assert sorted(counting.texts) == sorted(d.answer for d in documents if d.kind == "faq")
    offered = pipeline.answer("How do I return an item?").suggestions
    assert len(offered) == 3

    counting.texts.clear()
    retriever.version = "v2"  # a re-index: the old statistics answer while the new ones build
    assert pipeline.answer("How do I return an item?").suggestions == offered
    _wait_for_rebuild()
    assert retriever.reads == 2 and counting.texts == []  # rebuilt, embedding nothing
    assert pipeline.answer("How do I return an item?").suggestions == offered

    retriever.version, retriever.broken = "v3", True  # a rebuild that fails ...
    for _ in range(3):
        assert pipeline.answer("How do I return an item?").suggestions == offered
        _wait_for_rebuild()
    assert retriever.reads == 3  # ... is tried once for its version, not on every request


def test_close_stops_the_embedding_worker(settings: Settings, embedder: Embedder) -> None:
    serving = Embedder(settings, encoder=embedder.encoder)
    retriever = Retriever.from_documents(load_knowledge_base(settings.knowledge_base), settings,
                                         serving)
    pipeline = build_pipeline(settings, retriever=retriever, generator=StandInGenerator("Sure."))
    pipeline.answer("when does my parcel arrive")  # a query: the worker starts
    worker = serving._batcher
    assert worker is not None and worker.running
    pipeline.close()
    assert not worker.running and serving._batcher is None
    assert pipeline.answer("How do I return an item?").route == Route.FAQ  # still usable
