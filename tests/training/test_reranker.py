"""Reranker training: the pairs it learns from and a tiny run that saves loadable weights."""

from __future__ import annotations

import json
from pathlib import Path

from chatbot.config import Settings
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.rerank import CONFIG_FILE, Reranker, held_for_calibration
from chatbot.retrieval.search import Retriever
from chatbot.training.reranker import _without_held, build_pairs, finetune_reranker

OUT_OF_SCOPE = ["what's the weather in moab", "write me a poem about tents",
                "how tall is mount everest"]


def test_pairs_label_the_right_faq_and_never_train_on_held_out_text(
        settings: Settings, embedder: Embedder) -> None:
    documents = load_knowledge_base(settings.knowledge_base)
    retriever = Retriever.from_documents(_without_held(documents), settings, embedder)
    pairs, counts = build_pairs(documents, retriever, OUT_OF_SCOPE, settings=settings,
                                negatives=2, progress=False)
    faqs = {d.record_id: d for d in documents if d.kind == "faq"}
    for pair in pairs:
        question = pair.query.split(" | earlier: ")[0]
        if pair.kind in ("faq", "oos"):  # what calibration asks: its share is never trained on
            assert not held_for_calibration(question)
        if pair.kind == "faq" and pair.label == 1.0:
            owner = next(d for d in faqs.values() if question in d.phrasings)
            assert pair.candidate.startswith(owner.question)  # its own FAQ, nothing else
    assert counts["faq_pos"] == sum(not held_for_calibration(p) for d in faqs.values()
                                    for p in d.phrasings)
    assert counts["faq_neg"] > 0
    oos = [p for p in pairs if p.kind == "oos"]
    assert oos and all(p.label == 0.0 for p in oos)
    assert {p.query for p in oos} == {q for q in OUT_OF_SCOPE if not held_for_calibration(q)}
    # No held-out alternative is left in the training index.
    indexed = {p for d in retriever.documents for p in d.phrasings}
    assert not any(held_for_calibration(a) for d in faqs.values() for a in d.alternatives
                   if a in indexed)


def test_tiny_training_run_saves_weights_the_reranker_loads(settings: Settings,
                                                            tmp_path: Path) -> None:
    s = settings.model_copy(update={"torch_threads": 1, "rerank_top_n": 4})
    out = tmp_path / "reranker"
    metrics = finetune_reranker(s, output=out, epochs=1, batch_size=4, max_steps=3,
                                negatives=2, train_layers=1, max_length=64,
                                out_of_scope=OUT_OF_SCOPE, progress=False)
    assert metrics["steps"] == 3 and metrics["pairs"] > 0
    assert 0.0 <= metrics["held_out"]["top1_reranked"] <= 1.0
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["max_length"] == 64 and config["meta"]["steps"] == 3
    assert metrics["size_mb"] < 5  # one layer and the head, fp16

    reranker = Reranker(s.model_copy(update={"reranker": str(out)}))
    assert reranker.weights_dir == out
    probabilities = reranker.score("how do i reset my password", (), [])
    assert probabilities.shape == (0,)
    documents = load_knowledge_base(s.knowledge_base)
    hits = Retriever.from_documents(documents, s).search("forgot my password", k=3)
    probabilities = reranker.score("forgot my password", (), hits)
    assert probabilities.shape == (3,) and ((probabilities >= 0) & (probabilities <= 1)).all()


def test_bitext_pairs_match_a_request_with_its_own_response(shared_datasets: Path) -> None:
    from chatbot.training.reranker import bitext_pairs

    path = next((shared_datasets / "bitext").glob("*.csv"))
    pairs = bitext_pairs(path, limit=20, negatives=2, seed=0)
    positives = [p for p in pairs if p.label == 1.0]
    assert len(positives) == 20 and all(p.kind == "bitext" for p in pairs)
    negatives = [p for p in pairs if p.label == 0.0]
    assert negatives and all(n.candidate != p.candidate for n in negatives for p in positives
                             if n.query == p.query)
