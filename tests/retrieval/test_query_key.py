"""The query-embedding cache keys on a 16-byte hash of the folded text, so a cache entry costs
the same for a 4,000-character message (or a long history turn) as for "hi"."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chatbot.config import Settings
from chatbot.retrieval.embed import Embedder, query_key


class LengthEncoder:
    """Stands in for the model (same interface): a unit vector from the text's length."""

    dimension = 4

    def __init__(self) -> None:
        self.texts: list[str] = []

    def encode(self, texts: Sequence[str], *, batch_size: int,
               progress: bool = False) -> np.ndarray:
        self.texts += texts
        vectors = np.array([[len(t), 1.0, 0.0, 0.0] for t in texts], dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_keys_are_16_bytes_however_long_the_text() -> None:
    assert {len(query_key(t)) for t in ("", "hi", "x" * 4000, "ü" * 100_000)} == {16}
    assert query_key("  Where IS my\norder? ") == query_key("where is my order?")
    assert query_key("where is my order?") != query_key("where is my parcel?")


def test_the_cache_holds_hashes_not_texts() -> None:
    settings = Settings(query_cache_size=2, embedding_batch_window_ms=0,  # type: ignore[call-arg]
                        _env_file=None)
    encoder = LengthEncoder()
    embedder = Embedder(settings, encoder=encoder)
    long_turns = [f"{n} " + "my order has not arrived " * 160 for n in range(3)]  # ~4,000 chars
    for text in long_turns:
        embedder.encode_query(text)
    embedder.encode_query(long_turns[2].upper())  # the same query folded: a hit
    assert len(encoder.texts) == 3
    keys = list(embedder._cache)  # the cache's own keys: what it keeps in memory
    assert len(keys) == 2 and all(isinstance(k, bytes) and len(k) == 16 for k in keys)
