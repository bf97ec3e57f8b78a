"""``chatbot serve`` as a real process: ``--workers 2`` where each worker loads and warms its
models before it accepts a connection, and the refusal to serve a non-loopback address with the
development admin token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from faultkit import free_port
from typer.testing import CliRunner

from chatbot.cli import app as cli
from chatbot.config import Settings, check_bind, is_loopback
from chatbot.errors import ConfigError


def test_serve_with_two_workers_answers_only_when_warm(tmp_path: Path, tiny_kb: Path,
                                                       cut_lm: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "CHATBOT_VAR_DIR": str(tmp_path / "var"), "CHATBOT_KNOWLEDGE_BASE": str(tiny_kb),
           "CHATBOT_EMBEDDING_BACKEND": "torch", "CHATBOT_GENERATOR_MODEL": str(cut_lm),
           "CHATBOT_GENERATOR_ADAPTER": "none", "CHATBOT_MAX_NEW_TOKENS": "16",
           "CHATBOT_RATE_LIMIT_PER_MINUTE": "0", "CHATBOT_LOG_LEVEL": "INFO"}
    env.pop("CHATBOT_TORCH_THREADS", None)  # serve shares the cores out between the workers
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "chatbot", "serve", "--workers", "2", "--host", "127.0.0.1",
             "--port", str(port)], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: the workers go with it
    base = f"http://127.0.0.1:{port}"
    try:
        # The port is bound before the workers start, but a worker accepts connections only
        # after its start-up has loaded the models: so every answer /health gives is "ready".
        statuses = []
        deadline = time.monotonic() + 300
        while not statuses:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no worker became ready"
            try:
                statuses.append(httpx.get(f"{base}/api/v1/health", timeout=300).status_code)
            except httpx.TransportError:  # the parent has not bound the port yet
                time.sleep(0.2)
        with ThreadPoolExecutor(8) as pool:
            statuses += pool.map(lambda _: httpx.get(f"{base}/api/v1/health",
                                                     timeout=120).status_code, range(16))
            chats = list(pool.map(lambda n: httpx.post(
                f"{base}/api/v1/chat", json={"message": f"how long is delivery? ({n})"},
                timeout=120), range(16)))
        assert set(statuses) == {200}
        assert {c.status_code for c in chats} == {200}
        assert all(c.json()["reply"] for c in chats)
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn's supervisor stops its workers
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
    text = log.read_text()
    assert server.returncode == 0, text[-3000:]
    assert text.count("Application startup complete") == 2, text[-3000:]
    # Each worker warmed its own models at start-up (the parent only built the index).
    assert text.count("chatbot.generation.local: generator") == 2, text[-3000:]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "shop.example"])
def test_serve_refuses_the_dev_token_off_loopback(host: str, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env, nothing written
    for name in ("CHATBOT_ADMIN_TOKEN", "CHATBOT_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHATBOT_VAR_DIR", str(tmp_path / "var"))
    result = CliRunner().invoke(cli, ["serve", "--host", host])
    assert result.exit_code == 1
    assert "set CHATBOT_ADMIN_TOKEN" in result.output and "bind to 127.0.0.1" in result.output
    assert not (tmp_path / "var").exists()  # refused before touching anything


def test_the_dev_token_serves_loopback_and_a_real_token_anything() -> None:
    dev = Settings(_env_file=None)  # type: ignore[call-arg]
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host)
        check_bind(dev, host)
    with pytest.raises(ConfigError, match="development admin token"):
        check_bind(dev, "0.0.0.0")
    with pytest.raises(ConfigError):  # the dev token set on purpose is still the dev token
        check_bind(Settings(admin_token="dev-admin-token", _env_file=None), "0.0.0.0")  # type: ignore[call-arg]
    check_bind(Settings(admin_token="s3cret-token", _env_file=None), "0.0.0.0")  # type: ignore[call-arg]
