"""The OpenAI-compatible HTTP generator: ``POST /v1/chat/completions`` on a vLLM, TGI or other
compatible server, behind the same ``Generator`` interface as the in-process model.

Timeouts and retries with exponential backoff (connection errors, 429, 5xx) come from settings;
streaming reads server-sent events. Every failure surfaces as ``GenerationError`` with a message
saying what to check; httpx exceptions never leak past this module.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from chatbot.config import Settings
from chatbot.errors import ConfigError, GenerationError
from chatbot.generation.base import (
    GenerationResult,
    GenerationStream,
    Prompt,
    as_messages,
    timed_result,
)

log = logging.getLogger(__name__)


class OpenAIHTTPGenerator:
    """``POST /v1/chat/completions`` on a vLLM/TGI/OpenAI-compatible server, with timeouts,
    retries with backoff on connection errors, 429 and 5xx, and SSE streaming."""

    def __init__(self, settings: Settings, *, backoff_s: float = 0.25) -> None:
        if not settings.generator_url:
            raise ConfigError(
                "CHATBOT_GENERATOR_BACKEND=openai needs CHATBOT_GENERATOR_URL "
                "(for example http://127.0.0.1:8000/v1)"
            )
        self.settings = settings
        self.name = settings.generator_model or "default"
        self.backoff_s = backoff_s
        base = settings.generator_url.rstrip("/")
        self.url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self._client: Any = None

    @property
    def loaded(self) -> bool:
        return self._client is not None

    def load(self) -> None:
        import httpx

        if self._client is None:
            headers = {"Content-Type": "application/json"}
            if self.settings.generator_api_key:
                headers["Authorization"] = f"Bearer {self.settings.generator_api_key}"
            self._client = httpx.Client(timeout=self.settings.generator_timeout_s, headers=headers)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _payload(self, prompt: Prompt, max_new_tokens: int | None, stream: bool) -> dict[str, Any]:
        return {
            "model": self.name, "messages": as_messages(prompt), "stream": stream,
            "max_tokens": max_new_tokens or self.settings.max_new_tokens,
            "temperature": self.settings.temperature, "seed": self.settings.seed,
        }

    def _with_retries(self, attempt: Callable[[], Any]) -> Any:
        """Run ``attempt`` until it succeeds; retry transport errors, 429 and 5xx."""
        import httpx

        tries = self.settings.generator_retries + 1
        last = ""
        for i in range(tries):
            try:
                return attempt()
            except httpx.HTTPStatusError as error:
                code = error.response.status_code
                last = f"HTTP {code}"
                if code != 429 and code < 500:
                    raise GenerationError(
                        f"generator at {self.url} refused the request ({last}): check "
                        "CHATBOT_GENERATOR_MODEL and CHATBOT_GENERATOR_API_KEY"
                    ) from error
            except httpx.TransportError as error:
                last = f"{type(error).__name__}: {error}"
            if i + 1 < tries:
                log.warning("generator request failed (%s), retry %d/%d", last, i + 1, tries - 1)
                time.sleep(min(self.backoff_s * 2**i, 4.0))
        raise GenerationError(
            f"generator at {self.url} failed after {tries} attempts ({last}); check that the "
            "server is running or switch CHATBOT_GENERATOR_BACKEND to transformers"
        )

    def generate(self, prompt: Prompt, max_new_tokens: int | None = None) -> GenerationResult:
        self.load()
        payload = self._payload(prompt, max_new_tokens, stream=False)

        def attempt() -> Any:
            response = self._client.post(self.url, json=payload)
            response.raise_for_status()
            return response.json()

        t0 = time.perf_counter()
        data = self._with_retries(attempt)
        t_end = time.perf_counter()
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as error:
            raise GenerationError(f"unexpected reply from {self.url}: {str(data)[:200]}") from error
        usage = data.get("usage") or {}
        tokens = int(usage.get("completion_tokens") or len(text.split()))
        # Without streaming the first token arrives with the rest: report the whole latency.
        return timed_result(text, tokens, int(usage.get("prompt_tokens") or 0), t0, t_end, t_end,
                       self.name, choice.get("finish_reason") or "stop")

    def stream(self, prompt: Prompt, max_new_tokens: int | None = None) -> GenerationStream:
        self.load()
        payload = self._payload(prompt, max_new_tokens, stream=True)
        stream = GenerationStream()

        def open_stream() -> Any:
            request = self._client.build_request("POST", self.url, json=payload)
            response = self._client.send(request, stream=True)
            if response.status_code >= 400:
                response.read()
                response.close()
                response.raise_for_status()
            return response

        def deltas() -> Iterator[str]:
            import httpx

            t0 = time.perf_counter()
            response = self._with_retries(open_stream)  # retried only before the first byte
            t_first: float | None = None
            parts: list[str] = []
            finish = "stop"
            try:
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        choice = json.loads(data)["choices"][0]
                    except (ValueError, KeyError, IndexError) as error:
                        raise GenerationError(
                            f"bad stream chunk from {self.url}: {data[:200]}") from error
                    finish = choice.get("finish_reason") or finish
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        t_first = t_first or time.perf_counter()
                        parts.append(piece)
                        yield piece
            except httpx.HTTPError as error:
                raise GenerationError(f"generator stream from {self.url} broke: {error}") from error
            finally:
                response.close()
            stream.result = timed_result("".join(parts), len(parts), 0, t0, t_first,
                                    time.perf_counter(), self.name, finish)

        stream._source = deltas()
        return stream
