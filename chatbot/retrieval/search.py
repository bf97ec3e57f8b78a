"""Retrieve: hybrid dense + keyword search over the index, fused into ranked ``Hit``s.

Dense search runs over every phrasing (question and alternatives) and keeps the best phrasing
per document; keyword search is BM25 over each document's phrasings and answer. The two are
fused either by a weighted sum of normalised scores (default: the dense cosine stays readable
as a confidence signal) or by reciprocal rank fusion. Every hit carries the true cosine of its
best phrasing, even when only keyword search found it, so routing can rely on it.

The last customer turns inform the dense query (a follow-up like "and to Canada?" needs the
earlier question); keyword search uses the current message only, so a topic change is not
drowned by history.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from chatbot.config import Settings
from chatbot.errors import IndexNotReadyError
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.index import (
    IndexData,
    active_version,
    build_index_data,
    load_index_data,
)
from chatbot.retrieval.text import keyword_stemmer, keyword_tokens
from chatbot.types import Document, Hit, Turn

log = logging.getLogger(__name__)

Mode = Literal["hybrid", "dense", "keyword"]


class Retriever:
    """Searches the active index version; ``reload()`` follows version changes on disk."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.embedder = embedder or Embedder(settings)
        self._data: IndexData | None = None
        self._lock = threading.Lock()
        self._stemmer = keyword_stemmer()
        self._static = False  # True for in-memory indexes that never reload from disk
        self._checked_at = 0.0  # monotonic time of the last look at the ACTIVE pointer

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        settings: Settings,
        embedder: Embedder | None = None,
        *,
        progress: bool = False,
    ) -> Retriever:
        """A throw-away in-memory index (evaluation, calibration); nothing is written."""
        retriever = cls(settings, embedder)
        retriever._data = build_index_data(
            documents, retriever.embedder, settings, progress=progress
        )
        retriever._data.manifest["version"] = "in-memory"
        retriever._static = True
        return retriever

    # --- lifecycle ------------------------------------------------------------------------------
    def _state(self) -> IndexData:
        data = self._data
        interval = self.settings.index_reload_interval_s
        if data is not None and interval and not self._static:
            # Replicas share the index directory: follow a version published elsewhere.
            now = time.monotonic()
            if now - self._checked_at >= interval:
                self._checked_at = now
                if active_version(self.settings) not in (None, data.version):
                    self.reload()
                    data = self._data
        if data is None:
            self.reload()
            data = self._data
        assert data is not None
        return data

    def reload(self) -> None:
        """Load the active version if it differs from the loaded one."""
        if self._static:
            return
        with self._lock:
            version = active_version(self.settings)
            if version is None:
                raise IndexNotReadyError(
                    f"no index in {self.settings.resolved_index_dir}: run `chatbot reindex`"
                )
            if self._data is not None and self._data.version == version:
                return
            data = load_index_data(self.settings.resolved_index_dir / version, self.settings)
            if data.manifest.get("embedding_model") != self.embedder.model_name:
                raise IndexNotReadyError(
                    f"index built with model {data.manifest.get('embedding_model')}, settings "
                    f"say {self.embedder.model_name}: run `chatbot reindex --full`"
                )
            self._data = data  # one assignment: concurrent searches see old or new, never half
            log.info("index %s loaded (%d documents)", version, len(data.documents))

    def ready(self) -> bool:
        try:
            self._state()
        except IndexNotReadyError:
            return False
        return True

    @property
    def index_version(self) -> str | None:
        return self._data.version if self._data is not None else active_version(self.settings)

    @property
    def manifest(self) -> dict[str, Any]:
        return self._state().manifest

    @property
    def documents(self) -> list[Document]:
        return self._state().documents

    def phrasing_vectors(self) -> dict[str, np.ndarray]:
        """The loaded index's vectors by phrasing text, for bulk jobs that would otherwise
        embed the same texts again (``ReusingEmbedder``)."""
        return self._state().phrasing_vectors()

    # --- search ---------------------------------------------------------------------------------
    def query_vectors(self, query: str, history: Sequence[Turn] = ()) -> list[np.ndarray]:
        """The query alone, plus the query blended with the recent customer turns if any.

        A customer turn is embedded once: it was the query of its own request, so its vector
        comes back from the embedder's query cache; turns that miss (answered by another
        replica, or evicted) are encoded with the query in one call."""
        recent = [t.text for t in history if t.role == "customer"][-self.settings.history_turns :]
        if not (recent and self.settings.history_turns and self.settings.history_weight > 0):
            return [np.asarray(self.embedder.encode_query(query), dtype=np.float32)]
        vector, *turns = (
            np.asarray(v, dtype=np.float32) for v in self.embedder.encode_queries([query, *recent])
        )
        context = np.mean(turns, axis=0)
        weight = self.settings.history_weight
        blended = (1.0 - weight) * vector + weight * context
        blended = blended / (np.linalg.norm(blended) or 1.0)
        return [vector, np.asarray(blended, dtype=np.float32)]

    def search(
        self,
        query: str,
        history: Sequence[Turn] = (),
        k: int | None = None,
        *,
        mode: Mode = "hybrid",
    ) -> list[Hit]:
        """The top ``k`` documents for ``query`` (1-based ranks, best first)."""
        data = self._state()
        k = k or self.settings.top_k
        n_docs = len(data.documents)
        candidates = min(max(self.settings.candidates, k), n_docs)

        # Dense: a document's score is the best cosine over its phrasings and over the query
        # vectors. With history, both the question alone and the blend count: the blend finds
        # follow-ups ("and to Canada?"), the question alone keeps a topic change as confident
        # as it would be in a new conversation.
        dense: dict[int, float] = {}
        matched: dict[int, int] = {}
        vectors = self.query_vectors(query, history) if mode != "keyword" else []
        # Several phrasings per document: over-fetch phrasings, keep the best per document.
        fetch = min(len(data.phrase_doc), candidates * 4)
        for vector in vectors:
            docs, scores, rows = _best_per_document(data, vector, fetch, candidates)
            for doc, score, row in zip(docs, scores, rows, strict=True):
                if score > dense.get(doc, -2.0):
                    dense[doc], matched[doc] = score, row

        keyword: dict[int, float] = {}
        if mode != "dense":
            tokens = keyword_tokens([query], self._stemmer)[0]
            if tokens:
                all_scores = data.bm25.get_scores(tokens)
                top = np.argpartition(-all_scores, candidates - 1)[:candidates]
                top = top[all_scores[top] > 0]
                keyword = dict(zip(top.tolist(), all_scores[top].tolist(), strict=True))

        dense_rank = _ranks(dense)
        keyword_rank = _ranks(keyword)
        pool = set(dense) | set(keyword)
        if vectors:  # keyword-only hits still get their true cosine
            for doc, (score, row) in _best_phrasings(data, sorted(pool - set(dense)),
                                                     vectors).items():
                dense[doc], matched[doc] = score, row

        fused = self._fuse(pool, dense, keyword, dense_rank, keyword_rank, mode)
        order = sorted(pool, key=lambda d: (-fused[d], d))[:k]
        return [
            Hit(
                document=data.documents[doc],
                score=fused[doc],
                rank=rank,
                dense_score=dense.get(doc),
                keyword_score=keyword.get(doc),
                dense_rank=dense_rank.get(doc),
                keyword_rank=keyword_rank.get(doc),
                matched=_phrasing(data, matched[doc]) if doc in matched else "",
            )
            for rank, doc in enumerate(order, start=1)
        ]

    def _fuse(
        self,
        pool: set[int],
        dense: dict[int, float],
        keyword: dict[int, float],
        dense_rank: dict[int, int],
        keyword_rank: dict[int, int],
        mode: Mode,
    ) -> dict[int, float]:
        if mode == "dense":
            return {d: dense[d] for d in pool}
        if mode == "keyword":
            return {d: keyword.get(d, 0.0) for d in pool}
        if self.settings.fusion == "rrf":
            c = self.settings.rrf_k
            return {
                d: (1.0 / (c + dense_rank[d]) if d in dense_rank else 0.0)
                + (1.0 / (c + keyword_rank[d]) if d in keyword_rank else 0.0)
                for d in pool
            }
        # Weighted: the cosine as is, BM25 divided by this query's best BM25 score.
        best = max(keyword.values(), default=0.0) or 1.0
        w = self.settings.dense_weight
        return {d: w * dense.get(d, 0.0) + (1 - w) * keyword.get(d, 0.0) / best for d in pool}


def _ranks(scores: dict[int, float]) -> dict[int, int]:
    return {d: r for r, d in enumerate(sorted(scores, key=lambda d: -scores[d]), start=1)}


def _best_per_document(data: IndexData, vector: np.ndarray, fetch: int, candidates: int
                       ) -> tuple[list[int], list[float], list[int]]:
    """The ``candidates`` best documents by their best phrasing among FAISS's ``fetch`` nearest
    phrasings, best first: (documents, cosines, phrasing rows)."""
    scores, rows = data.faiss_index.search(vector[None, :], fetch)
    scores, rows = scores[0], rows[0]
    found = rows >= 0  # FAISS pads with -1 when it finds fewer
    scores, rows = scores[found], rows[found]
    docs = data.phrase_doc[rows]
    # FAISS returns rows best first, so a document's first row is its best phrasing.
    _, first = np.unique(docs, return_index=True)
    first = np.sort(first)[:candidates]
    return docs[first].tolist(), scores[first].tolist(), rows[first].tolist()


def _best_phrasings(data: IndexData, docs: Sequence[int], vectors: Sequence[np.ndarray]
                    ) -> dict[int, tuple[float, int]]:
    """Each document's best cosine over its phrasings and the query vectors, with the row of
    that phrasing: one matrix product for all ``docs``."""
    if not docs:
        return {}
    starts = data.phrase_starts
    begin, end = starts[docs], starts[np.asarray(docs) + 1]
    lengths = end - begin
    offsets = np.cumsum(lengths) - lengths  # where each document's rows start in ``rows``
    rows = np.arange(int(lengths.sum())) - np.repeat(offsets, lengths) + np.repeat(begin, lengths)
    cosines = (data.vectors[rows] @ np.stack(vectors).T).max(axis=1)
    best: dict[int, tuple[float, int]] = {}
    for doc, offset, length in zip(docs, offsets.tolist(), lengths.tolist(), strict=True):
        top = offset + int(np.argmax(cosines[offset:offset + length]))
        best[doc] = (float(cosines[top]), int(rows[top]))
    return best


def _phrasing(data: IndexData, row: int) -> str:
    doc = int(data.phrase_doc[row])
    return data.documents[doc].phrasings[row - int(data.phrase_starts[doc])]


def timed_search(retriever: Retriever, query: str, **kwargs: Any) -> tuple[list[Hit], float]:
    """Search and return the hits with the wall time in milliseconds (for eval and bench)."""
    started = time.perf_counter()
    hits = retriever.search(query, **kwargs)
    return hits, (time.perf_counter() - started) * 1000.0


def search_all(retriever: Retriever, texts: Sequence[str], *, k: int, desc: str = "search",
               progress: bool = False) -> list[list[Hit]]:
    """The hits of every text in order, with a progress bar (calibration and evaluation)."""
    from tqdm import tqdm

    return [retriever.search(t, k=k) for t in tqdm(texts, desc=desc, disable=not progress,
                                                     leave=False)]
