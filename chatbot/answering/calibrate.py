"""Calibration: pick the routing thresholds from data for a target precision.

In-scope questions are held-out alternative phrasings of the FAQs: for fold ``j`` the ``j``-th
alternative of every FAQ is removed from the index and asked as a question, so the bot never
sees the exact wording (``Retriever.from_documents`` builds each fold's throw-away index).
Out-of-scope questions are ``out_of_scope.txt`` in the knowledge base (one per line).

Precision is class-balanced: in-scope and out-of-scope each weigh one half, whatever the number
of questions in each file, because how many off-topic questions we wrote says nothing about real
traffic. Then:

- ``answer`` (grounded generation): the lowest cosine at which answered questions are in scope
  with the right document among the prompt's sources at ``target_precision``;
- ``faq`` (verbatim): the same with the *top* FAQ being the right one, at a stricter target that
  halves the error rate (``1 - (1 - target) / 2``), because a wrong verbatim answer is shown as is;
- ``support``: the sentence coverage that only ``1 - target`` of unsupported sentences reach
  (sentences of other FAQs' answers checked against the retrieved sources).

Each threshold is the lowest score whose answered set still reaches the target (most questions
answered at that precision), ignoring points with fewer than ``MIN_ANSWERED`` answered questions
whose precision is noise.

With a reranker (``CHATBOT_RERANKER``, ``chatbot.retrieval.rerank``) the scores are its
probabilities, from the same search, gate and re-ordering as serving, and the thresholds are
stored with ``scorer = reranker:<weights id>``. Only questions ``held_for_calibration`` count
then: the reranker was trained on the others, and its probabilities on trained examples are
more confident than on a customer's words. The same holds with an embedder tuning
(``chatbot.retrieval.embedder_tuning``), trained on the phrasings not held for calibration.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from chatbot.answering import grounding, prompt
from chatbot.answering import policy as pol
from chatbot.config import Settings
from chatbot.errors import ConfigError, IngestError
from chatbot.retrieval.embed import Embedder, ReusingEmbedder
from chatbot.types import Document, Hit, Route

LabelOf = Callable[[Hit], str]
MIN_ANSWERED = 10  # a precision over fewer answered questions is noise
MAX_FOLDS = 3  # held-out alternatives per FAQ; each fold is one throw-away index build


# The per-fold index builds embed each phrasing once through one ``ReusingEmbedder``; this older
# name stays for bench/bench_answers.py, which imports it.
CachingEmbedder = ReusingEmbedder


def read_out_of_scope(path: Path) -> list[str]:
    """Questions from a text file, one per line; ``#`` comments and blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise IngestError(str(path), None, f"cannot read out-of-scope questions: {error}",
                          "write one off-topic question per line") from error
    questions = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not questions:
        raise IngestError(str(path), None, "no out-of-scope questions", "add some, one per line")
    return questions


def balanced_precision(ok_rate: float, in_rate: float, out_rate: float) -> float:
    """Precision when in-scope and out-of-scope questions are equally frequent."""
    answered = in_rate + out_rate
    return ok_rate / answered if answered else 1.0


def pick_threshold(in_scores: np.ndarray, in_ok: np.ndarray, out_scores: np.ndarray,
                   target: float) -> tuple[float, float, bool]:
    """(threshold, balanced precision there, target reached): the lowest candidate threshold
    whose answered questions reach ``target``."""
    candidates = np.unique(np.concatenate([in_scores, out_scores]))[::-1]
    best_t, best_p, reached = float(candidates[0]) if len(candidates) else 1.0, 0.0, False
    for t in candidates:
        answered_in = in_scores >= t
        if answered_in.sum() < MIN_ANSWERED:  # too few points for a precision to mean anything
            continue
        p = balanced_precision(float((answered_in & in_ok).mean()), float(answered_in.mean()),
                               float((out_scores >= t).mean()))
        if p >= target:  # the lowest such threshold answers the most
            best_t, best_p, reached = float(t), p, True
        elif not reached and p > best_p:  # target not reached: keep the most precise point
            best_t, best_p = float(t), p
    return round(best_t, 4), round(best_p, 4), reached


def _features(hits_list: Sequence[Sequence[Hit]], labels: Sequence[str] | None,
              label_of: LabelOf, scorer: str = pol.COSINE) -> dict[str, np.ndarray]:
    def conf(hit: Hit) -> float:
        return pol.confidence(hit, scorer)

    top = np.array([max((conf(h) for h in hits), default=0.0) for hits in hits_list])
    faq_best = [max((h for h in hits if h.document.kind == "faq"), key=conf, default=None)
                for hits in hits_list]
    faq = np.array([conf(h) if h else 0.0 for h in faq_best])
    out = {"top": top, "faq": faq}
    if labels is not None:
        out["faq_ok"] = np.array([h is not None and label_of(h) == y
                                  for h, y in zip(faq_best, labels, strict=True)])
        out["src_ok"] = np.array([y in {label_of(h) for h in hits[: prompt.MAX_SOURCES]}
                                  for hits, y in zip(hits_list, labels, strict=True)])
    return out


def pick_thresholds(in_hits: Sequence[Sequence[Hit]], in_labels: Sequence[str],
                    out_hits: Sequence[Sequence[Hit]], label_of: LabelOf,
                    target: float, scorer: str = pol.COSINE,
                    ) -> tuple[float, float, dict[str, float]]:
    """(answer, faq, metrics) from scored in-scope and out-of-scope questions; the scores are
    ``scorer``'s (``policy.confidence``)."""
    fi = _features(in_hits, in_labels, label_of, scorer)
    fo = _features(out_hits, None, label_of, scorer)
    answer, p_answer, ok_a = pick_threshold(fi["top"], fi["src_ok"], fo["top"], target)
    faq_target = 1 - (1 - target) / 2
    faq, p_faq, ok_f = pick_threshold(fi["faq"], fi["faq_ok"], fo["faq"], faq_target)
    faq = max(faq, answer)  # the verbatim path is never looser than the answer path
    metrics = {
        "target_precision": target, "faq_target_precision": round(faq_target, 4),
        "answer_precision": p_answer, "faq_precision": p_faq,
        "answer_target_reached": float(ok_a), "faq_target_reached": float(ok_f),
        "in_scope": float(len(in_hits)), "out_of_scope": float(len(out_hits)),
    }
    return answer, faq, metrics


def calibrate_support(in_hits: Sequence[Sequence[Hit]], in_labels: Sequence[str],
                      answers: Sequence[tuple[str, str]], label_of: LabelOf, target: float,
                      seed: int = 0) -> tuple[float, dict[str, float]]:
    """Support threshold: sentences of answers to *other* questions (label differs from every
    source's) must pass the check at most ``1 - target`` of the time."""
    rng = random.Random(seed)
    coverage: list[float] = []
    for hits, _label in zip(in_hits, in_labels, strict=True):
        sources = list(hits[: prompt.MAX_SOURCES])
        source_labels = {label_of(h) for h in sources}
        vocabulary = grounding.source_vocabulary(sources)
        for _ in range(20):  # find an answer that none of the sources is about
            other_label, other_answer = answers[rng.randrange(len(answers))]
            if other_label not in source_labels:
                break
        for sentence in grounding.sentences(other_answer):
            value = grounding.sentence_coverage(sentence, vocabulary)
            if value is not None:
                coverage.append(value)
    if not coverage:
        return pol.DEFAULT_THRESHOLDS.support, {"support_negatives": 0.0}
    values = np.array(coverage)
    # q: the coverage that ``target`` of the negatives do not exceed. The threshold sits halfway
    # between q and the next coverage level observed above it (or 1.0), so that at most
    # 1 - target of the negatives reach it, with a margin on both sides.
    q = float(np.quantile(values, target, method="higher"))
    above = [v for v in np.unique(np.append(values, 1.0)) if v > q]
    threshold = round((q + float(above[0])) / 2, 4) if above else 1.0
    passed = float((values >= threshold).mean())
    return threshold, {"support_negatives": float(len(values)),
                       "support_negative_pass_rate": round(passed, 4)}


def route_metrics(in_hits: Sequence[Sequence[Hit]], in_labels: Sequence[str],
                  out_hits: Sequence[Sequence[Hit]], label_of: LabelOf,
                  thresholds: pol.Thresholds, settings: Settings,
                  in_texts: Sequence[str] = (), out_texts: Sequence[str] = ()) -> dict[str, Any]:
    """Route every question with the real policy (no generation) and count the outcomes.
    ``in_scope_correct``: answered with a source of the right label (top FAQ for the verbatim
    path, any prompt source for generation)."""
    policy = pol.Policy(settings)
    answered = correct = faq = 0
    for i, (hits, label) in enumerate(zip(in_hits, in_labels, strict=True)):
        text = in_texts[i] if in_texts else ""
        decision = policy.decide(text, hits, (), thresholds)
        if decision.route in (Route.FAQ, Route.GENERATED):
            answered += 1
            faq += decision.route == Route.FAQ
            correct += label in {label_of(h) for h in decision.sources}
    fallback = 0
    for i, hits in enumerate(out_hits):
        text = out_texts[i] if out_texts else ""
        decision = policy.decide(text, hits, (), thresholds)
        fallback += decision.route in (Route.FALLBACK, Route.HANDOFF)
    n_in, n_out = max(len(in_hits), 1), max(len(out_hits), 1)
    return {
        "in_scope": len(in_hits), "out_of_scope": len(out_hits),
        "in_scope_answered": round(answered / n_in, 4),
        "in_scope_correct": round(correct / n_in, 4),
        "in_scope_faq_verbatim": round(faq / n_in, 4),
        "oos_fallback": round(fallback / n_out, 4),
    }


Fold = tuple[list[Document], list[tuple[str, str]]]


def _held_out_folds(documents: Sequence[Document]) -> list[Fold]:
    """For each fold j: the documents without their j-th alternative, and (phrasing, record_id)."""
    faqs = [d for d in documents if d.kind == "faq"]
    folds = min(MAX_FOLDS, max((len(d.alternatives) for d in faqs), default=0))
    result = []
    for j in range(folds):
        held: list[tuple[str, str]] = []
        docs: list[Document] = []
        for d in documents:
            if d.kind == "faq" and len(d.alternatives) > j:
                held.append((d.alternatives[j], d.record_id))
                alts = d.alternatives[:j] + d.alternatives[j + 1:]
                d = dataclasses.replace(d, alternatives=alts)
            docs.append(d)
        result.append((docs, held))
    return result


def rerank_all(reranker: Any, texts: Sequence[str], hits_list: Sequence[Sequence[Hit]], k: int,
               *, desc: str = "rerank", progress: bool = False) -> list[list[Hit]]:
    """Each question's hits through the reranker (gate included, as serving does), cut to ``k``."""
    from tqdm import tqdm

    return [list(reranker.rerank(text, (), hits).hits[:k])
            for text, hits in tqdm(list(zip(texts, hits_list, strict=True)), desc=desc,
                                   disable=not progress, leave=False)]


def make_reranker(settings: Settings) -> Any:
    """The reranker ``CHATBOT_RERANKER`` asks for, or None when it is off."""
    if settings.reranker.strip().lower() == "off":
        return None
    from chatbot.retrieval.rerank import Reranker

    return Reranker(settings)


@dataclasses.dataclass
class Scored:
    """The calibration questions with the hits the policy would route on (reranked when a
    reranker is set): held-out phrasings (``in_*``) and out-of-scope questions (``out_*``)."""

    in_hits: list[list[Hit]]
    in_labels: list[str]
    in_texts: list[str]
    out_hits: list[list[Hit]]
    out_texts: list[str]
    documents: list[Document]
    scorer: str
    reranker: Any = None


def score_questions(settings: Settings, *, embedder: Embedder | None = None,
                    progress: bool = True, out_of_scope: Path | None = None,
                    reranker: Any = None) -> Scored:
    """Search (and rerank) every calibration question of the knowledge base in ``settings``
    (see the module docstring). ``reranker``: default the one the settings ask for."""
    from chatbot.knowledge.ingest import load_knowledge_base
    from chatbot.retrieval.embedder_tuning import active_tuning
    from chatbot.retrieval.rerank import held_for_calibration, search_depth
    from chatbot.retrieval.search import Retriever, search_all

    kb = settings.knowledge_base
    oos_path = out_of_scope or (kb if kb.is_dir() else kb.parent) / "out_of_scope.txt"
    oos = read_out_of_scope(oos_path)
    documents = load_knowledge_base(kb)
    folds = _held_out_folds(documents)
    if not folds:
        raise ConfigError(f"no FAQ in {kb} has alternative phrasings: calibration needs them "
                          "as held-out in-scope questions (add some in the alternatives column)")
    base = embedder or Embedder(settings)
    cached = ReusingEmbedder(base)  # each phrasing embedded once
    if reranker is None:
        reranker = make_reranker(settings)
    k = max(settings.top_k, prompt.MAX_SOURCES)
    search_k = k if reranker is None else search_depth(settings)
    # A reranker or a tuned embedder trained on the rest (see the module docstring).
    if reranker is not None or active_tuning(base.settings) is not None:
        folds = [(docs, [(q, r) for q, r in held if held_for_calibration(q)])
                 for docs, held in folds]
        oos = [q for q in oos if held_for_calibration(q)]
    scored = Scored([], [], [], [], oos, list(documents),
                    pol.COSINE if reranker is None else reranker.scorer_id, reranker)
    for j, (docs, held) in enumerate(folds):
        retriever = Retriever.from_documents(docs, settings, cached)
        texts = [q for q, _ in held]
        hits = search_all(retriever, texts, k=search_k, desc=f"fold {j + 1}", progress=progress)
        if reranker is not None:
            hits = rerank_all(reranker, texts, hits, k, desc=f"rerank fold {j + 1}",
                              progress=progress)
        scored.in_hits += hits
        scored.in_labels += [r for _, r in held]
        scored.in_texts += texts
    full = Retriever.from_documents(documents, settings, cached)
    scored.out_hits = search_all(full, oos, k=search_k, desc="out of scope", progress=progress)
    if reranker is not None:
        scored.out_hits = rerank_all(reranker, oos, scored.out_hits, k,
                                     desc="rerank out of scope", progress=progress)
    return scored


def _record_id(hit: Hit) -> str:
    return hit.document.record_id


def thresholds_for(scored: Scored, settings: Settings, target: float
                   ) -> tuple[pol.Thresholds, dict[str, Any]]:
    """The thresholds for ``target`` from scored questions, and the routes they give there."""
    answer, faq, metrics = pick_thresholds(scored.in_hits, scored.in_labels, scored.out_hits,
                                           _record_id, target, scored.scorer)
    answers = [(d.record_id, d.answer) for d in scored.documents if d.kind == "faq"]
    support, support_metrics = calibrate_support(scored.in_hits, scored.in_labels, answers,
                                                 _record_id, target, settings.seed)
    reranker = scored.reranker
    scored_by = "" if reranker is None else f", reranker {reranker.weights_dir}"
    thresholds = pol.Thresholds(
        answer=answer, faq=faq, support=support,
        source=f"chatbot calibrate on {settings.knowledge_base} ({len(scored.in_hits)} held-out "
        f"phrasings, {len(scored.out_texts)} out-of-scope questions, target precision "
        f"{target}{scored_by}) at {datetime.now(UTC).isoformat(timespec='seconds')}",
        metrics={**metrics, **support_metrics}, scorer=scored.scorer,
    )
    report = route_metrics(scored.in_hits, scored.in_labels, scored.out_hits, _record_id,
                           thresholds, settings, scored.in_texts, scored.out_texts)
    return thresholds, report


def calibrate(settings: Settings, *, embedder: Embedder | None = None, progress: bool = True,
              out_of_scope: Path | None = None, reranker: Any = None,
              ) -> tuple[pol.Thresholds, dict[str, Any]]:
    """Calibrate on the knowledge base in ``settings``; returns (thresholds, report). The caller
    stores the thresholds with the index (``chatbot.retrieval.index.write_thresholds``).
    ``reranker``: the scorer to calibrate (default: the one the settings ask for)."""
    scored = score_questions(settings, embedder=embedder, progress=progress,
                             out_of_scope=out_of_scope, reranker=reranker)
    thresholds, report = thresholds_for(scored, settings, settings.target_precision)
    if scored.reranker is not None:
        report["reranker"] = {"weights": str(scored.reranker.weights_dir),
                              **scored.reranker.stats}
    return thresholds, {"thresholds": thresholds.to_json(), "calibration_set": report}
