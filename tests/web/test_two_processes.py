"""Two real server processes on one PostgreSQL: a customer connected to process A and an agent
working through process B meet.

Each process is ``uvicorn --factory standin_app:create`` (the real app, the stand-in pipeline)
on its own free port, with the same ``CHATBOT_DATABASE_URL`` (a fresh schema). The followers'
periodic re-read is set to an hour, so what crosses between the processes can only have come
through PostgreSQL LISTEN/NOTIFY. Both processes are killed in ``finally``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dbfixtures import create_schema, drop_schema, postgres_schema_url
from live_helpers import EventReader

from chatbot.config import Settings
from chatbot.conversations.agents import AgentDesk
from chatbot.conversations.engine import make_engine, upgrade

pytestmark = pytest.mark.postgres
TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(database_url: str, tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "CHATBOT_DATABASE_URL": database_url,
           "CHATBOT_VAR_DIR": str(tmp / name), "CHATBOT_TEST_EVENTS_POLL_S": "3600",
           "CHATBOT_RATE_LIMIT_PER_MINUTE": "0", "CHATBOT_WEBHOOK_URLS": "",
           "CHATBOT_REDIS_URL": "", "PYTHONPATH": os.pathsep.join(
               [str(TESTS), str(TESTS / "web"), os.environ.get("PYTHONPATH", "")])}
    with open(tmp / f"{name}.log", "wb") as log:  # the child keeps its own copy of the file
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "standin_app:create", "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def wait_ready(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"server at {base} never became ready")


@pytest.fixture
def shared_database(postgres_url: str) -> Iterator[str]:
    schema = create_schema(postgres_url)
    url = postgres_schema_url(postgres_url, schema)
    try:
        upgrade(url)
        yield url
    finally:
        drop_schema(postgres_url, schema)


def test_a_customer_on_one_process_and_an_agent_on_another_meet(shared_database: str,
                                                                 tmp_path: Path) -> None:
    engine = make_engine(shared_database)
    _, token = AgentDesk.standalone(Settings(_env_file=None),  # type: ignore[call-arg]
                                    engine).add("Sam")
    engine.dispose()
    agent = {"Authorization": f"Bearer {token}"}
    servers = [start_server(shared_database, tmp_path, name) for name in ("a", "b")]
    try:
        for (process, base), name in zip(servers, ("a", "b"), strict=True):
            wait_ready(process, base, tmp_path / f"{name}.log")
        (_, a), (_, b) = servers
        with httpx.Client(timeout=30) as http:
            conv = http.post(f"{a}/api/v1/chat", json={"message": "I want a human"}).json()[
                "conversation_id"]
            with EventReader(f"{a}/api/v1/conversations/{conv}/events") as customer, \
                    EventReader(f"{b}/api/v1/agent/conversations/{conv}/events",
                                agent) as desk:
                assert customer.next("ready").data["status"] == "handed_off"
                desk.next("ready")

                # The agent works on B; the customer, connected to A, sees it live.
                assert http.post(f"{b}/api/v1/agent/conversations/{conv}/claim",
                                 headers=agent).status_code == 200
                assert customer.next().name == "agent_joined"
                http.post(f"{b}/api/v1/agent/conversations/{conv}/reply", headers=agent,
                          json={"text": "Hello from process B"})
                message = customer.next()
                assert (message.name, message.data["text"], message.data["agent"]) == (
                    "agent_message", "Hello from process B", "Sam")

                # The customer writes on A; the agent, connected to B, sees it live.
                said = http.post(f"{a}/api/v1/chat", json={
                    "message": "Thanks! From process A", "conversation_id": conv}).json()
                assert said["route"] == "agent"
                heard = desk.next("customer_message")
                assert heard.data["text"] == "Thanks! From process A"

                assert http.post(f"{b}/api/v1/agent/conversations/{conv}/resolve",
                                 headers=agent).status_code == 200
                assert customer.next().name == "resolved"
    finally:
        for process, _ in servers:
            process.terminate()
        for process, _ in servers:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)
