"""Rerank: a cross-encoder that reads (question + recent turns, candidate question + answer)
together and gives the probability that the candidate answers the question.

Owns two things:

1. **Cross-encoders in compact form**, re-exported from ``chatbot.retrieval.cross_encoder``
   (``new_cross_encoder``, ``save_compact``, ``load_cross_encoder``, ``CrossScorer``): the
   shipped MiniLM body with its trained upper layers and head loaded over it, offline.
2. **The reranker stage** (``Reranker``): scores the top ``rerank_top_n`` hits of a search,
   re-orders them by probability and puts the probability in ``Hit.score``, which the policy then
   routes on (``Thresholds.scorer`` says which score the thresholds belong to). A gate skips the
   model when the first stage is already decisive: best cosine below ``rerank_skip_below`` (every
   hit gets probability 0: nothing to answer from), or an FAQ at ``rerank_skip_above`` or more
   with a margin of ``rerank_skip_margin`` over the other FAQs (it gets probability 1, the
   others 0). ``Reranker.stats`` counts how often it ran.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatbot.config import Settings

# Re-exported: callers import the compact-form helpers from here too (stable names).
from chatbot.retrieval.cross_encoder import (  # noqa: F401
    CONFIG_FILE,
    DEFAULT_MAX_LENGTH,
    FORMAT,
    FROZEN_PREFIXES,
    SHIPPED_DIR,
    WEIGHTS,
    WEIGHTS_FILE,
    CrossScorer,
    base_model_path,
    load_cross_encoder,
    new_cross_encoder,
    read_compact_config,
    save_compact,
    weights_files,
    weights_id,
)
from chatbot.types import Hit, Turn

log = logging.getLogger(__name__)


# --- the pair texts (training and serving build them the same way) ----------------------------


def query_text(question: str, history: Sequence[Turn] = (), turns: int = 2) -> str:
    """The question first, then up to ``turns`` earlier customer turns (newest first): a
    follow-up ("and to Alaska?") needs them, and truncation then cuts the oldest context."""
    recent = [t.text for t in history if t.role == "customer"][-turns:] if turns else []
    if not recent:
        return question
    return question + " | earlier: " + " | ".join(reversed(recent))


def candidate_text(hit_or_document: Any) -> str:
    """What the candidate says: its question and answer."""
    document = getattr(hit_or_document, "document", hit_or_document)
    return f"{document.question} {document.answer}"


# The reranker's probability is a logistic function of the cross-encoder's logit and what the
# first stage already knows about the hit (fitted by training on questions the cross-encoder did
# not train on): on a few thousand pairs a cross-encoder alone learns slowly, and the first
# stage's scores are information it need not relearn.
FUSION_FEATURES = ("logit", "cosine", "keyword", "faq", "cosine_gap")


def hit_features(hits: Sequence[Hit]) -> np.ndarray:
    """(n, 4) first-stage features of the candidates of one question: the dense cosine, BM25
    divided by the best BM25 among them, 1 for an FAQ, and the cosine's gap to the best one."""
    cosines = np.array([h.dense_score or 0.0 for h in hits], dtype=np.float32)
    keyword = np.array([h.keyword_score or 0.0 for h in hits], dtype=np.float32)
    best_keyword = float(keyword.max()) if len(keyword) and keyword.max() > 0 else 1.0
    faq = np.array([h.document.kind == "faq" for h in hits], dtype=np.float32)
    gap = (float(cosines.max()) - cosines) if len(cosines) else cosines
    return np.stack([cosines, keyword / best_keyword, faq, gap], axis=1).reshape(len(hits), 4)


def fuse(logits: np.ndarray, features: np.ndarray, fusion: dict[str, Any] | None) -> np.ndarray:
    """Probabilities: sigmoid of the fitted combination, or of the logit alone without one."""
    z = np.asarray(logits, dtype=np.float64)
    if fusion:
        x = np.column_stack([z, features])
        z = x @ np.asarray(fusion["weights"], dtype=np.float64) + float(fusion["bias"])
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def search_depth(settings: Settings) -> int:
    """How many hits to fetch so that ``select_candidates`` finds ``rerank_top_n`` of them."""
    return min(50, max(settings.top_k, 3 * settings.rerank_top_n))


def candidates(settings: Settings, hits: Sequence[Hit]) -> list[Hit]:
    """``select_candidates`` with the settings' numbers (training uses the same)."""
    return select_candidates(hits, settings.rerank_top_n, settings.rerank_dialogues)


def select_candidates(hits: Sequence[Hit], n: int, dialogues: int) -> list[Hit]:
    """The hits worth scoring, in retrieval order: the best ``n`` of which at most ``dialogues``
    are past dialogue turns. Past dialogues crowd the fused ranking (on the demo test split the
    right FAQ is among the top 10 hits for 89% of in-scope questions, among the top 10 FAQ hits
    for 96%), and an answer is shown from an FAQ; a few dialogues still compete for the
    grounded-generation sources."""
    chosen: list[Hit] = []
    taken = 0
    for hit in hits:
        if len(chosen) == n:
            break
        if hit.document.kind != "faq":
            if taken >= dialogues:
                continue
            taken += 1
        chosen.append(hit)
    return chosen


# A share of the knowledge base's alternative phrasings and out-of-scope questions that training
# never sees, chosen by a hash of the text: `chatbot calibrate` picks the reranker's thresholds on
# them, because probabilities on trained examples are more extreme than on a customer's words.
CALIBRATION_SHARE = 0.3


def held_for_calibration(text: str, share: float = CALIBRATION_SHARE) -> bool:
    """Whether ``text`` is reserved for calibration (stable across runs and machines)."""
    digest = hashlib.sha256(text.strip().lower().encode("utf-8")).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF < share


# --- the reranker stage ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reranked:
    """Hits re-ordered by probability (in ``Hit.score``; unscored hits after, with 0), whether
    the model ran, and why or why not."""

    hits: tuple[Hit, ...]
    ran: bool
    reason: str


def resolve_weights_dir(setting: str) -> Path | None:
    """``reranker`` setting -> weights folder: 'off' -> None, 'shipped' -> SHIPPED_DIR, else a
    path (which must hold weights written by ``save_compact``)."""
    return WEIGHTS.resolve(setting)


class Reranker:
    """The second stage (see the module docstring). The constructor stores settings only; the
    model loads on first use or ``load()``. Thread-safe: one scoring at a time (the tokenizer is
    not safe to share, and two concurrent forward passes would only fight for the cores)."""

    def __init__(self, settings: Settings, weights_dir: Path | None = None,
                 scorer: Any = None, scorer_id: str | None = None) -> None:
        """``scorer``: anything with ``CrossScorer.predict``'s interface, already loaded (tests
        pass a small stand-in, named by ``scorer_id``); default: loaded from ``weights_dir``."""
        self.settings = settings
        self.weights_dir = weights_dir or resolve_weights_dir(settings.reranker) or SHIPPED_DIR
        self._scorer = scorer
        self._fusion: dict[str, Any] | None = None  # read with the weights (``_load``)
        self._lock = threading.Lock()
        self._id = scorer_id
        # How often the model ran, and why not: counted per call (serving, calibrate, bench).
        self.stats = {"queries": 0, "ran": 0, "skipped_low": 0, "skipped_high": 0, "pairs": 0}
        self._stats_lock = threading.Lock()

    def _count(self, **counts: int) -> None:
        with self._stats_lock:
            for key, n in counts.items():
                self.stats[key] += n

    @property
    def loaded(self) -> bool:
        return self._scorer is not None

    @property
    def scorer_id(self) -> str:
        """``reranker:<hash of the weights>`` (``-int8`` on the int8 backend, whose scores
        differ slightly): the scorer calibrated thresholds belong to."""
        if self._id is None:
            int8 = "-int8" if self.settings.reranker_backend == "onnx-int8" else ""
            self._id = f"reranker:{weights_id(self.weights_dir)}{int8}"
        return self._id

    def load(self) -> Any:
        """The scorer: PyTorch, or ONNX Runtime (exported once under ``<var_dir>/models``)."""
        with self._lock:
            if self._scorer is None:
                self._scorer = self._load()
                log.info("reranker loaded from %s (%s)", self.weights_dir,
                         self.settings.reranker_backend)
            return self._scorer

    def _load(self) -> Any:
        self._fusion = read_compact_config(self.weights_dir).get("fusion") or None
        backend = self.settings.reranker_backend
        if backend == "torch":
            return CrossScorer.from_dir(self.settings, self.weights_dir)
        from chatbot.retrieval import rerank_onnx

        wid = weights_id(self.weights_dir)
        folder = rerank_onnx.export_dir(self.settings.models_dir, wid)
        if not rerank_onnx.is_exported(folder, wid):
            model, tokenizer = load_cross_encoder(self.settings, self.weights_dir)
            rerank_onnx.ensure_export(model, tokenizer, folder, wid)
        return rerank_onnx.OnnxCrossScorer(folder, threads=self.settings.resolved_threads,
                                           quantized=backend == "onnx-int8")

    def gate(self, hits: Sequence[Hit]) -> tuple[str, int] | None:
        """Whether the first stage is decisive: ("low", -1) when the best cosine is below
        ``rerank_skip_below``; ("high", i) when FAQ hit ``i`` reaches ``rerank_skip_above`` with
        a margin of ``rerank_skip_margin`` over every other FAQ hit; None: the model decides.
        (An FAQ, because a past dialogue's near-duplicate question says little about whether
        its reply answers this customer.)"""
        best = max((h.dense_score or 0.0 for h in hits), default=0.0)
        if not hits or best < self.settings.rerank_skip_below:
            return "low", -1
        faqs = sorted(((h.dense_score or 0.0, i) for i, h in enumerate(hits)
                       if h.document.kind == "faq"), reverse=True)
        if faqs and faqs[0][0] >= self.settings.rerank_skip_above and (
                len(faqs) == 1 or faqs[0][0] - faqs[1][0] >= self.settings.rerank_skip_margin):
            return "high", faqs[0][1]
        return None

    def score(self, question: str, history: Sequence[Turn], hits: Sequence[Hit]) -> np.ndarray:
        """The probability that each hit answers the question (batched, in order)."""
        if not hits:
            return np.zeros(0, dtype=np.float32)
        scorer = self.load()
        query = query_text(question, history, self.settings.history_turns)
        pairs = [(query, candidate_text(h)) for h in hits]
        with self._lock:
            if self._fusion is None:  # a plain cross-encoder (or a stand-in scorer)
                return np.asarray(scorer.predict(pairs), dtype=np.float32)
            return fuse(scorer.logits(pairs), hit_features(hits), self._fusion)

    def rerank(self, question: str, history: Sequence[Turn], hits: Sequence[Hit]) -> Reranked:
        """The candidates (``select_candidates``: ``rerank_top_n`` hits, at most
        ``rerank_dialogues`` of them dialogues) scored and re-ordered, the other hits after them
        with probability 0; or gated (see ``gate``)."""
        hits = list(hits)
        head = candidates(self.settings, hits)
        chosen = {id(h) for h in head}
        tail = [h for h in hits if id(h) not in chosen]
        hits = head + tail
        decisive = self.gate(head)
        if decisive is not None and decisive[0] == "low":
            self._count(queries=1, skipped_low=1)
            top = max((h.dense_score or 0.0 for h in head), default=0.0)
            return Reranked(_with_scores(hits, [0.0] * len(hits)), False,
                            f"reranker skipped: top cosine {top:.3f} < "
                            f"{self.settings.rerank_skip_below} (probability 0)")
        if decisive is not None:
            self._count(queries=1, skipped_high=1)
            best = decisive[1]
            order = [head[best], *(h for i, h in enumerate(hits) if i != best)]
            return Reranked(_with_scores(order, [1.0] + [0.0] * (len(order) - 1)), False,
                            f"reranker skipped: top cosine {head[best].dense_score:.3f} with a "
                            f"margin >= {self.settings.rerank_skip_margin} (probability 1)")
        probabilities = self.score(question, history, head)
        self._count(queries=1, ran=1, pairs=len(head))
        order = sorted(range(len(head)), key=lambda i: (-float(probabilities[i]), i))
        scored = [head[i] for i in order] + tail
        values = [float(probabilities[i]) for i in order] + [0.0] * len(tail)
        return Reranked(_with_scores(scored, values), True,
                        f"reranker scored the top {len(head)}")


def _with_scores(hits: Sequence[Hit], scores: Sequence[float]) -> tuple[Hit, ...]:
    """The hits in this order with 1-based ranks and ``score`` = the reranker's probability."""
    return tuple(dataclasses.replace(h, score=round(float(s), 6), rank=r)
                 for r, (h, s) in enumerate(zip(hits, scores, strict=True), start=1))
