"""Fine-tune the retriever's embedder: `chatbot finetune embedder`.

Contrastive training on (question, answer) pairs with in-batch negatives
(sentence-transformers' ``MultipleNegativesRankingLoss``): each question should be closer to its
own answer than to the other answers in the batch. Pairs come from the FAQs (every phrasing with
its answer) and the dialogues (customer turn with the agent's reply), optionally Bitext's 80%
training split, or from labelled queries (``labelled``: each text paired with another text of the
same label, e.g. an intent dataset whose training queries are the indexed documents). No two
pairs in a batch share an answer or a group, so no in-batch negative is secretly a positive. A
held-out share of the groups (10% by default) measures recall@1 of question -> answer before and
after training.

``tune_embedder`` (``chatbot finetune embedder --tuning``) trains for routing instead: pairs of
phrasings of the same FAQ (its question and alternatives, the customer's words the index holds),
with the knowledge base's off-topic questions as extra negatives, only the top layers, saved
compactly as an embedder tuning (``chatbot.retrieval.embedder_tuning``). Texts
``held_for_calibration`` stay out of training (calibration asks them), and their top-1 against
the trained phrasings is reported before and after.

The loop is written out (a dozen lines) instead of using the library's trainer, which needs the
``datasets`` package that this project does not otherwise depend on.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from chatbot.config import Settings
from chatbot.errors import ConfigError, ModelError
from chatbot.types import Document


def pairs_from_documents(documents: Sequence[Document]) -> list[tuple[str, str, str]]:
    """(question, answer, group) for every FAQ phrasing and every dialogue turn."""
    pairs = []
    for doc in documents:
        group = doc.record_id.split("#", 1)[0]
        for phrasing in doc.phrasings:
            pairs.append((phrasing, doc.answer, group))
    return pairs


def pairs_from_labelled(rows: Sequence[tuple[str, str]],
                        rng: random.Random) -> list[tuple[str, str, str]]:
    """(text, another text with the same label, label) for every text whose label has two."""
    by_label: dict[str, list[str]] = {}
    for text, label in rows:
        by_label.setdefault(label, []).append(text)
    pairs = []
    for label, texts in sorted(by_label.items()):
        if len(texts) < 2:
            continue
        for i, text in enumerate(texts):
            j = rng.randrange(len(texts) - 1)
            pairs.append((text, texts[j + (j >= i)], label))  # any other text of the label
    return pairs


def tuning_rows(documents: Sequence[Document]) -> tuple[list[tuple[str, str]],
                                                         list[tuple[str, str]]]:
    """(phrasing, FAQ id) rows for ``--tuning``: (to train on, held for calibration). Phrasings
    ``held_for_calibration`` are never trained on: calibration asks them as customers' words."""
    from chatbot.retrieval.rerank import held_for_calibration

    train: list[tuple[str, str]] = []
    held: list[tuple[str, str]] = []
    for doc in documents:
        if doc.kind == "faq":
            for phrasing in doc.phrasings:
                (held if held_for_calibration(phrasing) else train).append(
                    (phrasing, doc.record_id))
    return train, held


def phrasing_recall(model: Any, index_rows: Sequence[tuple[str, str]],
                    queries: Sequence[tuple[str, str]], batch_size: int = 64) -> float:
    """Share of ``queries`` whose nearest ``index_rows`` phrasing has the query's label: how
    often dense routing would put the right FAQ first for a phrasing it never trained on."""
    if not queries or not index_rows:
        return 0.0
    kwargs = {"batch_size": batch_size, "normalize_embeddings": True, "convert_to_numpy": True}
    q = model.encode([t for t, _ in queries], **kwargs)
    a = model.encode([t for t, _ in index_rows], **kwargs)
    best = (q @ a.T).argmax(axis=1)
    hits = sum(index_rows[int(b)][1] == label for b, (_, label) in zip(best, queries,
                                                                         strict=True))
    return float(hits / len(queries))


def clash_free_batches(pairs: Sequence[tuple[str, str, str]],
                       batch_size: int) -> list[list[tuple[str, str, str]]]:
    """Full batches in which no two pairs share an answer or a group (an in-batch negative must
    not be a positive in disguise); a pair that clashes waits for a later batch, it is not
    dropped. Leftovers that cannot fill a batch are."""
    batches: list[list[tuple[str, str, str]]] = []
    waiting = list(pairs)
    while len(waiting) >= batch_size:
        current: list[tuple[str, str, str]] = []
        used: set[str] = set()
        later: list[tuple[str, str, str]] = []
        for pair in waiting:
            if len(current) == batch_size or pair[1] in used or pair[2] in used:
                later.append(pair)
                continue
            current.append(pair)
            used.update((pair[1], pair[2]))
        if len(current) < batch_size:
            break
        batches.append(current)
        waiting = later
    return batches


def _held_out(group: str, fraction: float) -> bool:
    return int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def recall_at_1(model: Any, pairs: Sequence[tuple[str, str, str]], batch_size: int = 64) -> float:
    """Share of questions whose nearest held-out answer belongs to their own group (their own
    FAQ or dialogue; for labelled queries, a text of the same label)."""
    groups: dict[str, set[str]] = {}
    for _, answer, group in pairs:
        groups.setdefault(answer, set()).add(group)
    answers = sorted(groups)
    q = model.encode([p[0] for p in pairs], batch_size=batch_size, normalize_embeddings=True,
                     convert_to_numpy=True)
    a = model.encode(answers, batch_size=batch_size, normalize_embeddings=True,
                     convert_to_numpy=True)
    best = (q @ a.T).argmax(axis=1)
    hits = sum(p[2] in groups[answers[int(b)]] for b, p in zip(best, pairs, strict=True))
    return float(hits / len(pairs))


def _load_body(settings: Settings) -> Any:
    """The embedding model to train: ``embedding_model`` or the shipped MiniLM, untuned."""
    from sentence_transformers import SentenceTransformer

    from chatbot.retrieval.embed import default_embedder_path

    location = settings.embedding_model or str(default_embedder_path())
    try:
        return SentenceTransformer(location, device="cpu")
    except Exception as error:  # the library raises several types for a bad model folder
        raise ModelError(f"cannot load embedding model {location}: {error}") from error


def _train(model: Any, train: list[tuple[str, str, str]], *, epochs: int, batch_size: int,
           lr: float, negatives: Sequence[str], rng: random.Random, max_steps: int,
           progress: bool) -> tuple[int, float]:
    """The contrastive loop over clash-free batches; (steps, seconds). With ``negatives``
    each pair also gets one of them (cycled) as a candidate no question may match."""
    import torch
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    loss_fn = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    steps = 0
    started = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        rng.shuffle(train)
        for batch in tqdm(clash_free_batches(train, batch_size), desc=f"epoch {epoch + 1}",
                          disable=not progress):
            features = [model.tokenize([p[0] for p in batch]),
                        model.tokenize([p[1] for p in batch])]
            if negatives:
                start = steps * len(batch)
                features.append(model.tokenize([negatives[(start + i) % len(negatives)]
                                                for i in range(len(batch))]))
            loss = loss_fn(features, torch.empty(0))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            if max_steps and steps >= max_steps:
                break
        if max_steps and steps >= max_steps:
            break
    model.eval()
    return steps, time.perf_counter() - started


def finetune_embedder(settings: Settings, *, output: Path, epochs: int = 1, batch_size: int = 32,
                      lr: float = 2e-5, bitext: Path | None = None, bitext_limit: int = 2000,
                      documents: Sequence[Document] | None = None, max_steps: int = 0,
                      labelled: Sequence[tuple[str, str]] | None = None,
                      eval_fraction: float = 0.1, progress: bool = True) -> dict[str, Any]:
    """Train, evaluate and save a whole model folder; ``labelled`` (text, label) rows replace
    the knowledge base's (question, answer) pairs."""
    from chatbot.knowledge.ingest import load_knowledge_base
    from chatbot.training.setup import seeded

    rng = seeded(settings)
    if labelled is not None:
        pairs = pairs_from_labelled(labelled, rng)
    else:
        if documents is None:
            documents = load_knowledge_base(settings.knowledge_base)
        pairs = pairs_from_documents(list(documents))
    if bitext is not None:
        from chatbot.evaluation.datasets import bitext_split

        rows = bitext_split(bitext)[0][:bitext_limit]
        pairs += [(r["instruction"], r["response"], f"bitext-{i}") for i, r in enumerate(rows)]
    train = [p for p in pairs if not _held_out(p[2], eval_fraction)]
    held = [p for p in pairs if _held_out(p[2], eval_fraction)]
    if len(train) < batch_size or not held:
        raise ConfigError(f"too few (question, answer) pairs to train ({len(pairs)}): add FAQs "
                          "or dialogues, or lower --batch-size")
    model = _load_body(settings)
    before = recall_at_1(model, held)
    steps, seconds = _train(model, train, epochs=epochs, batch_size=batch_size, lr=lr,
                            negatives=(), rng=rng, max_steps=max_steps, progress=progress)
    after = recall_at_1(model, held)
    output.mkdir(parents=True, exist_ok=True)
    model.save(str(output))
    metrics = {
        "pairs": len(pairs), "train_pairs": len(train), "held_out_pairs": len(held),
        "recall@1_before": round(before, 4), "recall@1_after": round(after, 4),
        "steps": steps, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "train_seconds": round(seconds, 1),
        "pairs_per_s": round(steps * batch_size / seconds, 2) if seconds else 0.0,
        "base_model": settings.embedding_model or "shipped all-MiniLM-L6-v2",
        "output": str(output),
        "use_it": f"CHATBOT_EMBEDDING_MODEL={output} chatbot reindex --full",
    }
    (output / "finetune_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics


def tune_embedder(settings: Settings, *, output: Path, epochs: int = 3, batch_size: int = 32,
                  lr: float = 1e-4, train_layers: int = 3,
                  documents: Sequence[Document] | None = None, max_steps: int = 0,
                  progress: bool = True) -> dict[str, Any]:
    """``chatbot finetune embedder --tuning``: train the top ``train_layers`` layers on the
    knowledge base's FAQ phrasings (each paired with another phrasing of its FAQ; the
    off-topic questions of ``out_of_scope.txt`` as extra negatives), leaving out every text
    ``held_for_calibration``; save them compactly (``save_tuning``) with the held-out
    phrasings' top-1 before and after."""
    from chatbot.retrieval.embedder_tuning import freeze_below, save_tuning
    from chatbot.retrieval.rerank import held_for_calibration
    from chatbot.training.setup import knowledge, seeded

    rng = seeded(settings)
    kb = settings.knowledge_base
    documents, off_topic = knowledge(settings, documents)
    rows, held = tuning_rows(documents)
    pairs = pairs_from_labelled(rows, rng)
    if len(pairs) < batch_size:
        raise ConfigError(f"too few FAQ phrasings to train on ({len(pairs)} pairs): add "
                          "alternatives to the FAQs, or lower --batch-size")
    negatives = [q for q in off_topic if not held_for_calibration(q)]
    model = _load_body(settings)
    freeze_below(model, train_layers)
    before = phrasing_recall(model, rows, held)
    steps, seconds = _train(model, pairs, epochs=epochs, batch_size=batch_size, lr=lr,
                            negatives=negatives, rng=rng, max_steps=max_steps, progress=progress)
    after = phrasing_recall(model, rows, held)
    metrics = {
        "knowledge_base": str(kb), "pairs": len(pairs), "faqs": len({r for _, r in rows}),
        "negatives": len(negatives), "held_out_phrasings": len(held),
        "held_out_top1_before": round(before, 4), "held_out_top1_after": round(after, 4),
        "steps": steps, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "train_layers": train_layers, "train_seconds": round(seconds, 1),
        "threads": settings.resolved_threads,
    }
    save_tuning(model, output, base=settings.embedding_model, meta=metrics)
    return {**metrics, "output": str(output),
            "use_it": f"CHATBOT_EMBEDDER_TUNING={output} chatbot reindex && chatbot calibrate"}
