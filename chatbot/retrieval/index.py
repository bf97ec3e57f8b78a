"""Index: build, store, version and load the FAISS + BM25 index of the knowledge base.

On disk, ``<index_dir>/<version>/`` holds ``manifest.json`` (embedding model, dimension,
document hashes, created-at, FAISS type, calibrated thresholds), ``documents.jsonl``,
``vectors.npy`` (one unit vector per phrasing), ``phrase_doc.npy`` (phrasing -> document row),
``phrase_keys.json`` (hash of each phrasing, for incremental re-embedding), ``faiss.index`` and
``bm25/``. ``<index_dir>/ACTIVE`` names the serving version.

A build writes into a temporary directory and is swapped in with two atomic renames, so a
failed or interrupted build leaves the old version serving. Builds are serialised by a lock
file. Unchanged phrasings reuse the previous version's vectors (incremental re-index).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from chatbot.config import Settings
from chatbot.errors import IndexNotReadyError, IngestError
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import Embedder, embedder_name
from chatbot.retrieval.text import keyword_stemmer, keyword_tokens
from chatbot.types import Document, Turn

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ProgressCallback = Callable[[int, int, str], None]


# --- what the keyword index sees (tokenisation itself lives in chatbot.retrieval.text) -------
def keyword_text(document: Document) -> str:
    """What BM25 sees: every phrasing plus the answer, so words only the answer uses match."""
    return " ".join((*document.phrasings, document.answer))


# --- in-memory index ------------------------------------------------------------------------
@dataclass
class IndexData:
    """A loaded index: everything a Retriever needs, held in memory."""

    documents: list[Document]
    vectors: np.ndarray  # (phrasings, d) float32 unit vectors
    phrase_doc: np.ndarray  # (phrasings,) int32 document row of each phrasing
    phrase_keys: list[str]
    faiss_index: Any
    bm25: Any
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str | None:
        return self.manifest.get("version")

    @cached_property
    def phrase_starts(self) -> np.ndarray:
        """Row of each document's first phrasing, plus the row count at the end: document
        ``d``'s phrasings are rows ``phrase_starts[d]:phrase_starts[d + 1]`` (they are stored
        contiguously, in document order)."""
        return np.searchsorted(self.phrase_doc, np.arange(len(self.documents) + 1))

    def phrasing_vectors(self) -> dict[str, np.ndarray]:
        """Each phrasing's text -> its vector (rows are phrasings in document order)."""
        texts = [phrasing for document in self.documents for phrasing in document.phrasings]
        return dict(zip(texts, self.vectors, strict=True))


def phrase_key(model_name: str, text: str) -> str:
    return hashlib.sha256(f"{model_name}\x00{text}".encode()).hexdigest()[:24]


def limit_faiss_threads(settings: Settings) -> None:
    """FAISS's OpenMP threads, from ``settings.search_threads`` (0: FAISS's own default). The
    setting is process-wide; serving and the tools set it whenever they build or load an index."""
    import faiss

    if settings.search_threads:
        faiss.omp_set_num_threads(settings.search_threads)


def build_faiss(vectors: np.ndarray, settings: Settings) -> tuple[Any, str]:
    """Exact inner-product search for small collections, HNSW above ``ann_threshold``."""
    import faiss

    limit_faiss_threads(settings)
    dimension = vectors.shape[1]
    index: Any
    if len(vectors) > settings.ann_threshold:
        index = faiss.IndexHNSWFlat(dimension, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.add(vectors)
        index.hnsw.efSearch = settings.hnsw_ef_search
        return index, "hnsw"
    index = faiss.IndexFlatIP(dimension)
    index.add(vectors)
    return index, "flat"


def build_index_data(
    documents: Sequence[Document],
    embedder: Embedder,
    settings: Settings,
    *,
    reuse: dict[str, np.ndarray] | None = None,
    progress: bool | ProgressCallback = False,
) -> IndexData:
    """Embed the phrasings (reusing known vectors), then build FAISS and BM25 in memory."""
    import bm25s

    documents = list(documents)
    texts: list[str] = []
    owners: list[int] = []
    for row, document in enumerate(documents):
        for phrasing in document.phrasings:
            texts.append(phrasing)
            owners.append(row)
    keys = [phrase_key(embedder.model_name, t) for t in texts]
    reuse = reuse or {}
    missing = [i for i, k in enumerate(keys) if k not in reuse]
    fresh = _embed_with_progress(embedder, [texts[i] for i in missing], settings, progress)
    dimension = fresh.shape[1] if len(missing) else next(iter(reuse.values())).shape[0]
    vectors = np.zeros((len(texts), dimension), dtype=np.float32)
    for j, i in enumerate(missing):
        vectors[i] = fresh[j]
    for i, k in enumerate(keys):
        if k in reuse:
            vectors[i] = reuse[k]
    faiss_index, faiss_type = build_faiss(vectors, settings)
    stemmer = keyword_stemmer()
    bm25 = bm25s.BM25()
    bm25.index(keyword_tokens([keyword_text(d) for d in documents], stemmer), show_progress=False)
    manifest = {
        "format": FORMAT_VERSION,
        "embedding_model": embedder.model_name,
        "dimension": int(dimension),
        "faiss_type": faiss_type,
        "documents": {d.record_id: d.id for d in documents},
        "phrasings": len(texts),
        "embedded": len(missing),
    }
    return IndexData(
        documents=documents, vectors=vectors, phrase_doc=np.asarray(owners, dtype=np.int32),
        phrase_keys=keys, faiss_index=faiss_index, bm25=bm25, manifest=manifest,
    )


def _embed_with_progress(
    embedder: Embedder, texts: list[str], settings: Settings, progress: bool | ProgressCallback
) -> np.ndarray:
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    if not callable(progress):
        return embedder.encode(texts, progress=bool(progress))
    batch = settings.embedding_batch_size * 4
    parts = []
    for start in range(0, len(texts), batch):
        parts.append(embedder.encode(texts[start : start + batch]))
        progress(min(start + batch, len(texts)), len(texts), "embedding")
    return np.concatenate(parts)


# --- on-disk versions ---------------------------------------------------------------------------
def _document_to_json(document: Document) -> dict[str, Any]:
    data = dataclasses.asdict(document)
    data["context"] = [[t.role, t.text] for t in document.context]
    return data


def _document_from_json(data: dict[str, Any]) -> Document:
    data = dict(data)
    data["alternatives"] = tuple(data.get("alternatives") or ())
    data["context"] = tuple(Turn(role=r, text=t) for r, t in data.get("context") or ())
    return Document(**data)


def save_index_data(data: IndexData, directory: Path) -> None:
    import faiss

    directory.mkdir(parents=True)
    with (directory / "documents.jsonl").open("w", encoding="utf-8") as out:
        for document in data.documents:
            out.write(json.dumps(_document_to_json(document), ensure_ascii=False) + "\n")
    np.save(directory / "vectors.npy", data.vectors)
    np.save(directory / "phrase_doc.npy", data.phrase_doc)
    (directory / "phrase_keys.json").write_text(json.dumps(data.phrase_keys))
    faiss.write_index(data.faiss_index, str(directory / "faiss.index"))
    data.bm25.save(str(directory / "bm25"))
    (directory / "manifest.json").write_text(json.dumps(data.manifest, indent=1, sort_keys=True))


def load_index_data(directory: Path, settings: Settings) -> IndexData:
    """Load one version; raises IndexNotReadyError when it is incomplete or unreadable."""
    import bm25s
    import faiss

    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        documents = [
            _document_from_json(json.loads(line))
            for line in (directory / "documents.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        vectors = np.load(directory / "vectors.npy")
        phrase_doc = np.load(directory / "phrase_doc.npy")
        keys = json.loads((directory / "phrase_keys.json").read_text())
        index = faiss.read_index(str(directory / "faiss.index"))
        bm25 = bm25s.BM25.load(str(directory / "bm25"))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as error:
        raise IndexNotReadyError(
            f"index at {directory} is unreadable ({error}): run `chatbot reindex --full`"
        ) from error
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = settings.hnsw_ef_search
    limit_faiss_threads(settings)
    return IndexData(documents, vectors, phrase_doc, keys, index, bm25, manifest)


def active_version(settings: Settings) -> str | None:
    pointer = settings.resolved_index_dir / "ACTIVE"
    try:
        version = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    return version or None


def active_path(settings: Settings) -> Path:
    version = active_version(settings)
    if version is None:
        raise IndexNotReadyError(
            f"no index in {settings.resolved_index_dir}: run `chatbot reindex` first"
        )
    return settings.resolved_index_dir / version


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_thresholds(settings: Settings, thresholds: dict[str, Any]) -> Path:
    """Store calibrated routing thresholds in the active version's manifest."""
    directory = active_path(settings)
    with _build_lock(settings):
        manifest = json.loads((directory / "manifest.json").read_text())
        manifest["thresholds"] = thresholds
        _atomic_write(directory / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return directory / "manifest.json"


@contextmanager
def _build_lock(settings: Settings) -> Iterator[None]:
    """One build at a time, across processes. An flock, not a PID file: the kernel drops it
    when its holder dies (even by SIGKILL), so a killed build never blocks the next one."""
    root = settings.resolved_index_dir
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(root: Path) -> None:
    """Delete what a killed build left behind (its temporary folder, a half-written pointer).
    Call it holding the build lock: then no other build is writing them."""
    for leftover in root.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in root.glob(".ACTIVE.*"):
        leftover.unlink(missing_ok=True)


# --- knowledge from outside the files -------------------------------------------------------
def with_additions(
    documents: Sequence[Document],
    extra_documents: Sequence[Document] = (),
    extra_phrasings: Mapping[str, Sequence[str]] | None = None,
) -> list[Document]:
    """The knowledge base's documents plus ``extra_documents``, with ``extra_phrasings``
    (record id -> more ways to ask it) added as alternatives of those records. A document that
    gains phrasings gets a new content hash, so an incremental re-index embeds just those;
    phrasings of a record that no longer exists are skipped (logged). An extra document may
    not reuse a record id of the files: that would hide which answer is served."""
    combined = list(documents)
    known = {d.record_id for d in combined}
    for extra in extra_documents:
        if extra.record_id in known:
            raise IngestError(extra.source or "extra documents", None,
                              f"record id {extra.record_id} is defined twice",
                              "rename the knowledge base's entry (ids like sug-N are reserved "
                              "for approved suggestions)")
        known.add(extra.record_id)
        combined.append(extra)
    for record_id, phrasings in (extra_phrasings or {}).items():
        row = next((i for i, d in enumerate(combined) if d.record_id == record_id), None)
        if row is None:
            log.warning("extra phrasings for %s skipped: no such record", record_id)
            continue
        document = combined[row]
        seen = {p.casefold().strip() for p in document.phrasings}
        added = []
        for phrasing in phrasings:
            key = phrasing.casefold().strip()
            if key and key not in seen:
                seen.add(key)
                added.append(phrasing.strip())
        if added:
            alternatives = (*document.alternatives, *added)
            combined[row] = dataclasses.replace(
                document, alternatives=alternatives, id=Document.content_hash(
                    kind=document.kind, question=document.question, answer=document.answer,
                    category=document.category, alternatives=alternatives,
                    context=document.context, record_id=document.record_id))
    return combined


# --- re-index -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReindexReport:
    version: str
    added: int
    changed: int
    removed: int
    unchanged: int
    documents: int
    embedded: int
    seconds: float
    rebuilt: bool

    def summary(self) -> str:
        if not self.rebuilt:
            return (
                f"index {self.version} is up to date ({self.documents} documents, "
                f"{self.seconds:.2f} s)"
            )
        return (
            f"index {self.version}: {self.documents} documents ({self.added} added, "
            f"{self.changed} changed, {self.removed} removed, {self.unchanged} unchanged), "
            f"{self.embedded} phrasings embedded in {self.seconds:.2f} s"
        )


def reindex(
    settings: Settings,
    *,
    full: bool = False,
    progress: bool | ProgressCallback = True,
    embedder: Embedder | None = None,
    extra_documents: Sequence[Document] = (),
    extra_phrasings: Mapping[str, Sequence[str]] | None = None,
) -> ReindexReport:
    """Re-read the knowledge base and publish a new index version when anything changed.

    Ingest errors propagate before anything is written, so bad data never replaces the
    serving index. With ``full`` every phrasing is re-embedded. ``extra_documents`` and
    ``extra_phrasings`` are knowledge from outside the files (the approved suggestions of
    ``chatbot.learning``), combined by ``with_additions``.
    """
    started = time.perf_counter()
    documents = with_additions(load_knowledge_base(settings.knowledge_base), extra_documents,
                               extra_phrasings)
    if not documents:
        raise IndexNotReadyError(f"no documents found in {settings.knowledge_base}")
    model_name = embedder.model_name if embedder else embedder_name(settings)
    root = settings.resolved_index_dir
    with _build_lock(settings):
        _remove_leftovers(root)
        previous: IndexData | None = None
        current = active_version(settings)
        if current is not None:
            try:
                previous = load_index_data(root / current, settings)
            except IndexNotReadyError as error:
                log.warning("previous index unusable, rebuilding fully: %s", error)
        old_docs = previous.manifest.get("documents", {}) if previous else {}
        new_docs = {d.record_id: d.id for d in documents}
        added = sum(1 for r in new_docs if r not in old_docs)
        removed = sum(1 for r in old_docs if r not in new_docs)
        changed = sum(1 for r, h in new_docs.items() if r in old_docs and old_docs[r] != h)
        unchanged = len(new_docs) - added - changed
        same_model = previous is not None and previous.manifest.get("embedding_model") == model_name
        if (
            not full and current and same_model and not (added or removed or changed)
            and previous is not None and previous.manifest.get("format") == FORMAT_VERSION
        ):
            return ReindexReport(
                current, 0, 0, 0, unchanged, len(documents), 0,
                time.perf_counter() - started, rebuilt=False,
            )
        reuse: dict[str, np.ndarray] = {}
        if previous is not None and same_model and not full:
            reuse = dict(zip(previous.phrase_keys, previous.vectors, strict=True))
        data = build_index_data(
            documents, embedder or Embedder(settings), settings, reuse=reuse, progress=progress
        )
        created = datetime.now(UTC)
        # Microseconds in the name: versions sort by creation even when built in one second.
        version = created.strftime("%Y%m%dT%H%M%S%f") + "-" + uuid.uuid4().hex[:6]
        data.manifest.update(
            version=version,
            created_at=created.isoformat(),
            knowledge_base=str(settings.knowledge_base),
        )
        if previous is not None and "thresholds" in previous.manifest:
            # Thresholds depend on the model and data; carry them but mark their origin.
            data.manifest["thresholds"] = {
                **previous.manifest["thresholds"], "calibrated_on_version": current
            }
        tmp = root / f".tmp-{version}"
        try:
            save_index_data(data, tmp)
            os.rename(tmp, root / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _atomic_write(root / "ACTIVE", version)
        _prune(settings, keep=version)
        return ReindexReport(
            version, added, changed, removed, unchanged, len(documents),
            int(data.manifest["embedded"]), time.perf_counter() - started, rebuilt=True,
        )


def _prune(settings: Settings, *, keep: str) -> None:
    root = settings.resolved_index_dir
    versions = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    for old in versions[: -settings.keep_index_versions]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
