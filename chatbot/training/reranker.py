"""Train the reranker (`chatbot finetune reranker`): a MiniLM cross-encoder that reads
(question + recent turns, candidate question + answer) and learns whether the candidate answers.

Steps:

1. **Pairs** (``build_pairs``) from the knowledge base, with the candidates the retriever really
   returns (hard negatives: what the first stage confuses):
   - every FAQ phrasing (question and alternatives) against its FAQ (1) and the other documents
     retrieved for it (0); a quarter of them get an unrelated earlier customer turn, and that
     turn's FAQ becomes one more negative, so the current question is what counts;
   - every dialogue customer turn (with its earlier turns) whose agent reply says what an FAQ
     says (answer cosine >= ``MAP_ANSWER_COSINE`` and the FAQ among the turn's retrieved hits)
     against that FAQ (1) and the other retrieved FAQs (0); a turn whose reply is far from every
     FAQ answer (< ``UNANSWERED_COSINE``: account-specific, or a product question no FAQ covers)
     against its retrieved FAQs (0), the near-domain questions the bot must decline; turns in
     between are left out, their label would be a guess;
   - every out-of-scope question against its retrieved hits (0);
   - optionally Bitext's 80% training split: a request against its own response (1) and
     responses of other intents (0).
   Alternatives and out-of-scope questions ``held_for_calibration`` are never trained on and are
   removed from the training index: calibration and the held-out metric below use them.
2. **Training**: binary cross-entropy on the logit, AdamW with linear warm-up and decay, the top
   ``train_layers`` layers + pooler + head trained (``new_cross_encoder``), length-sorted batches.
3. **Held-out check**: on the held-out phrasings, how often the right FAQ is first among the
   retrieved candidates in the first stage's order and after reranking; and the mean
   probability of the best candidate of held-out out-of-scope questions.
4. **Save** in compact form (``save_compact``) with the data counts and metrics in its JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from chatbot.config import Settings
from chatbot.errors import ConfigError
from chatbot.retrieval.rerank import (
    DEFAULT_MAX_LENGTH,
    FUSION_FEATURES,
    CrossScorer,
    candidate_text,
    candidates,
    fuse,
    held_for_calibration,
    hit_features,
    new_cross_encoder,
    query_text,
    save_compact,
    search_depth,
)
from chatbot.types import Document, Hit, Turn

MAP_ANSWER_COSINE = 0.6  # an agent reply this close to an FAQ answer says what the FAQ says
# An agent reply this far from every FAQ answer says something no FAQ says: its customer turn
# is a near-domain question the FAQs do not answer (what off-topic lists lack).
UNANSWERED_COSINE = 0.4
HISTORY_SHARE = 0.25  # FAQ phrasings asked after an unrelated earlier turn
FUSION_SHARE = 0.15  # training questions kept for fitting the fusion (see rerank.fuse)


@dataclass(frozen=True)
class Pair:
    query: str
    candidate: str
    label: float
    kind: str  # faq, dialogue, oos, bitext
    # The first stage's features of the candidate (``rerank.hit_features``) when retrieval
    # returned it for this question; None for a positive retrieval missed (and Bitext).
    features: tuple[float, ...] | None = None


def for_fusion(pair: Pair, share: float = FUSION_SHARE) -> bool:
    """Whether the pair's question is kept out of the cross-encoder's training to fit the
    fusion on (a hash of the question, salted: independent of ``held_for_calibration``)."""
    question = pair.query.split(" | earlier: ")[0].strip().lower()
    digest = hashlib.sha256(("fusion:" + question).encode("utf-8")).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF < share


def _without_held(documents: Sequence[Document]) -> list[Document]:
    """The documents with held-out alternatives removed (the training index)."""
    return [dataclasses.replace(d, alternatives=tuple(a for a in d.alternatives
                                                      if not held_for_calibration(a)))
            if d.kind == "faq" else d for d in documents]


def _group(record_id: str) -> str:
    return record_id.split("#", 1)[0]


def _labelled(hits: Sequence[Hit], positive: str | None, mapped: dict[str, str | None],
              exclude_group: str | None) -> list[tuple[Hit, float]]:
    """(hit, label) for the retrieved hits, best-ranked first: an FAQ is 1 when it is the
    positive, else 0; a dialogue turn is 1 or 0 when it maps to an FAQ (the positive or another)
    and is left out when it maps to none (its label would be a guess) or is the query's own."""
    out = []
    for hit in hits:
        record_id = hit.document.record_id
        if record_id == positive:
            continue  # added once, explicitly
        if hit.document.kind == "faq":
            out.append((hit, 0.0))
            continue
        if exclude_group is not None and _group(record_id) == exclude_group:
            continue
        if positive is None:  # nothing answers an out-of-scope question
            out.append((hit, 0.0))
        elif mapped.get(record_id) is not None:
            out.append((hit, float(mapped[record_id] == positive)))
    return out


def map_turns(documents: Sequence[Document], retriever: Any, k: int = 10
              ) -> dict[str, str | None]:
    """Dialogue turn record id -> the FAQ its agent reply says, or None for a turn no FAQ
    answers (its reply is below ``UNANSWERED_COSINE`` to every FAQ answer); turns in between
    are left out (see the module docstring)."""
    faqs = [d for d in documents if d.kind == "faq"]
    turns = [d for d in documents if d.kind == "dialogue"]
    if not faqs or not turns:
        return {}
    embedder = retriever.embedder
    faq_vectors = np.asarray(embedder.encode([d.answer for d in faqs]), dtype=np.float32)
    reply_vectors = np.asarray(embedder.encode([d.answer for d in turns]), dtype=np.float32)
    best = (reply_vectors @ faq_vectors.T)
    mapped: dict[str, str | None] = {}
    for i, turn in enumerate(turns):
        j = int(np.argmax(best[i]))
        if best[i, j] < UNANSWERED_COSINE:
            mapped[turn.record_id] = None
            continue
        if best[i, j] < MAP_ANSWER_COSINE:
            continue
        hits = retriever.search(turn.question, turn.context, k=k)
        if any(h.document.record_id == faqs[j].record_id for h in hits):
            mapped[turn.record_id] = faqs[j].record_id
    return mapped


def build_pairs(documents: Sequence[Document], retriever: Any, out_of_scope: Sequence[str], *,
                settings: Settings, negatives: int = 5, seed: int = 0,
                progress: bool = True) -> tuple[list[Pair], dict[str, int]]:
    """Training pairs (see the module docstring) and how many of each kind. The candidates are
    the ones the reranker scores when serving (``rerank.candidates`` of the settings)."""
    rng = random.Random(seed)
    depth = search_depth(settings)

    def search(question: str, history: Sequence[Turn] = ()) -> list[Hit]:
        return candidates(settings, retriever.search(question, history, k=depth))

    turns = settings.history_turns
    by_id = {d.record_id: d for d in documents}
    faqs = [d for d in documents if d.kind == "faq"]
    pairs: list[Pair] = []

    mapped = map_turns(documents, retriever)

    def add(query: str, hits: Sequence[Hit], positive: Document | None, kind: str,
            exclude_group: str | None = None, also: Document | None = None) -> None:
        """Pairs for one question: the positive, the best-ranked negatives, and ``also`` (a
        negative that need not be among the hits)."""
        features = hit_features(hits)
        row = {h.document.record_id: i for i, h in enumerate(hits)}

        def pair(document: Document, label: float) -> Pair:
            i = row.get(document.record_id)
            return Pair(query, candidate_text(document), label, kind,
                        None if i is None else tuple(float(x) for x in features[i]))

        if positive is not None:
            pairs.append(pair(positive, 1.0))
        labelled = _labelled(hits, positive.record_id if positive else None, mapped,
                             exclude_group)
        chosen = [x for x in labelled if x[1] == 0.0][:negatives]
        chosen += [x for x in labelled if x[1] == 1.0][:1]  # a dialogue saying the same
        pairs.extend(pair(hit.document, label) for hit, label in chosen)
        if also is not None and all(also.record_id != h.document.record_id for h, _ in chosen):
            pairs.append(pair(also, 0.0))

    phrasings = [(p, d) for d in faqs for p in d.phrasings if not held_for_calibration(p)]
    for phrasing, doc in tqdm(phrasings, desc="FAQ phrasings", disable=not progress,
                              leave=False):
        history: tuple[Turn, ...] = ()
        other = None
        if len(faqs) > 1 and rng.random() < HISTORY_SHARE:
            other = rng.choice([f for f in faqs if f.record_id != doc.record_id])
            history = (Turn("customer", rng.choice(other.phrasings)),)
        query = query_text(phrasing, history, turns)
        add(query, search(phrasing, history), doc, "faq", also=other)

    for turn in tqdm([d for d in documents if d.kind == "dialogue"], desc="dialogue turns",
                     disable=not progress, leave=False):
        if turn.record_id not in mapped:
            continue
        faq_id = mapped[turn.record_id]
        hits = search(turn.question, turn.context)
        query = query_text(turn.question, turn.context, turns)
        if faq_id is None:  # no FAQ answers it: every FAQ candidate is a negative
            add(query, [h for h in hits if h.document.kind == "faq"], None, "unanswered")
            continue
        add(query, hits, by_id[faq_id], "dialogue", _group(turn.record_id))

    for question in out_of_scope:
        if not held_for_calibration(question):
            add(question, search(question), None, "oos")
    return pairs, dict(Counter(f"{p.kind}_{'pos' if p.label else 'neg'}" for p in pairs))


def bitext_pairs(path: Path, limit: int, negatives: int, seed: int) -> list[Pair]:
    """Bitext's 80% split: each request with its response (1) and other intents' (0)."""
    from chatbot.evaluation.datasets import bitext_split

    rng = random.Random(seed)
    rows = bitext_split(path)[0]
    rows = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, min(limit, len(rows)))]
    pairs = []
    for row in rows:
        pairs.append(Pair(row["instruction"], row["response"], 1.0, "bitext"))
        others = [r for r in rng.sample(rows, min(len(rows), negatives * 3))
                  if r["intent"] != row["intent"]][:negatives]
        pairs += [Pair(row["instruction"], r["response"], 0.0, "bitext") for r in others]
    return pairs


def held_out_check(score: Callable[[str, list[Hit]], np.ndarray], documents: Sequence[Document],
                   retriever: Any, out_of_scope: Sequence[str], *, settings: Settings
                   ) -> dict[str, float]:
    """Top-1 accuracy among the retrieved FAQ candidates on held-out phrasings (retrieval order
    and reranked by ``score(question, hits) -> probabilities``) and the mean best probability on
    held-out out-of-scope questions."""
    questions = [(a, d.record_id) for d in documents if d.kind == "faq"
                 for a in d.alternatives if held_for_calibration(a)]
    before = after = found = 0
    positive_probability: list[float] = []
    for question, record_id in questions:
        hits = candidates(settings, retriever.search(question, k=search_depth(settings)))
        ids = [h.document.record_id for h in hits]
        if record_id not in ids:
            continue
        found += 1
        probabilities = score(question, hits)
        faq = [i for i, h in enumerate(hits) if h.document.kind == "faq"]  # what the FAQ
        before += ids[faq[0]] == record_id  # route picks from: retrieval's order, then the
        after += ids[max(faq, key=lambda i: probabilities[i])] == record_id  # reranker's
        positive_probability.append(float(probabilities[ids.index(record_id)]))
    oos = [q for q in out_of_scope if held_for_calibration(q)]
    oos_best = [float(score(q, candidates(settings, retriever.search(
        q, k=search_depth(settings)))).max()) for q in oos]
    n = max(found, 1)
    return {"held_out_phrasings": float(len(questions)), "right_faq_in_candidates": float(found),
            "top1_retrieval": round(before / n, 4), "top1_reranked": round(after / n, 4),
            "mean_probability_right_faq": round(float(np.mean(positive_probability or [0])), 4),
            "held_out_oos": float(len(oos)),
            "mean_best_probability_oos": round(float(np.mean(oos_best or [0])), 4)}


def _batches(pairs: Sequence[Pair], batch_size: int, rng: random.Random) -> list[list[Pair]]:
    """Shuffled batches of similar lengths (less padding on the CPU)."""
    order = list(pairs)
    rng.shuffle(order)
    chunk = batch_size * 16
    groups = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda p: len(p.query) + len(p.candidate))
        groups += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(groups)
    return groups


# L2 strength of the fusion on standardised features. The fusion's pairs come from the training
# distribution (FAQ phrasings, dialogue turns), where the cross-encoder is more reliable than on
# real customer messages; on the demo dev split (bench/data/demo_heldout.jsonl, dev only) an
# unregularised fit (C=1) ranked the right FAQ first for 0.68 of in-scope messages, the cosine
# alone 0.72, C=0.03 0.74, with the best separation from unanswerable messages (AUC 0.82).
FUSION_C = 0.03


def fit_fusion(logits: np.ndarray, pairs: Sequence[Pair], c: float = FUSION_C
               ) -> dict[str, Any] | None:
    """Logistic regression of the label on (logit, first-stage features), standardised and L2
    regularised (``FUSION_C``), over pairs the cross-encoder did not train on; returned in the
    raw features' units. None when the pairs cannot support one (one class, too few)."""
    from sklearn.linear_model import LogisticRegression

    rows = [i for i, p in enumerate(pairs) if p.features is not None]
    labels = np.array([pairs[i].label for i in rows])
    if len(rows) < 20 or labels.min() == labels.max():
        return None
    x = np.column_stack([logits[rows], np.array([pairs[i].features for i in rows])])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, max_iter=1000).fit((x - mean) / scale, labels)
    weights = model.coef_[0] / scale
    bias = float(model.intercept_[0] - (model.coef_[0] * mean / scale).sum())
    return {"features": list(FUSION_FEATURES), "weights": [round(float(w), 6) for w in weights],
            "bias": round(bias, 6), "pairs": len(rows), "c": c}


def finetune_reranker(settings: Settings, *, output: Path, epochs: int = 3,
                      batch_size: int = 16, lr: float = 1e-4, head_lr: float = 2e-3,
                      negatives: int = 4, train_layers: int = 6, body_layers: int | None = None,
                      max_length: int = DEFAULT_MAX_LENGTH, minutes: float = 0.0,
                      bitext: Path | None = None, bitext_limit: int = 2000,
                      documents: Sequence[Document] | None = None,
                      out_of_scope: Sequence[str] | None = None, max_steps: int = 0,
                      progress: bool = True) -> dict[str, Any]:
    """Build the pairs, train, fit the fusion, check on held-out data and save; returns the
    metrics. ``minutes`` > 0 stops training after that long (the schedule still decays as
    planned for the full run)."""
    import torch

    from chatbot.retrieval.search import Retriever
    from chatbot.training.setup import knowledge, seeded

    rng = seeded(settings)
    kb = settings.knowledge_base
    documents, off_topic = knowledge(settings, documents)
    if out_of_scope is None:
        out_of_scope = off_topic
    started = time.perf_counter()
    retriever = Retriever.from_documents(_without_held(documents), settings, progress=progress)
    pairs, counts = build_pairs(documents, retriever, out_of_scope, settings=settings,
                                negatives=negatives, seed=settings.seed, progress=progress)
    if bitext is not None:
        extra = bitext_pairs(bitext, bitext_limit, negatives, settings.seed)
        counts["bitext"] = len(extra)
        pairs += extra
    if not any(p.label for p in pairs) or all(p.label for p in pairs):
        raise ConfigError(f"too little training data in {kb}: the reranker needs FAQs with "
                          "phrasings and retrieved candidates that are not the answer")
    held = [p for p in pairs if p.kind != "bitext" and for_fusion(p)]
    train = [p for p in pairs if p.kind == "bitext" or not for_fusion(p)]
    data_seconds = time.perf_counter() - started

    model, tokenizer = new_cross_encoder(train_layers=train_layers, body_layers=body_layers)
    scorer = CrossScorer(model, tokenizer, max_length=max_length, batch_size=64)
    # The new head (and the pooler, unused by the sentence model) learn faster than the body.
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in named if n.startswith(("classifier", "bert.pooler"))]
    body = [p for n, p in named if not n.startswith(("classifier", "bert.pooler"))]
    optimizer = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}],
                                  weight_decay=0.01)
    plan = [_batches(train, batch_size, rng) for _ in range(epochs)]
    total = sum(len(b) for b in plan) if not max_steps else min(max_steps, sum(map(len, plan)))
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup + 1))))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    steps, losses = 0, []
    train_started = time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc="training reranker", disable=not progress)
    for batch in (b for batches in plan for b in batches):
        out_of_time = minutes and time.perf_counter() - train_started > minutes * 60
        if steps >= total or out_of_time:
            break
        features = scorer.encode([(p.query, p.candidate) for p in batch])
        loss = loss_fn(model(**features).logits[:, 0], torch.tensor([p.label for p in batch]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(body + head, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    bar.close()
    seconds = time.perf_counter() - train_started
    model.eval()
    fusion = fit_fusion(scorer.logits([(p.query, p.candidate) for p in held]), held)

    def score(question: str, hits: list[Hit]) -> np.ndarray:
        logits = scorer.logits([(question, candidate_text(h)) for h in hits])
        return fuse(logits, hit_features(hits), fusion)

    after = held_out_check(score, documents, retriever, out_of_scope, settings=settings)
    metrics: dict[str, Any] = {
        "pairs": len(pairs), "pair_counts": counts, "train_pairs": len(train),
        "fusion_pairs": len(held), "steps": steps, "planned_steps": total, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "head_lr": head_lr, "negatives": negatives,
        "train_layers": train_layers, "body_layers": int(model.config.num_hidden_layers),
        "max_length": max_length, "rerank_top_n": settings.rerank_top_n,
        "rerank_dialogues": settings.rerank_dialogues, "threads": settings.resolved_threads,
        "data_seconds": round(data_seconds, 1), "train_seconds": round(seconds, 1),
        "pairs_per_s": round(steps * batch_size / seconds, 1) if seconds else 0.0,
        "final_loss": round(float(np.mean(losses[-50:])), 4) if losses else None,
        "fusion": fusion, "held_out": after,
        "knowledge_base": str(kb), "bitext": str(bitext or ""),
    }
    weights = save_compact(model, output, max_length=max_length, meta=metrics,
                           extra={"fusion": fusion})
    metrics.update(output=str(output), size_mb=round(weights.stat().st_size / 1e6, 2),
                   use_it=f"CHATBOT_RERANKER={output} chatbot calibrate")
    return metrics
