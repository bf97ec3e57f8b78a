"""Micro-batching: concurrent query embeddings share one encoder call.

One worker thread makes every encoder call. A caller puts its request (one or a few texts and
a future) in a bounded queue and waits on the future. The worker takes the oldest request, then
gathers more into the same call, up to ``max_batch`` texts: everything already queued and, when
requests are arriving concurrently (the queue was not empty, or the previous call served more
than one request), whatever arrives within the collection window. Each caller gets exactly its
own rows back, or the encoder's exception. A lone request on an idle server never waits for
the window, so batching costs it only the hand-over to the worker (tens of microseconds).

Why: MiniLM costs several milliseconds a call however few sentences it holds, so under
concurrent traffic throughput follows the batched rate, not the one-at-a-time rate.

Full queue: the caller waits up to ``put_timeout_s`` for room, then gets ``EncoderBusyError``
(``chatbot.errors``, a ``ModelError``: HTTP 503), so an overload turns into quick refusals, not
unbounded memory and latency. Lifetime: the worker starts with the first request, exits after
``idle_exit_s`` without any (the next request starts a new one), and ``close()`` stops it and
waits for it, finishing the requests already queued. It is a daemon thread only so that a forgotten
``close()`` cannot hang interpreter exit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from chatbot.errors import EncoderBusyError, ModelError

log = logging.getLogger(__name__)

EncodeFn = Callable[[list[str]], np.ndarray]

@dataclass
class _Request:
    texts: list[str]
    future: Future[np.ndarray] = field(default_factory=Future)


_STOP = _Request([])  # the sentinel close() queues after the last real request


class BatchingEncoder:
    """Encodes texts from many threads with one worker, batching concurrent requests."""

    def __init__(
        self,
        encode: EncodeFn,
        *,
        window_ms: float = 2.0,
        max_batch: int = 64,
        queue_size: int = 256,
        put_timeout_s: float = 1.0,
        idle_exit_s: float = 10.0,
        name: str = "embedder-batcher",
    ) -> None:
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be at least 1")
        self._encode = encode
        self._window_s = window_ms / 1000.0
        self._max_batch = max_batch
        self._put_timeout_s = put_timeout_s
        self._idle_exit_s = idle_exit_s
        self._name = name
        self._queue: queue.Queue[_Request] = queue.Queue(maxsize=queue_size)
        # Guards starting, idling out and stopping the worker, so no request is queued for a
        # worker that has decided to exit.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._concurrent = False  # the last call served more than one request
        # Counters for tests and benchmarks (written by the worker only).
        self.calls = 0
        self.requests = 0
        self.texts = 0

    # --- callers --------------------------------------------------------------------------------
    def encode_many(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) vectors for ``texts``, encoded in one call with other callers' texts."""
        return self.submit(texts).result()

    def encode(self, text: str) -> np.ndarray:
        """The (d,) vector of one text."""
        return self.encode_many([text])[0]

    def submit(self, texts: Sequence[str]) -> Future[np.ndarray]:
        """Queue ``texts``; the future's result is their (n, d) vectors, in order."""
        if not texts:
            raise ValueError("submit() needs at least one text")
        request = _Request(list(texts))
        deadline = time.monotonic() + self._put_timeout_s
        if not self._lock.acquire(timeout=self._put_timeout_s):
            raise self._busy()
        try:
            if self._closed:
                raise ModelError("the embedder was closed: create a new one")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            try:
                self._queue.put(request, timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Full:
                raise self._busy() from None
        finally:
            self._lock.release()
        return request.future

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish the queued requests, stop the worker and wait for it; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)  # after every queued request: FIFO
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("embedding worker still busy %.0f s after close()", timeout_s)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _busy(self) -> EncoderBusyError:
        return EncoderBusyError(
            f"the embedding queue is full ({self._queue.maxsize} waiting queries): the server is "
            "over capacity, retry shortly, or add replicas / raise CHATBOT_EMBEDDING_QUEUE_SIZE"
        )

    # --- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        held: _Request | None = None  # a request that did not fit in the previous call
        try:
            while True:
                first = held
                held = None
                if first is None:
                    try:
                        first = self._queue.get(timeout=self._idle_exit_s)
                    except queue.Empty:
                        with self._lock:
                            if self._queue.empty():
                                self._thread = None
                                return
                        continue
                if first is _STOP:
                    return
                batch, held, stop = self._gather(first)
                self._call(batch)
                if stop:
                    return
        finally:
            with self._lock:
                if self._thread is threading.current_thread():  # died: let submit() restart
                    self._thread = None

    def _gather(self, first: _Request) -> tuple[list[_Request], _Request | None, bool]:
        """``first`` plus the requests that join its call; (batch, held over, stop seen)."""
        batch, size = [first], len(first.texts)
        wait = self._window_s if (self._concurrent or not self._queue.empty()) else 0.0
        deadline = time.monotonic() + wait
        while size < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else (
                    self._queue.get_nowait())
            except queue.Empty:
                break
            if item is _STOP:
                return batch, None, True
            if size + len(item.texts) > self._max_batch:
                return batch, item, False
            batch.append(item)
            size += len(item.texts)
        return batch, None, False

    def _call(self, batch: list[_Request]) -> None:
        texts = [t for request in batch for t in request.texts]
        self._concurrent = len(batch) > 1
        try:
            vectors = self._encode(texts)
        except Exception as error:  # each caller gets the error, the worker carries on
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        self.calls += 1
        self.requests += len(batch)
        self.texts += len(texts)
        start = 0
        for request in batch:
            end = start + len(request.texts)
            if not request.future.done():
                request.future.set_result(vectors[start:end])
            start = end
