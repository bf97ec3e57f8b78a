"""Stage timers for bench_stages.py: thread CPU per stage of the real serving classes, through
the factories (subclasses of the embedder, retriever, policy and signal reader passed to
``build_pipeline``) and wrappers on the built instances (the pipeline's ``answer`` and
``suggestions``, its reranker's ``rerank``, the service's redactor). ``time.thread_time`` is per
thread, so concurrent callers and the micro-batching worker add up correctly in one ``Clock``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from chatbot.answering.pipeline import Pipeline
from chatbot.answering.policy import Policy
from chatbot.answering.signals import SignalReader
from chatbot.config import Settings
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.search import Retriever


class Clock:
    """Thread CPU per stage, summed over threads (``thread_time`` is per thread, so concurrent
    callers add up correctly)."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - started
            with self._lock:
                self.totals[name] += spent

    def count(self, name: str, n: int) -> None:
        with self._lock:
            self.counts[name] += n

    @property
    def in_embed(self) -> bool:
        return bool(getattr(self._local, "embed", False))

    @contextmanager
    def embedding(self) -> Iterator[None]:
        self._local.embed = True
        try:
            with self.stage("embed caller"):
                yield
        finally:
            self._local.embed = False


class TimedEmbedder(Embedder):
    def __init__(self, settings: Settings, clock: Clock) -> None:
        super().__init__(settings)
        self.clock = clock

    def encode_queries(self, texts: Sequence[str]) -> list[Any]:
        with self.clock.embedding():
            return super().encode_queries(texts)

    def encode(self, texts: Sequence[str], **kwargs: Any) -> Any:
        self.clock.count("texts embedded", len(texts))
        if self.clock.in_embed:  # sequential: already inside encode_queries in this thread
            return super().encode(texts, **kwargs)
        with self.clock.stage("embed worker"):  # the micro-batching worker's model call
            return super().encode(texts, **kwargs)


class TimedRetriever(Retriever):
    def __init__(self, settings: Settings, clock: Clock) -> None:
        super().__init__(settings, TimedEmbedder(settings, clock))
        self.clock = clock

    def search(self, *args: Any, **kwargs: Any) -> Any:
        with self.clock.stage("retrieve"):
            return super().search(*args, **kwargs)


class TimedSignals(SignalReader):
    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def read(self, *args: Any, **kwargs: Any) -> Any:
        with self.clock.stage("signals"):
            return super().read(*args, **kwargs)


class TimedPolicy(Policy):
    def __init__(self, settings: Settings, clock: Clock) -> None:
        super().__init__(settings)
        self.clock = clock

    def decide(self, *args: Any, **kwargs: Any) -> Any:
        with self.clock.stage("policy"):
            return super().decide(*args, **kwargs)


def time_method(obj: Any, name: str, clock: Clock, stage: str) -> None:
    """Time ``obj.name(...)`` as ``stage`` (an instance attribute over the method: the pipeline
    and its reranker are built by ``build_pipeline`` as they serve, then observed)."""
    method = getattr(obj, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        with clock.stage(stage):
            return method(*args, **kwargs)

    setattr(obj, name, timed)


class TimedRedactor:
    """Wraps the service's redactor (same methods): what redaction costs per request."""

    def __init__(self, inner: Any, clock: Clock) -> None:
        self._inner, self._clock = inner, clock

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._clock.stage("redaction"):
                return attribute(*args, **kwargs)

        return timed


def build(settings: Settings, clock: Clock) -> Pipeline:
    """The pipeline ``build_pipeline`` makes for ``settings`` (reranker included when one is
    configured), with timed stages."""
    from chatbot.answering.pipeline import build_pipeline

    pipeline = build_pipeline(settings, retriever=TimedRetriever(settings, clock),
                              policy=TimedPolicy(settings, clock), signals=TimedSignals(clock))
    time_method(pipeline, "answer", clock, "pipeline")
    time_method(pipeline, "suggestions", clock, "suggestions")
    reranker = getattr(pipeline, "reranker", None)
    if reranker is not None:
        time_method(reranker, "rerank", clock, "rerank")
    return pipeline


def make_service(settings: Settings, pipeline: Pipeline, clock: Clock) -> Any:
    from chatbot.conversations.engine import make_engine
    from chatbot.conversations.service import ChatService

    service = ChatService(settings, pipeline, make_engine(settings))
    service._redactor = TimedRedactor(service._redactor, clock)  # measurement only
    return service
