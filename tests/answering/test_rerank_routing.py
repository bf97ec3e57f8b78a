"""Routing with a reranker: the policy's confidence is the reranker's probability, thresholds
belong to one scorer, calibration picks them from the reranker's scores, and the pipeline wires
search -> rerank -> policy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from standin_stages import DIALOGUE, RETURNS, SHIPPING, StandInGenerator, StandInRetriever, hit

from chatbot.answering.calibrate import calibrate, pick_thresholds
from chatbot.answering.pipeline import build_pipeline
from chatbot.answering.policy import (
    COSINE,
    DEFAULT_RERANK_THRESHOLDS,
    DEFAULT_THRESHOLDS,
    Policy,
    Thresholds,
)
from chatbot.config import Settings
from chatbot.retrieval.rerank import Reranker
from chatbot.types import Hit, Route

SCORER = "reranker:test"
TH = Thresholds(answer=0.5, faq=0.8, support=0.2, source="test", scorer=SCORER)


class TopicScorer:
    """A stand-in with ``CrossScorer.predict``'s interface: a candidate answers when its text
    contains the word the question asks about (``words``: question word -> candidate word)."""

    def __init__(self, words: dict[str, str]) -> None:
        self.words = words

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        out = []
        for query, candidate in pairs:
            wanted = [c for q, c in self.words.items() if q in query.lower()]
            out.append(0.95 if wanted and wanted[0] in candidate.lower() else 0.05)
        return np.array(out, dtype=np.float32)


def _scored(document: object, dense: float, probability: float, rank: int = 1) -> Hit:
    return Hit(document=document, score=probability, rank=rank,  # type: ignore[arg-type]
               dense_score=dense, matched="")


def test_policy_routes_on_the_probability_not_the_cosine(settings: Settings) -> None:
    policy = Policy(settings)
    confident = policy.decide("how long is delivery", [_scored(SHIPPING, 0.31, 0.93)], (), TH)
    assert confident.route == Route.FAQ and confident.confidence == pytest.approx(0.93)
    assert "reranker probability 0.930" in confident.reason
    doubtful = policy.decide("how long is delivery", [_scored(SHIPPING, 0.97, 0.12)], (), TH)
    assert doubtful.route == Route.FALLBACK and "reranker probability 0.120" in doubtful.reason
    middle = policy.decide("parcel late", [_scored(DIALOGUE, 0.5, 0.6), _scored(RETURNS, 0.6, 0.1,
                                                                              2)], (), TH)
    assert middle.route == Route.GENERATED and middle.sources[0].document is DIALOGUE


def test_thresholds_of_another_scorer_are_never_used() -> None:
    cosine = {"answer": 0.7, "faq": 0.85, "support": 0.3, "source": "cosine run"}
    assert Thresholds.from_manifest({"thresholds": cosine}).answer == 0.7  # old manifests
    other = Thresholds.from_manifest({"thresholds": cosine}, scorer=SCORER)
    assert other.scorer == SCORER and other.answer == DEFAULT_RERANK_THRESHOLDS.answer
    assert "chatbot calibrate" in other.source
    mine = Thresholds.from_manifest({"thresholds": {**cosine, "scorer": SCORER}}, scorer=SCORER)
    assert mine.answer == 0.7 and mine.scorer == SCORER
    assert Thresholds.from_manifest({"thresholds": {**cosine, "scorer": SCORER}}) is \
        DEFAULT_THRESHOLDS
    assert Thresholds.from_manifest(None, scorer=DEFAULT_RERANK_THRESHOLDS.scorer) is \
        DEFAULT_RERANK_THRESHOLDS


def test_pick_thresholds_reads_the_probability() -> None:
    # The cosine says nothing here (the same for right and wrong); the probability separates.
    rng = np.random.default_rng(0)
    in_hits = [[_scored(SHIPPING, 0.6, float(p))] for p in rng.uniform(0.7, 1.0, 40)]
    out_hits = [[_scored(RETURNS, 0.6, float(p))] for p in rng.uniform(0.0, 0.4, 40)]
    labels = ["ship-001"] * 40
    answer, faq, metrics = pick_thresholds(in_hits, labels, out_hits, lambda h:
                                           h.document.record_id, 0.9, SCORER)
    lowest_in = min(h[0].score for h in in_hits)
    assert 0.3 < answer <= lowest_in and metrics["answer_target_reached"] == 1.0
    cos_answer, _, cos_metrics = pick_thresholds(in_hits, labels, out_hits, lambda h:
                                                 h.document.record_id, 0.9, COSINE)
    assert cos_answer == pytest.approx(0.6) and cos_metrics["answer_precision"] == 0.5


def test_calibrate_with_a_reranker_stores_its_scorer(settings: Settings, embedder) -> None:  # type: ignore[no-untyped-def]
    (settings.knowledge_base / "out_of_scope.txt").write_text(
        # Questions held for calibration (``held_for_calibration``): the others are skipped.
        "how tall is mount everest\nbest pizza in new york\nbook me a flight to denver\n")
    scorer = TopicScorer({"deliver": "shipping", "package": "shipping", "paypal": "paypal",
                          "password": "password", "send something back": "return"})
    reranker = Reranker(settings.model_copy(update={"rerank_skip_below": -1.0,
                                                    "rerank_skip_above": 1.01}),
                        scorer=scorer, scorer_id=SCORER)
    thresholds, report = calibrate(settings, embedder=embedder, progress=False,
                                   reranker=reranker)
    assert thresholds.scorer == SCORER and report["thresholds"]["scorer"] == SCORER
    assert thresholds.answer in (0.05, 0.95)  # one of the stand-in's probabilities
    assert report["calibration_set"]["out_of_scope"] == 3
    assert report["calibration_set"]["reranker"]["ran"] == reranker.stats["ran"] > 0


def test_pipeline_reranks_then_routes_on_the_reranker_thresholds(settings: Settings) -> None:
    question = "i need to send my boots back"
    retriever = StandInRetriever({question: [hit(SHIPPING, 0.7, 1), hit(RETURNS, 0.6, 2)]},
                                 thresholds={**TH.to_json(), "answer": 0.5, "faq": 0.8})
    s = settings.model_copy(update={"rerank_skip_below": 0.2, "rerank_skip_above": 1.01})
    reranker = Reranker(s, scorer=TopicScorer({"send my boots back": "return"}),
                        scorer_id=SCORER)
    pipeline = build_pipeline(s, retriever=retriever, generator=StandInGenerator("unused"),
                              reranker=reranker)
    assert pipeline.scorer == SCORER and pipeline.thresholds().faq == 0.8
    reply = pipeline.answer(question)
    assert reply.route == Route.FAQ and reply.sources[0].document is RETURNS
    assert reply.confidence == pytest.approx(0.95)
    assert [h.document for h in reply.hits] == [RETURNS, SHIPPING]
    assert reply.extra["reranked"] == 1.0 and "rerank_ms" in reply.extra
    assert retriever.searches == [(question, ())]


def test_pipeline_without_a_reranker_keeps_the_cosine(settings: Settings) -> None:
    assert settings.reranker == "off"  # the test settings: the cosine world
    pipeline = build_pipeline(settings, retriever=StandInRetriever({}),
                              generator=StandInGenerator("unused"))
    assert pipeline.reranker is None and pipeline.scorer == COSINE
    assert pipeline.thresholds() is DEFAULT_THRESHOLDS


def test_not_ready_until_the_reranker_is_loaded(settings: Settings) -> None:
    reranker = Reranker(settings.model_copy(update={"reranker": "shipped"}))
    pipeline = build_pipeline(settings, retriever=StandInRetriever({}),
                              generator=StandInGenerator("unused"), reranker=reranker)
    assert "reranker" in pipeline.not_ready()


def test_the_shipped_weights_have_their_calibrated_defaults() -> None:
    # New weights need new defaults (`chatbot calibrate` on the demo knowledge base): the
    # scorer id is a hash of the weights file, so stale defaults would silently not apply.
    from chatbot.retrieval.rerank import SHIPPED_DIR, weights_id

    assert DEFAULT_RERANK_THRESHOLDS.scorer == f"reranker:{weights_id(SHIPPED_DIR)}"
