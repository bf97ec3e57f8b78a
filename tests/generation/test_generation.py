"""The generator contract on a tiny real Llama, and the OpenAI-compatible HTTP generator against
a real local HTTP server (real sockets on 127.0.0.1, no mocking library)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tiny_lm import tiny_lm_dir  # noqa: F401  (session fixture)

from chatbot.config import Settings
from chatbot.errors import ConfigError, GenerationError, ModelError
from chatbot.generation import make_generator
from chatbot.generation.local import TransformersGenerator, resolve_adapter
from chatbot.generation.openai_http import OpenAIHTTPGenerator

MESSAGES = [
    {"role": "system", "content": "Answer using only the sources."},
    {"role": "user", "content": "Sources:\n[1] Standard shipping takes 3-5 business days.\n\n"
                                "Customer: how long is shipping?"},
]


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(var_dir=tmp_path / "var", torch_threads=1, _env_file=None)
    base.update(kw)
    return Settings(**base)


@pytest.fixture(scope="module")
def tiny_gen(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TransformersGenerator:  # noqa: F811
    s = _settings(tmp_path_factory.mktemp("gen"), generator_model=str(tiny_lm_dir),
                  generator_adapter="none", max_new_tokens=12)
    return TransformersGenerator(s)


def test_generator_is_lazy_until_first_use(tiny_gen: TransformersGenerator) -> None:
    fresh = TransformersGenerator(tiny_gen.settings)
    assert not fresh.loaded
    fresh.generate(MESSAGES, max_new_tokens=2)
    assert fresh.loaded


def test_generate_returns_non_empty_text_and_stats(tiny_gen: TransformersGenerator) -> None:
    result = tiny_gen.generate(MESSAGES)
    assert result.text.strip()
    assert result.tokens >= 1
    assert result.prompt_tokens > 10
    assert result.first_token_ms > 0 and result.total_ms >= result.first_token_ms


@pytest.mark.parametrize("n", [1, 3, 7])
def test_generate_respects_max_new_tokens(tiny_gen: TransformersGenerator, n: int) -> None:
    result = tiny_gen.generate(MESSAGES, max_new_tokens=n)
    assert 1 <= result.tokens <= n
    if result.finish_reason == "length":
        assert result.tokens == n
    # Greedy decoding: the short answer is the start of a longer one, so it was cut, not changed.
    longer = tiny_gen.generate(MESSAGES, max_new_tokens=n + 10)
    assert longer.tokens > result.tokens
    assert longer.text.startswith(result.text)


def test_greedy_generation_is_deterministic(tiny_gen: TransformersGenerator) -> None:
    assert tiny_gen.generate(MESSAGES).text == tiny_gen.generate(MESSAGES).text


def test_prompt_lookup_decoding_keeps_the_greedy_answer(tiny_lm_dir: Path,  # noqa: F811
                                                       tmp_path: Path) -> None:
    """Drafting tokens from the prompt is a speed-up only: greedy verification keeps the tokens
    plain greedy decoding picks, streamed or not."""
    def gen(lookup: int) -> TransformersGenerator:
        return TransformersGenerator(_settings(tmp_path, generator_model=str(tiny_lm_dir),
                                               generator_adapter="none",
                                               prompt_lookup_tokens=lookup))

    plain, drafted = gen(0), gen(5)
    drafted.load()
    # Widths of the forward passes after the prompt's: a pass wider than one token is the
    # model checking drafted tokens, so the drafted path really ran.
    widths: list[int] = []
    drafted.model.register_forward_pre_hook(
        lambda _m, args, kwargs: widths.append(int(kwargs["input_ids"].shape[1])),
        with_kwargs=True)
    # A prompt that repeats itself, so the drafts have n-grams to match.
    echo = [{"role": "user", "content": " ".join(["Standard shipping takes 3-5 business days."]
                                                 * 6)}]
    for messages in (MESSAGES, echo):
        expected = plain.generate(messages, max_new_tokens=30)
        widths.clear()
        assert drafted.generate(messages, max_new_tokens=30).text == expected.text
        assert max(widths[1:]) > 1
        assert "".join(drafted.stream(messages, max_new_tokens=30)).strip() == expected.text


def test_sampling_is_deterministic_under_a_seed(tiny_lm_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    def run(seed: int) -> str:
        s = _settings(tmp_path, generator_model=str(tiny_lm_dir), generator_adapter="none",
                      temperature=1.0, seed=seed)
        return TransformersGenerator(s).generate(MESSAGES, max_new_tokens=20).text

    first = run(7)
    assert run(7) == first
    assert run(8) != first  # sampling really samples: another seed, another text


def test_stream_yields_deltas_that_join_to_the_generated_text(
        tiny_gen: TransformersGenerator) -> None:
    stream = tiny_gen.stream(MESSAGES)
    pieces = list(stream)
    assert len(pieces) >= 2
    assert all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces).strip() == tiny_gen.generate(MESSAGES).text
    assert stream.result is not None and stream.result.tokens >= len(pieces)


def test_plain_string_prompt_is_accepted(tiny_gen: TransformersGenerator) -> None:
    assert tiny_gen.generate("where is my order", max_new_tokens=4).tokens >= 1


def test_missing_model_folder_is_a_model_error(tmp_path: Path) -> None:
    gen = TransformersGenerator(_settings(tmp_path, generator_model=str(tmp_path / "nope")))
    with pytest.raises(ModelError, match="CHATBOT_GENERATOR_MODEL"):
        gen.load()


def test_adapter_settings(tmp_path: Path) -> None:
    assert resolve_adapter(_settings(tmp_path, generator_adapter="none"), True) is None
    # The shipped adapter is for the default model only.
    assert resolve_adapter(_settings(tmp_path, generator_adapter="default"), False) is None
    with pytest.raises(ModelError, match="adapter_config.json"):
        resolve_adapter(_settings(tmp_path, generator_adapter=str(tmp_path)), True)


def test_factory_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(make_generator(_settings(tmp_path)), TransformersGenerator)
    http = make_generator(_settings(tmp_path, generator_backend="openai",
                                    generator_url="http://127.0.0.1:9/v1"))
    assert isinstance(http, OpenAIHTTPGenerator)
    assert http.url == "http://127.0.0.1:9/v1/chat/completions"
    with pytest.raises(ConfigError, match="CHATBOT_GENERATOR_URL"):
        make_generator(_settings(tmp_path, generator_backend="openai"))


# --- the HTTP generator against a real local server ---------------------------------------------


class FakeLLMServer:
    """An OpenAI-compatible server on a real socket. The next ``fail_next`` requests answer
    ``fail_status`` (with ``retry-after-ms: 10`` so the SDK's retries stay fast); ``delay_s``
    holds every answer back; ``stream_usage`` sends the final usage chunk when asked for it;
    ``client_gone`` is set when the client hangs up in the middle of a stream."""

    WORDS = ["Standard ", "shipping ", "takes ", "3-5 days ", "[1]."]

    def __init__(self) -> None:
        self.fail_next = 0
        self.fail_status = 500
        self.delay_s = 0.0
        self.stream_usage = False
        self.words = list(self.WORDS)
        self.chunk_delay_s = 0.0
        self.client_gone = threading.Event()
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "body": body,
                                       "auth": self.headers.get("Authorization")})
                try:
                    time.sleep(owner.delay_s)
                    if owner.fail_next > 0:
                        owner.fail_next -= 1
                        self._send_json(owner.fail_status, {"error": {"message": "overloaded"}},
                                        {"retry-after-ms": "10"})
                    elif body.get("stream"):
                        self._stream(body)
                    else:
                        self._send_json(200, {
                            "id": "c1", "object": "chat.completion", "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                "role": "assistant", "content": "".join(owner.words)}}],
                            "usage": {"prompt_tokens": 30, "completion_tokens": 5,
                                      "total_tokens": 35}})
                except (BrokenPipeError, ConnectionResetError):
                    owner.client_gone.set()

            def _send_json(self, status: int, reply: dict[str, Any],
                           headers: dict[str, str] | None = None) -> None:
                data = json.dumps(reply).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json",
                                   "Content-Length": str(len(data)), **(headers or {})}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()

                def send(chunk: dict[str, Any]) -> None:
                    chunk = {"id": "c1", "object": "chat.completion.chunk",
                             "model": body["model"], **chunk}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()

                for w in owner.words:
                    send({"choices": [{"index": 0, "delta": {"content": w},
                                       "finish_reason": None}]})
                    time.sleep(owner.chunk_delay_s)
                send({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if owner.stream_usage and (body.get("stream_options") or {}).get("include_usage"):
                    send({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 7,
                                                   "total_tokens": 37}})
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def llm_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    yield server
    server.close()


def _http(tmp_path: Path, url: str, **kw: Any) -> OpenAIHTTPGenerator:
    base: dict[str, Any] = dict(generator_backend="openai", generator_url=url,
                                generator_api_key="sk-test", generator_timeout_s=5)
    base.update(kw)
    return OpenAIHTTPGenerator(_settings(tmp_path, **base))


def test_http_generate(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    gen = _http(tmp_path, llm_server.url, generator_model="served-model", temperature=0.7,
                seed=42)
    assert not gen.loaded
    result = gen.generate(MESSAGES, max_new_tokens=9)
    assert gen.loaded
    assert result.text == "Standard shipping takes 3-5 days [1]."
    assert (result.tokens, result.prompt_tokens, result.finish_reason) == (5, 30, "stop")
    assert result.model == "served-model"
    sent = llm_server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    body = sent["body"]
    assert body["messages"] == MESSAGES and body["max_tokens"] == 9
    assert (body["model"], body["temperature"], body["seed"]) == ("served-model", 0.7, 42)
    assert not body.get("stream")
    assert sent["auth"] == "Bearer sk-test"
    gen.close()
    assert not gen.loaded


def test_http_appends_v1_to_a_bare_server_url(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    bare = llm_server.url.removesuffix("/v1") + "/"
    gen = _http(tmp_path, bare, generator_api_key="")
    assert gen.url == llm_server.url + "/chat/completions"
    assert gen.generate("how long is shipping?").text.startswith("Standard shipping")
    sent = llm_server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"] == [{"role": "user", "content": "how long is shipping?"}]
    assert sent["auth"] == "Bearer unused"


@pytest.mark.parametrize("server_usage", [False, True])
def test_http_stream_parses_server_sent_events(tmp_path: Path, llm_server: FakeLLMServer,
                                               server_usage: bool) -> None:
    llm_server.stream_usage = server_usage
    stream = _http(tmp_path, llm_server.url).stream(MESSAGES)
    pieces = list(stream)
    assert pieces == FakeLLMServer.WORDS
    assert stream.result is not None
    assert stream.result.text == "Standard shipping takes 3-5 days [1]."
    assert stream.result.finish_reason == "stop"
    # The server's usage when it reports one, otherwise the content chunks counted.
    expected = (7, 30) if server_usage else (5, 0)
    assert (stream.result.tokens, stream.result.prompt_tokens) == expected
    body = llm_server.requests[0]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_http_stream_cancel_closes_the_connection(tmp_path: Path,
                                                  llm_server: FakeLLMServer) -> None:
    llm_server.words = ["word "] * 1000
    llm_server.chunk_delay_s = 0.005
    stream = _http(tmp_path, llm_server.url).stream(MESSAGES)
    assert next(stream) == "word "
    stream.cancel()
    assert stream.cancelled.is_set()
    assert llm_server.client_gone.wait(5), "the HTTP response stayed open after cancel()"
    assert stream.result is None
    with pytest.raises(StopIteration):
        next(stream)


@pytest.mark.parametrize("status", [500, 503, 429])
@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_http_retries_after_a_server_error(tmp_path: Path, llm_server: FakeLLMServer,
                                           mode: str, status: int) -> None:
    llm_server.fail_next = 2
    llm_server.fail_status = status
    gen = _http(tmp_path, llm_server.url, generator_retries=2)
    text = gen.generate(MESSAGES).text if mode == "generate" else "".join(gen.stream(MESSAGES))
    assert text.startswith("Standard shipping")
    assert len(llm_server.requests) == 3


@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_http_gives_a_clean_error_when_the_server_stays_down(tmp_path: Path,
                                                             llm_server: FakeLLMServer,
                                                             mode: str) -> None:
    llm_server.fail_next = 100
    gen = _http(tmp_path, llm_server.url, generator_retries=1)
    with pytest.raises(GenerationError,
                       match="failed after 2 attempts.*HTTP 500.*CHATBOT_GENERATOR_BACKEND"):
        gen.generate(MESSAGES) if mode == "generate" else list(gen.stream(MESSAGES))
    assert len(llm_server.requests) == 2


@pytest.mark.parametrize("status", [401, 400, 404])
@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_http_refusal_is_not_retried(tmp_path: Path, llm_server: FakeLLMServer, mode: str,
                                     status: int) -> None:
    llm_server.fail_next = 1
    llm_server.fail_status = status
    gen = _http(tmp_path, llm_server.url, generator_retries=3)
    with pytest.raises(GenerationError, match=rf"refused the request \(HTTP {status}.*"
                                              "CHATBOT_GENERATOR_MODEL and "
                                              "CHATBOT_GENERATOR_API_KEY"):
        gen.generate(MESSAGES) if mode == "generate" else list(gen.stream(MESSAGES))
    assert len(llm_server.requests) == 1


def test_http_times_out_and_retries(tmp_path: Path, llm_server: FakeLLMServer) -> None:
    llm_server.delay_s = 1.0
    gen = _http(tmp_path, llm_server.url, generator_timeout_s=0.2, generator_retries=1)
    started = time.monotonic()
    with pytest.raises(GenerationError, match=r"failed after 2 attempts \(timed out after 0.2s\)"):
        gen.generate(MESSAGES)
    assert time.monotonic() - started < 5
    assert len(llm_server.requests) == 2


def test_http_gives_a_clean_error_when_nothing_listens(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gen = _http(tmp_path, f"http://127.0.0.1:{port}", generator_retries=1)
    with pytest.raises(GenerationError, match="failed after 2 attempts.*ConnectError"):
        list(gen.stream(MESSAGES))


@pytest.mark.slow
def test_default_smollm2_converts_once_and_answers(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The shipped GGUF is converted to an HF folder once, the shipped adapter (when present)
    is merged, and a grounded question gets an answer."""
    from chatbot.generation.local import DEFAULT_ADAPTER, default_model_dir

    s = _settings(tmp_path_factory.mktemp("smol"), torch_threads=2)
    gen = TransformersGenerator(s)
    result = gen.generate(MESSAGES, max_new_tokens=40)
    assert (default_model_dir(s) / "config.json").is_file()
    assert result.text.strip() and 1 <= result.tokens <= 40
    assert gen.name.startswith("SmolLM2-135M-Instruct")
    if (DEFAULT_ADAPTER / "adapter_config.json").is_file():
        assert gen.adapter == DEFAULT_ADAPTER
    again = TransformersGenerator(s)
    again.load()  # from the converted folder now: no second conversion
    assert again.generate(MESSAGES, max_new_tokens=40).text == result.text
