"""Evaluate retrieval on any labelled CSV pair: build a throw-away index from one file, query it
with the other, and count a hit when a top-k document carries the query's label.

Used by `chatbot eval-retrieval` and by the retrieval benchmark, so both report the same
numbers the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from chatbot.config import Settings
from chatbot.evaluation.datasets import LabelledText, documents_from_rows, read_labelled_csv
from chatbot.evaluation.metrics import percentile_ms
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.search import Mode, Retriever, timed_search


def score_queries(
    retriever: Retriever,
    queries: Sequence[LabelledText],
    *,
    k: int = 5,
    mode: Mode = "hybrid",
    progress: bool = False,
) -> dict[str, Any]:
    """recall@1, recall@k, MRR@k and per-query latency (embed + search + fuse)."""
    hits_at_1 = hits_at_k = 0
    reciprocal = 0.0
    latencies: list[float] = []
    retriever.search(queries[0].text, k=k, mode=mode)  # warm-up: model load, first-call costs
    for query in tqdm(queries, desc=f"queries ({mode})", disable=not progress, leave=False):
        # Cache off: every mode pays for its own query embedding, as a new question would.
        with retriever.embedder.no_cache():
            hits, ms = timed_search(retriever, query.text, k=k, mode=mode)
        latencies.append(ms)
        labels = [h.document.category for h in hits]
        if labels[:1] == [query.label]:
            hits_at_1 += 1
        if query.label in labels:
            hits_at_k += 1
            reciprocal += 1.0 / (labels.index(query.label) + 1)
    n = len(queries)
    return {
        "n": n,
        "recall@1": round(hits_at_1 / n, 4),
        f"recall@{k}": round(hits_at_k / n, 4),
        "mrr": round(reciprocal / n, 4),
        "p50_ms": percentile_ms(latencies, 50),
        "p95_ms": percentile_ms(latencies, 95),
    }


def eval_retrieval(
    kb: Path,
    queries: Path,
    *,
    text_col: str,
    label_col: str,
    settings: Settings,
    k: int = 5,
    modes: Sequence[Mode] = ("hybrid",),
    embedder: Embedder | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Index ``kb`` in memory, query it with ``queries``; one result block per mode."""
    documents = documents_from_rows(read_labelled_csv(kb, text_col, label_col))
    test = read_labelled_csv(queries, text_col, label_col)
    retriever = Retriever.from_documents(documents, settings, embedder, progress=progress)
    results = {
        mode: score_queries(retriever, test, k=k, mode=mode, progress=progress) for mode in modes
    }
    if len(modes) == 1:
        return {**results[modes[0]], "mode": modes[0], "documents": len(documents)}
    return {"documents": len(documents), "modes": results}
