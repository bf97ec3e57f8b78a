"""Micro-batching: concurrent callers share encoder calls yet get exactly their own vectors;
errors reach the right callers; a full queue refuses quickly; the worker stops cleanly."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from chatbot.config import Settings
from chatbot.errors import EncoderBusyError, ModelError
from chatbot.retrieval.batching import BatchingEncoder
from chatbot.retrieval.embed import Embedder, TextEncoder


def text_vector(text: str) -> np.ndarray:
    """A deterministic unit vector per text (a stand-in for the model)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return vector / np.linalg.norm(vector)


class SlowEncoder:
    """Stand-in encode function: a few milliseconds a call whatever the batch size."""

    def __init__(self, delay_s: float = 0.005) -> None:
        self.delay_s = delay_s
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.gate.wait()
        time.sleep(self.delay_s)
        if any(t == "boom" for t in texts):
            raise ModelError("model failed")
        self.batches.append(list(texts))
        return np.stack([text_vector(t) for t in texts])


def _hammer(batcher: BatchingEncoder, threads: int, per_thread: int) -> dict[str, np.ndarray]:
    results: dict[str, np.ndarray] = {}
    barrier = threading.Barrier(threads)

    def client(worker: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            text = f"client {worker} question {i}"
            results[text] = batcher.encode(text)

    pool = [threading.Thread(target=client, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return results


def test_concurrent_callers_get_their_own_vectors_from_shared_calls() -> None:
    encoder = SlowEncoder()
    batcher = BatchingEncoder(encoder, window_ms=2, max_batch=8)
    results = _hammer(batcher, threads=12, per_thread=5)
    batcher.close()
    assert len(results) == 60
    for text, vector in results.items():
        assert np.array_equal(vector, text_vector(text)), text
    assert batcher.requests == 60 and batcher.calls == len(encoder.batches)
    assert batcher.calls < 60 / 2  # batched: far fewer calls than requests
    assert max(len(b) for b in encoder.batches) <= 8  # never above max_batch


def test_multi_text_requests_keep_their_rows_together() -> None:
    batcher = BatchingEncoder(SlowEncoder(), window_ms=1, max_batch=4)
    got = batcher.encode_many(["a", "b", "c"])
    batcher.close()
    assert np.array_equal(got, np.stack([text_vector(t) for t in "abc"]))


def test_an_encoder_error_reaches_its_callers_and_the_worker_carries_on() -> None:
    batcher = BatchingEncoder(SlowEncoder(), window_ms=1)
    with pytest.raises(ModelError, match="model failed"):
        batcher.encode("boom")
    assert np.array_equal(batcher.encode("fine"), text_vector("fine"))
    batcher.close()


def test_a_full_queue_refuses_quickly_with_a_busy_error() -> None:
    encoder = SlowEncoder()
    encoder.gate.clear()  # the model hangs: nothing leaves the queue
    batcher = BatchingEncoder(encoder, window_ms=0, max_batch=1, queue_size=2,
                              put_timeout_s=0.05)
    first = batcher.submit(["in the model"])
    time.sleep(0.05)  # the worker has taken it and is stuck in the encoder
    waiting = [batcher.submit(["q1"]), batcher.submit(["q2"])]
    started = time.monotonic()
    with pytest.raises(EncoderBusyError, match="queue is full") as refused:
        batcher.submit(["q3"])
    assert time.monotonic() - started < 1.0
    assert isinstance(refused.value, ModelError)  # what the API answers with 503
    encoder.gate.set()
    assert first.result(timeout=5).shape == (1, 8)
    assert all(f.result(timeout=5).shape == (1, 8) for f in waiting)
    batcher.close()


def test_close_finishes_queued_work_and_leaves_no_thread() -> None:
    encoder = SlowEncoder(delay_s=0.02)
    batcher = BatchingEncoder(encoder, window_ms=0, max_batch=1)
    futures = [batcher.submit([f"q{i}"]) for i in range(3)]
    worker = batcher._thread
    assert worker is not None and worker.is_alive()
    batcher.close()
    assert all(f.done() for f in futures) and not batcher.running
    assert not worker.is_alive() and worker not in threading.enumerate()
    with pytest.raises(ModelError, match="closed"):
        batcher.encode("late")
    batcher.close()  # idempotent


def test_an_idle_worker_exits_and_the_next_request_restarts_it() -> None:
    batcher = BatchingEncoder(SlowEncoder(delay_s=0), idle_exit_s=0.05)
    batcher.encode("a")
    deadline = time.monotonic() + 5
    while batcher.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not batcher.running
    assert np.array_equal(batcher.encode("b"), text_vector("b"))
    batcher.close()


class CountingEncoder:
    """A backend stand-in: the real encoder, counting calls and texts."""

    def __init__(self, inner: TextEncoder) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def encode(self, texts: Sequence[str], *, batch_size: int, progress: bool = False
               ) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
        return self.inner.encode(texts, batch_size=batch_size, progress=progress)


def test_embedder_batches_concurrent_queries_with_identical_vectors(embedder: Embedder) -> None:
    counting = CountingEncoder(embedder.encoder)
    settings = Settings(query_cache_size=0, embedding_batch_window_ms=5, _env_file=None)  # type: ignore[call-arg]
    concurrent = Embedder(settings, encoder=counting)
    texts = [f"where is my order number {i}" for i in range(16)]
    results: dict[str, np.ndarray] = {}
    barrier = threading.Barrier(len(texts))

    def client(text: str) -> None:
        barrier.wait()
        results[text] = concurrent.encode_query(text)

    pool = [threading.Thread(target=client, args=(t,)) for t in texts]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    batcher = concurrent._batcher
    worker = batcher._thread if batcher is not None else None
    concurrent.close()
    assert len(results) == len(texts) and len(counting.calls) < len(texts)
    alone = embedder.encode(texts, batch_size=1)
    for i, text in enumerate(texts):
        assert float(results[text] @ alone[i]) > 0.9999
    assert worker is not None and not worker.is_alive() and concurrent._batcher is None
