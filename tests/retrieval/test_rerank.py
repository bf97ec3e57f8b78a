"""The reranker: compact cross-encoder weights (save, load offline), the shipped weights, the
gate, and re-ordering by probability."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from standin_stages import doc, hit

from chatbot.config import Settings
from chatbot.errors import ConfigError, ModelError
from chatbot.retrieval.rerank import (
    CONFIG_FILE,
    SHIPPED_DIR,
    CrossScorer,
    Reranker,
    candidate_text,
    held_for_calibration,
    load_cross_encoder,
    new_cross_encoder,
    query_text,
    resolve_weights_dir,
    save_compact,
    weights_files,
)
from chatbot.types import Hit, Turn

PAYMENTS = doc("pay-011", "Which payment methods do you accept?",
               "We accept Visa, Mastercard, American Express, Discover, PayPal, Apple Pay and "
               "Pinecrest gift cards. We do not accept cryptocurrency, checks or cash on "
               "delivery.")
GIFT_CARDS = doc("gc-001", "How do I check my gift card balance?",
                 "Enter the 16-digit card number and PIN at pinecrest-outfitters.example/"
                 "gift-cards/balance.")
PASSWORD = doc("acc-001", "How do I reset my password?",
               "Click Forgot password on the sign-in page and follow the emailed link.")
DIALOGUE = doc("dlg-0001#0", "can i pay with crypto", "Sorry, we don't take crypto.",
               kind="dialogue")
SHIPPING = doc("ship-001", "How long does standard shipping take?",
               "Standard shipping takes 3-5 business days within the US.")
RETURNS = doc("ret-001", "How do I return an item?",
              "Start a return from Orders in your account within 60 days and print the free "
              "label.")


class FixedScorer:
    """A stand-in with ``CrossScorer.predict``'s interface: the probability of each pair is
    looked up by the candidate's question; it counts the pairs it was asked about."""

    def __init__(self, by_question: dict[str, float]) -> None:
        self.by_question = by_question
        self.calls: list[list[tuple[str, str]]] = []

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        self.calls.append(list(pairs))
        return np.array([next((p for q, p in self.by_question.items() if c.startswith(q)), 0.0)
                         for _, c in pairs], dtype=np.float32)


def _reranker(settings: Settings, scorer: FixedScorer, **update: float) -> Reranker:
    return Reranker(settings.model_copy(update=update), scorer=scorer, scorer_id="reranker:test")


def test_compact_weights_round_trip_to_the_same_scores(tmp_path: Path) -> None:
    model, tokenizer = new_cross_encoder(train_layers=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "classifier.weight" in trainable and "bert.encoder.layer.5.output.dense.weight" in \
        trainable
    assert not any(n.startswith(("bert.embeddings.word_embeddings", "bert.encoder.layer.4."))
                   for n in trainable)  # the frozen body is not shipped
    pairs = [("can i pay with bitcoin", candidate_text(PAYMENTS)),
             ("can i pay with bitcoin", candidate_text(PASSWORD))]
    before = CrossScorer(model.eval(), tokenizer).logits(pairs)

    weights = save_compact(model, tmp_path / "w", max_length=96, meta={"note": "test"})
    config = json.loads((tmp_path / "w" / CONFIG_FILE).read_text())
    assert config["max_length"] == 96 and config["meta"] == {"note": "test"}
    assert set(config["tensors"]) == trainable
    assert weights.stat().st_size < 4_000_000  # one layer + head in fp16, not the 90 MB body

    loaded, loaded_tokenizer = load_cross_encoder(None, tmp_path / "w")
    assert loaded_tokenizer.model_max_length == 96
    after = CrossScorer(loaded, loaded_tokenizer).logits(pairs)
    np.testing.assert_allclose(after, before, atol=2e-2)  # fp16 storage


def test_loading_a_folder_without_weights_says_how_to_make_some(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="chatbot finetune reranker"):
        load_cross_encoder(None, tmp_path)
    with pytest.raises(ConfigError, match="CHATBOT_RERANKER=off"):
        resolve_weights_dir(str(tmp_path))
    assert resolve_weights_dir("off") is None
    assert resolve_weights_dir("shipped") == SHIPPED_DIR


def test_shipped_weights_are_compact_and_load_offline(settings: Settings) -> None:
    sizes = [f.stat().st_size for f in weights_files(SHIPPED_DIR)]
    assert sum(sizes) < 25_000_000 and max(sizes) < 20_000_000  # no file over 20 MB
    reranker = Reranker(settings.model_copy(update={"reranker": "shipped", "torch_threads": 1,
                                                    "reranker_backend": "torch"}))
    assert reranker.scorer_id.startswith("reranker:") and not reranker.loaded
    probabilities = reranker.score("how do i reset my password", (), [hit(PASSWORD, 0.9),
                                                                       hit(RETURNS, 0.2, 2)])
    assert reranker.loaded
    assert probabilities.shape == (2,) and ((probabilities >= 0) & (probabilities <= 1)).all()


@pytest.mark.parametrize(("question", "hits", "right"), [
    ("i forgot my password and cant sign in",
     [hit(RETURNS, 0.45, 1), hit(PASSWORD, 0.42, 2), hit(SHIPPING, 0.3, 3)], PASSWORD),
    ("how many days until my package arrives",
     [hit(RETURNS, 0.5, 1), hit(SHIPPING, 0.47, 2), hit(PASSWORD, 0.2, 3)], SHIPPING),
])
def test_shipped_reranker_puts_the_answering_faq_first_where_the_cosine_does_not(
        settings: Settings, question: str, hits: list[Hit], right: object) -> None:
    s = settings.model_copy(update={"reranker": "shipped", "torch_threads": 1,
                                    "reranker_backend": "torch", "rerank_skip_below": -1.0,
                                    "rerank_skip_above": 1.01})
    # The cosine puts a wrong FAQ first by a small margin; the answer that answers wins.
    reranked = Reranker(s).rerank(question, (), hits)
    assert reranked.ran
    assert reranked.hits[0].document is right
    assert reranked.hits[0].score > reranked.hits[1].score
    assert [h.rank for h in reranked.hits] == [1, 2, 3]


def test_rerank_orders_by_probability_and_scores_only_the_top_n(settings: Settings) -> None:
    scorer = FixedScorer({"How do I return": 0.9, "How do I reset": 0.2})
    reranker = _reranker(settings, scorer, rerank_top_n=2, rerank_skip_below=0.0,
                         rerank_skip_above=1.01)
    hits = [hit(PASSWORD, 0.7, 1), hit(RETURNS, 0.6, 2), hit(PAYMENTS, 0.5, 3)]
    reranked = reranker.rerank("i want to send my boots back", (), hits)
    assert [h.document for h in reranked.hits] == [RETURNS, PASSWORD, PAYMENTS]
    assert [h.score for h in reranked.hits] == pytest.approx([0.9, 0.2, 0.0])
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 2  # one batch of the top 2
    assert reranked.hits[0].dense_score == 0.6  # the first stage's cosine is kept
    assert reranker.stats == {"queries": 1, "ran": 1, "skipped_low": 0, "skipped_high": 0,
                              "pairs": 2}


def test_gate_skips_the_model_when_the_first_stage_is_decisive(settings: Settings) -> None:
    scorer = FixedScorer({})
    reranker = _reranker(settings, scorer, rerank_skip_below=0.3, rerank_skip_above=0.9,
                         rerank_skip_margin=0.1)
    low = reranker.rerank("what's the weather in moab", (), [hit(RETURNS, 0.2),
                                                             hit(PAYMENTS, 0.1, 2)])
    assert not low.ran and [h.score for h in low.hits] == [0.0, 0.0]
    high = reranker.rerank("how do i reset my password", (), [hit(RETURNS, 0.5, 1),
                                                              hit(PASSWORD, 0.97, 2)])
    assert not high.ran and high.hits[0].document is PASSWORD  # the decisive cosine first
    assert [h.score for h in high.hits] == [1.0, 0.0]
    close = reranker.rerank("password or return?", (), [hit(PASSWORD, 0.95), hit(RETURNS, 0.9, 2)])
    assert close.ran  # high, but no clear margin: the model decides
    assert scorer.calls and len(scorer.calls) == 1
    assert reranker.stats["skipped_low"] == 1 and reranker.stats["skipped_high"] == 1


def test_query_text_puts_the_question_first_then_recent_customer_turns() -> None:
    history = [Turn("customer", "do you ship to canada"), Turn("agent", "Yes, in 4-8 days."),
               Turn("customer", "how much is it")]
    assert query_text("and to alaska?", history, 2) == (
        "and to alaska? | earlier: how much is it | do you ship to canada")
    assert query_text("and to alaska?", history, 0) == "and to alaska?"
    assert query_text("hello") == "hello"


def test_calibration_holdout_is_stable_and_about_the_share() -> None:
    texts = [f"question number {i}" for i in range(2000)]
    held = [held_for_calibration(t) for t in texts]
    assert 0.25 < sum(held) / len(held) < 0.35
    assert held == [held_for_calibration(t.upper() + " ") for t in texts]  # case, spaces


def test_onnx_backend_scores_like_torch_and_exports_once(settings: Settings,
                                                         tmp_path: Path) -> None:
    from chatbot.retrieval import rerank_onnx
    from chatbot.retrieval.rerank import weights_id

    model, _ = new_cross_encoder(train_layers=1)
    save_compact(model, tmp_path / "w", max_length=64)
    pairs = [("can i pay with bitcoin", candidate_text(PAYMENTS)),
             ("hi", candidate_text(PASSWORD)), ("where is my order?", candidate_text(RETURNS))]
    base = settings.model_copy(update={"reranker": str(tmp_path / "w"), "torch_threads": 1})
    by_torch = Reranker(base.model_copy(update={"reranker_backend": "torch"})).load()
    onnx = Reranker(base.model_copy(update={"reranker_backend": "onnx"}))
    np.testing.assert_allclose(onnx.load().predict(pairs), by_torch.predict(pairs), atol=1e-4)
    folder = rerank_onnx.export_dir(base.models_dir, weights_id(tmp_path / "w"))
    assert rerank_onnx.is_exported(folder, weights_id(tmp_path / "w"))
    int8 = Reranker(base.model_copy(update={"reranker_backend": "onnx-int8"}))
    assert int8.scorer_id == onnx.scorer_id + "-int8"  # its own thresholds
    assert int8.load().predict(pairs).shape == (3,)
    assert (folder / "model.int8.onnx").is_file()


def test_fusion_combines_the_logit_with_what_the_first_stage_knows() -> None:
    from chatbot.retrieval.rerank import FUSION_FEATURES, fuse, hit_features

    hits = [Hit(document=PAYMENTS, score=0.5, rank=1, dense_score=0.8, keyword_score=6.0),
            Hit(document=DIALOGUE, score=0.4, rank=2, dense_score=0.6, keyword_score=None)]
    features = hit_features(hits)
    assert features.shape == (2, len(FUSION_FEATURES) - 1)
    np.testing.assert_allclose(features, [[0.8, 1.0, 1.0, 0.0], [0.6, 0.0, 0.0, 0.2]], atol=1e-6)
    logits = np.array([2.0, -1.0])
    np.testing.assert_allclose(fuse(logits, features, None), 1 / (1 + np.exp(-logits)),
                               rtol=1e-6)
    fusion = {"weights": [0.5, 4.0, 1.0, 0.5, -2.0], "bias": -3.0}
    z = 0.5 * logits + features @ np.array([4.0, 1.0, 0.5, -2.0]) - 3.0
    np.testing.assert_allclose(fuse(logits, features, fusion), 1 / (1 + np.exp(-z)), rtol=1e-6)


def test_candidates_keep_retrieval_order_with_at_most_n_dialogues() -> None:
    from chatbot.retrieval.rerank import select_candidates

    other = doc("dlg-0002#0", "is crypto ok", "No.", kind="dialogue")
    hits = [hit(DIALOGUE, 0.9, 1), hit(other, 0.85, 2), hit(PAYMENTS, 0.8, 3),
            hit(PASSWORD, 0.5, 4), hit(RETURNS, 0.4, 5)]
    chosen = select_candidates(hits, 3, 1)
    assert [h.document for h in chosen] == [DIALOGUE, PAYMENTS, PASSWORD]
    assert [h.document for h in select_candidates(hits, 10, 0)] == [PAYMENTS, PASSWORD, RETURNS]
