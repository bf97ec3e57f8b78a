"""Evaluate retrieval on any labelled CSV pair: build a throw-away index from one file, query it
with the other, and count a hit when a top-k document carries the query's label.

Used by `chatbot eval-retrieval` and by the retrieval benchmark, so both report the same
numbers the same way.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from chatbot.config import Settings
from chatbot.errors import IngestError
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.search import Mode, Retriever, timed_search
from chatbot.types import Document


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str
    answer: str = ""


def read_columns(path: Path, columns: Sequence[str]) -> list[tuple[str, ...]]:
    """The given columns of every row; names the file and line of an empty cell."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as error:
        raise IngestError(str(path), None, f"cannot open: {error.strerror}") from error
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for column in columns:
            if column not in header:
                raise IngestError(str(path), 1, f"no column '{column}'",
                                  f"columns are {', '.join(header)}")
        rows = []
        try:
            for row in reader:
                values = tuple((row.get(c) or "").strip() for c in columns)
                if not all(values):
                    raise IngestError(str(path), reader.line_num,
                                      f"empty value in {', '.join(columns)}")
                rows.append(values)
        except UnicodeDecodeError as error:
            raise IngestError(str(path), reader.line_num, "not valid UTF-8") from error
    if not rows:
        raise IngestError(str(path), None, "no rows")
    return rows


def read_labelled_csv(
    path: Path, text_col: str, label_col: str, answer_col: str | None = None
) -> list[LabelledText]:
    """Rows of a CSV as (text, label[, answer]); names the file and line of a bad row."""
    columns = (text_col, label_col, *((answer_col,) if answer_col else ()))
    return [LabelledText(*values) for values in read_columns(path, columns)]


def documents_from_rows(rows: Sequence[LabelledText]) -> list[Document]:
    """One document per row, its label kept as the category (what a hit is judged by)."""
    documents = []
    for i, row in enumerate(rows):
        record_id = f"row-{i}"
        documents.append(
            Document(
                id=Document.content_hash(
                    kind="faq", record_id=record_id, question=row.text,
                    answer=row.answer, category=row.label,
                ),
                record_id=record_id, kind="faq", question=row.text, answer=row.answer,
                category=row.label, source=f"row:{i + 2}",
            )
        )
    return documents


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
    latencies.sort()
    return {
        "n": n,
        "recall@1": round(hits_at_1 / n, 4),
        f"recall@{k}": round(hits_at_k / n, 4),
        "mrr": round(reciprocal / n, 4),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(latencies[min(n - 1, int(0.95 * n))], 2),
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
