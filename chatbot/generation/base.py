"""The generator interface every backend implements, and the types it returns.

``Generator`` is what the pipeline, the evaluators and the benchmarks code against; the
in-process transformers model (``chatbot.generation.local``) and the OpenAI-compatible HTTP
client (``chatbot.generation.openai_http``) implement it. ``make_generator`` (in the package)
picks one from the settings.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

Message = dict[str, str]  # one chat message: {"role": ..., "content": ...}
Prompt = str | Sequence[Message]


@dataclass(frozen=True)
class GenerationResult:
    """A finished generation with its cost. ``tokens_per_s`` is the decode rate after the first
    token (prefill is reported separately as ``first_token_ms``)."""

    text: str
    tokens: int
    prompt_tokens: int
    first_token_ms: float
    total_ms: float
    tokens_per_s: float
    model: str
    finish_reason: str = "stop"  # "stop" (end of turn), "length" (max_new_tokens), "cancelled"


def timed_result(text: str, tokens: int, prompt_tokens: int, t0: float, t_first: float | None,
                 t_end: float, model: str, finish: str) -> GenerationResult:
    """A result timed from the start (``t0``), first token and end of a generation."""
    first_ms = ((t_first or t_end) - t0) * 1000
    decode_s = t_end - (t_first or t_end)
    rate = (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else 0.0
    return GenerationResult(text.strip(), tokens, prompt_tokens, first_ms, (t_end - t0) * 1000,
                            rate, model, finish)


class GenerationStream(Iterator[str]):
    """Text deltas as they are produced; ``result`` is set once the iterator is exhausted."""

    def __init__(self) -> None:
        self.result: GenerationResult | None = None
        self.cancelled = threading.Event()
        self._source: Iterator[str] = iter(())

    def __next__(self) -> str:
        return next(self._source)

    def cancel(self) -> None:
        """Stop generating (the caller has what it needs); frees the model for the next one.
        Returns once the generation has stopped: a backend's worker thread is joined and an
        HTTP response closed when its iterator is closed, so nothing outlives the stream."""
        self.cancelled.set()
        close = getattr(self._source, "close", None)
        if close is not None:
            # ValueError: it is being iterated in another thread; the backend sees the event
            # and stops, and that thread's iteration ends (and joins) by itself.
            with contextlib.suppress(ValueError):
                close()


class Generator(Protocol):
    """What the pipeline, the evaluators and the benchmarks need from a generator."""

    name: str

    @property
    def loaded(self) -> bool: ...

    def load(self) -> None: ...

    def generate(self, prompt: Prompt, max_new_tokens: int | None = None) -> GenerationResult: ...

    def stream(self, prompt: Prompt, max_new_tokens: int | None = None) -> GenerationStream: ...


def as_messages(prompt: Prompt) -> list[Message]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


