"""Embed: the shipped MiniLM loads offline and gives unit vectors; the query cache works; a bulk
job's ``ReusingEmbedder`` embeds each text once, known ones never, apart from serving."""

from __future__ import annotations

import numpy as np
from standin_stages import CountingEncoder

from chatbot.config import Settings
from chatbot.retrieval.embed import Embedder, ReusingEmbedder


class CountingEmbedder(Embedder):
    def __init__(self, settings: Settings, inner: Embedder) -> None:
        super().__init__(settings)
        self._model = inner._load()
        self.calls = 0

    def encode(self, texts, *, batch_size=None, progress=False):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().encode(texts, batch_size=batch_size, progress=progress)


def test_shipped_model_gives_normalised_384_d_vectors(embedder: Embedder) -> None:
    vectors = embedder.encode(["where is my order", "refund please", "hello"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar = vectors[0] @ embedder.encode(["where's my package"])[0]
    unrelated = vectors[0] @ vectors[2]
    assert similar > unrelated + 0.2


def test_query_cache_reuses_vectors_and_can_be_bypassed(embedder: Embedder) -> None:
    counting = CountingEmbedder(Settings(query_cache_size=2, _env_file=None), embedder)  # type: ignore[call-arg]
    first = counting.encode_query("Where is my order?")
    again = counting.encode_query("  where IS my order? ")  # same after case/space folding
    assert again is first and counting.calls == 1
    with counting.no_cache():
        counting.encode_query("Where is my order?")
    assert counting.calls == 2
    counting.encode_query("b")
    counting.encode_query("c")  # evicts the oldest entry (size 2)
    counting.encode_query("Where is my order?")
    assert counting.calls == 5


def test_empty_input_gives_an_empty_matrix(embedder: Embedder) -> None:
    assert embedder.encode([]).shape == (0, 384)


def test_a_reusing_embedder_embeds_each_text_once_and_known_ones_never(
        embedder: Embedder) -> None:
    counting = CountingEncoder(embedder.encoder)
    serving = Embedder(Settings(_env_file=None), encoder=counting)  # type: ignore[call-arg]
    known = {"where is my order": embedder.encode(["where is my order"])[0]}
    bulk = ReusingEmbedder(serving, known)
    assert bulk.model_name == serving.model_name and bulk.loaded
    vectors = bulk.encode(["where is my order", "refund please", "refund please"])
    assert counting.texts == ["refund please"]  # the known text is not embedded, nor one twice
    assert np.array_equal(vectors[0], known["where is my order"])
    assert np.array_equal(vectors[1], vectors[2])
    assert np.array_equal(bulk.encode_query("refund please"), vectors[1])
    assert counting.texts == ["refund please"] and set(bulk.vectors) == {
        "where is my order", "refund please"}
    assert serving._cache == {} and serving._batcher is None  # the serving side untouched
    with bulk.no_cache():
        bulk.encode_query("refund please")
    assert counting.texts == ["refund please"] * 2  # measured afresh, as on any embedder
