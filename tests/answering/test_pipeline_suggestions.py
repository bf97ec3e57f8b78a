"""The pipeline's suggested questions on the tiny knowledge base (real retriever and embedder,
stand-in generator): none before the statistics are built, then related FAQs after an FAQ
answer, never the answered one nor one the history answered, none after a hand-over, and the
opening questions."""

from __future__ import annotations

from standin_stages import StandInGenerator

from chatbot.answering.pipeline import Pipeline, build_pipeline
from chatbot.config import Settings
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
