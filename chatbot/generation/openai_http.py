"""The OpenAI-compatible HTTP generator: ``POST /v1/chat/completions`` on a vLLM, TGI or other
compatible server, behind the same ``Generator`` interface as the in-process model.

This module owns the mapping between our settings and the ``openai`` SDK (base URL, model,
API key, ``max_tokens``, ``temperature``, ``seed``), turning replies into ``GenerationResult``
and turning every failure into a ``GenerationError`` whose message says what to check; no
``openai`` exception leaks past it. Timeouts, retries with backoff (connection errors,
timeouts, 408/409/429 and 5xx; streams only before the first chunk) and server-sent-event
parsing come from the SDK.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai

from chatbot.config import Settings
from chatbot.errors import ConfigError, GenerationError
from chatbot.generation.base import (
    GenerationResult,
    GenerationStream,
    Prompt,
    as_messages,
    timed_result,
)

# 4xx answers the SDK retries like 5xx (request timeout, lock conflict, rate limit); any other
# 4xx is the server refusing this request, which no retry will fix.
_RETRIED_4XX = frozenset({408, 409, 429})


class OpenAIHTTPGenerator:
    """``POST /v1/chat/completions`` on a vLLM/TGI/OpenAI-compatible server through the
    ``openai`` SDK, which does the timeouts, retries and streaming."""

    def __init__(self, settings: Settings) -> None:
        if not settings.generator_url:
            raise ConfigError(
                "CHATBOT_GENERATOR_BACKEND=openai needs CHATBOT_GENERATOR_URL "
                "(for example http://127.0.0.1:8000/v1)"
            )
        self.settings = settings
        self.name = settings.generator_model or "default"
        base = settings.generator_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.url = self.base_url + "/chat/completions"  # for messages: where requests go
        self._client: openai.OpenAI | None = None

    @property
    def loaded(self) -> bool:
        return self._client is not None

    def load(self) -> None:
        if self._client is None:
            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=self.settings.generator_api_key or "unused",
                timeout=self.settings.generator_timeout_s,
                max_retries=self.settings.generator_retries,
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _create(self, prompt: Prompt, max_new_tokens: int | None, stream: bool) -> Any:
        """One ``chat.completions.create`` call (the SDK retries it); SDK errors become
        ``GenerationError``."""
        self.load()
        assert self._client is not None
        extra: dict[str, Any] = {}
        if stream:  # ask for a final usage chunk; servers that ignore it get counted chunks
            extra["stream_options"] = {"include_usage": True}
        try:
            return self._client.chat.completions.create(
                model=self.name,
                messages=as_messages(prompt),  # type: ignore[arg-type]
                max_tokens=max_new_tokens or self.settings.max_new_tokens,
                temperature=self.settings.temperature,
                seed=self.settings.seed,
                stream=stream,
                **extra,
            )
        except openai.OpenAIError as error:
            raise self._error(error) from error

    def _error(self, error: openai.OpenAIError) -> GenerationError:
        """The ``GenerationError`` for a failed request, saying what to check."""
        if isinstance(error, openai.APIStatusError):
            code = error.status_code
            if 400 <= code < 500 and code not in _RETRIED_4XX:
                return GenerationError(
                    f"generator at {self.url} refused the request ({_detail(error)}): check "
                    "CHATBOT_GENERATOR_MODEL and CHATBOT_GENERATOR_API_KEY"
                )
        elif isinstance(error, openai.APIResponseValidationError):
            return GenerationError(f"unexpected reply from {self.url}: {_detail(error)}")
        elif not isinstance(error, openai.APIConnectionError):  # not a request that was retried
            return GenerationError(f"generator at {self.url} failed ({_detail(error)})")
        tries = self.settings.generator_retries + 1
        return GenerationError(
            f"generator at {self.url} failed after {tries} attempt{'s' * (tries != 1)} "
            f"({_detail(error, self.settings.generator_timeout_s)}); check that the server is "
            "running or switch CHATBOT_GENERATOR_BACKEND to transformers"
        )

    def generate(self, prompt: Prompt, max_new_tokens: int | None = None) -> GenerationResult:
        t0 = time.perf_counter()
        completion = self._create(prompt, max_new_tokens, stream=False)
        t_end = time.perf_counter()
        try:
            choice = completion.choices[0]
            text = choice.message.content or ""
        except (AttributeError, IndexError, TypeError) as error:
            raise GenerationError(
                f"unexpected reply from {self.url}: {_short(str(completion))}") from error
        usage = getattr(completion, "usage", None)
        tokens = int(getattr(usage, "completion_tokens", 0) or len(text.split()))
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        # Without streaming the first token arrives with the rest: report the whole latency.
        return timed_result(text, tokens, prompt_tokens, t0, t_end, t_end, self.name,
                            getattr(choice, "finish_reason", None) or "stop")

    def stream(self, prompt: Prompt, max_new_tokens: int | None = None) -> GenerationStream:
        self.load()
        stream = GenerationStream()

        def deltas() -> Iterator[str]:
            t0 = time.perf_counter()
            # The request goes out on the first ``next``; the SDK retries it before any chunk.
            chunks = self._create(prompt, max_new_tokens, stream=True)
            t_first: float | None = None
            parts: list[str] = []
            finish = "stop"
            usage: Any = None
            try:
                for chunk in chunks:
                    if stream.cancelled.is_set():
                        finish = "cancelled"
                        break
                    usage = getattr(chunk, "usage", None) or usage
                    if not chunk.choices:  # the usage-only final chunk
                        continue
                    choice = chunk.choices[0]
                    finish = choice.finish_reason or finish
                    piece = (choice.delta.content if choice.delta is not None else None) or ""
                    if piece:
                        t_first = t_first or time.perf_counter()
                        parts.append(piece)
                        yield piece
            except openai.OpenAIError as error:  # after the first chunk: not retried
                raise GenerationError(
                    f"generator stream from {self.url} broke after {len(parts)} chunks "
                    f"({_detail(error, self.settings.generator_timeout_s)}); check the "
                    "server's log") from error
            except (ValueError, AttributeError, TypeError) as error:  # a chunk that isn't one
                raise GenerationError(
                    f"bad stream chunk from {self.url}: {_short(str(error))}") from error
            finally:
                chunks.close()  # also on cancel/early close: releases the HTTP response
            tokens = int(getattr(usage, "completion_tokens", 0) or len(parts))
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            stream.result = timed_result("".join(parts), tokens, prompt_tokens, t0, t_first,
                                         time.perf_counter(), self.name, finish)

        stream._source = deltas()
        return stream


def _detail(error: openai.OpenAIError, timeout_s: float | None = None) -> str:
    """What went wrong, in one short line: the HTTP status, the timeout or the socket error."""
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {_short(error.message)}"
    if isinstance(error, openai.APITimeoutError):
        return f"timed out after {timeout_s:g}s" if timeout_s else "timed out"
    cause = error.__cause__
    if isinstance(error, openai.APIConnectionError) and cause is not None:
        return f"{type(cause).__name__}: {_short(str(cause))}"
    return f"{type(error).__name__}: {_short(str(error))}"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
