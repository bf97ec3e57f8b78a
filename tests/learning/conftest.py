"""Fixtures of the learning-loop tests: the tiny knowledge base's real index and retriever."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatbot.config import Settings
from chatbot.retrieval.index import reindex
from chatbot.retrieval.search import Retriever


@pytest.fixture
def kb_retriever(settings: Settings, embedder) -> Retriever:  # type: ignore[no-untyped-def]
    """The real index of the tiny knowledge base (MiniLM, FAISS, BM25) and its retriever."""
    reindex(settings, embedder=embedder, progress=False)
    return Retriever(settings, embedder)


@pytest.fixture(autouse=True)
def _stop_the_batching_worker(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the shared embedder, stop its micro-batching worker thread (it
    would idle on for 10 s, and tests/retrieval checks that no such thread is left)."""
    yield
    if "embedder" in request.fixturenames:
        request.getfixturevalue("embedder").close()
