"""Index: versioned builds, atomic swap, incremental re-embedding, failures keep the old index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chatbot.config import Settings
from chatbot.errors import IngestError
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.index import (
    active_version,
    build_index_data,
    load_index_data,
    reindex,
    write_thresholds,
)


class CountingEmbedder(Embedder):
    """The real embedder, counting how many texts it was asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        super().__init__(inner.settings)
        self._model = inner._load()
        self.embedded = 0

    def encode(self, texts, *, batch_size=None, progress=False):  # type: ignore[no-untyped-def]
        self.embedded += len(texts)
        return super().encode(texts, batch_size=batch_size, progress=progress)


def test_first_build_writes_a_complete_version_with_manifest(
    settings: Settings, embedder: Embedder
) -> None:
    report = reindex(settings, progress=False, embedder=embedder)
    assert report.rebuilt and report.added == report.documents == 8
    directory = settings.resolved_index_dir / report.version
    assert active_version(settings) == report.version
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["embedding_model"] == "all-MiniLM-L6-v2"
    assert manifest["dimension"] == 384
    assert manifest["faiss_type"] == "flat"
    assert set(manifest["documents"]) >= {"ship-001", "dlg-0002#2"}
    assert "created_at" in manifest
    data = load_index_data(directory, settings)
    assert data.vectors.shape == (manifest["phrasings"], 384)
    assert np.allclose(np.linalg.norm(data.vectors, axis=1), 1.0, atol=1e-4)
    assert not list(settings.resolved_index_dir.glob(".tmp-*"))


def test_unchanged_reindex_publishes_nothing_and_embeds_nothing(
    settings: Settings, embedder: Embedder
) -> None:
    first = reindex(settings, progress=False, embedder=embedder)
    counting = CountingEmbedder(embedder)
    again = reindex(settings, progress=False, embedder=counting)
    assert not again.rebuilt and again.version == first.version
    assert counting.embedded == 0


def test_incremental_reindex_embeds_only_changed_phrasings(
    settings: Settings, embedder: Embedder
) -> None:
    first = reindex(settings, progress=False, embedder=embedder)
    faq = settings.knowledge_base / "faq.csv"
    text = faq.read_text().replace("3-5 business days.", "2-4 business days.")
    text = text.replace(
        "acc-001,account,How do I reset my password?", "acc-002,account,How do I delete my account?"
    )
    faq.write_text(
        text
        + "new-001,orders,Can I change my order?,Within 1 hour of ordering.,"
        + "edit order | modify my order\n"
    )
    counting = CountingEmbedder(embedder)
    report = reindex(settings, progress=False, embedder=counting)
    assert report.rebuilt and report.version != first.version
    assert (report.added, report.changed, report.removed) == (2, 1, 1)
    # ship-001's answer changed but its phrasings did not: nothing of it is re-embedded.
    # New phrasings: acc-002's question (its alternatives existed before) + new-001's three.
    assert counting.embedded == 4
    assert report.embedded == 4


def test_full_reindex_re_embeds_everything(settings: Settings, embedder: Embedder) -> None:
    reindex(settings, progress=False, embedder=embedder)
    counting = CountingEmbedder(embedder)
    report = reindex(settings, full=True, progress=False, embedder=counting)
    phrasings = sum(len(d.phrasings) for d in load_knowledge_base(settings.knowledge_base))
    assert report.rebuilt and counting.embedded == report.embedded == phrasings > 0


def test_bad_data_leaves_the_serving_index_untouched(
    settings: Settings, embedder: Embedder
) -> None:
    first = reindex(settings, progress=False, embedder=embedder)
    before = sorted(p.name for p in settings.resolved_index_dir.iterdir())
    (settings.knowledge_base / "broken.csv").write_text("id,question,answer\nx,Q?,\n")
    with pytest.raises(IngestError, match="broken.csv:2: missing answer"):
        reindex(settings, progress=False, embedder=embedder)
    assert active_version(settings) == first.version
    assert sorted(p.name for p in settings.resolved_index_dir.iterdir()) == before


def test_failure_while_writing_cleans_up_and_keeps_old_version(
    settings: Settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = reindex(settings, progress=False, embedder=embedder)
    (settings.knowledge_base / "faq.csv").write_text(
        (settings.knowledge_base / "faq.csv").read_text() + "z-1,misc,New?,Yes.,a | b\n"
    )
    import chatbot.retrieval.index as index_module

    def disk_full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(index_module.np, "save", disk_full)
    with pytest.raises(OSError):
        reindex(settings, progress=False, embedder=embedder)
    assert active_version(settings) == first.version
    assert not list(settings.resolved_index_dir.glob(".tmp-*"))


def test_large_collections_use_hnsw(settings: Settings, embedder: Embedder) -> None:
    docs = load_knowledge_base(settings.knowledge_base)
    small = settings.model_copy(update={"ann_threshold": 5})
    data = build_index_data(docs, embedder, small)
    assert data.manifest["faiss_type"] == "hnsw"
    assert type(data.faiss_index).__name__ == "IndexHNSWFlat"


def test_loading_an_index_sets_faiss_threads_from_the_settings(
        settings: Settings, embedder: Embedder) -> None:
    import faiss

    reindex(settings, embedder=embedder, progress=False)
    directory = settings.resolved_index_dir / str(active_version(settings))
    before = faiss.omp_get_max_threads()
    try:
        for threads in (2, 1):
            load_index_data(directory, settings.model_copy(update={"search_threads": threads}))
            assert faiss.omp_get_max_threads() == threads
        faiss.omp_set_num_threads(3)  # 0 leaves whatever FAISS has
        load_index_data(directory, settings.model_copy(update={"search_threads": 0}))
        assert faiss.omp_get_max_threads() == 3
    finally:
        faiss.omp_set_num_threads(before)


def test_thresholds_are_stored_with_the_index_and_carried_over(
    settings: Settings, embedder: Embedder
) -> None:
    first = reindex(settings, progress=False, embedder=embedder)
    write_thresholds(settings, {"answer": 0.6, "faq": 0.8})
    manifest = json.loads(
        (settings.resolved_index_dir / first.version / "manifest.json").read_text()
    )
    assert manifest["thresholds"] == {"answer": 0.6, "faq": 0.8}
    (settings.knowledge_base / "faq.csv").write_text(
        (settings.knowledge_base / "faq.csv").read_text() + "z-1,misc,New?,Yes.,a | b\n"
    )
    second = reindex(settings, progress=False, embedder=embedder)
    data = load_index_data(settings.resolved_index_dir / second.version, settings)
    assert data.manifest["thresholds"]["answer"] == 0.6
    assert data.manifest["thresholds"]["calibrated_on_version"] == first.version


def test_old_versions_are_pruned(settings: Settings, embedder: Embedder) -> None:
    keep = settings.model_copy(update={"keep_index_versions": 2})
    faq = keep.knowledge_base / "faq.csv"
    for i in range(4):
        faq.write_text(faq.read_text() + f"p-{i},misc,Question {i}?,Answer {i}.,x{i} | y{i}\n")
        reindex(keep, progress=False, embedder=embedder)
    versions = [p for p in keep.resolved_index_dir.iterdir() if p.is_dir()]
    assert len(versions) == 2
    assert active_version(keep) in {p.name for p in versions}


def test_index_dir_layout_is_what_the_readme_documents(
    settings: Settings, embedder: Embedder
) -> None:
    report = reindex(settings, progress=False, embedder=embedder)
    files = {p.name for p in (settings.resolved_index_dir / report.version).iterdir()}
    assert files == {
        "manifest.json",
        "documents.jsonl",
        "vectors.npy",
        "phrase_doc.npy",
        "phrase_keys.json",
        "faiss.index",
        "bm25",
    }
    assert Path(settings.resolved_index_dir / "ACTIVE").read_text() == report.version
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert all(f"`{name}" in readme for name in files | {"ACTIVE"})
