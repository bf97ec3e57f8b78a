"""The client side of the load benchmark: a minimal asyncio HTTP/1.1 client, closed-loop
conversations against a server, and the check that the database holds exactly what was sent.

``RawClient`` exists because httpx costs about 4 ms of CPU per request, more than the server
spends on a cached FAQ answer: on a 2-core machine the load generator would measure itself.
Every request is counted in a ``Run`` (latencies, routes, errors, the conversations and bot
message ids the server returned), which ``check_database`` then compares with the rows.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    conversations: set[str] = field(default_factory=set)
    bot_message_ids: set[str] = field(default_factory=set)
    sent: int = 0  # requests whose customer message the server accepted (or may have)
    started: int = 0  # of those, first turns: each opens a conversation
    error_samples: list[str] = field(default_factory=list)
    unsure: int = 0  # requests lost in transport: delivered or not, the client cannot tell
    unsure_first: int = 0  # of those, first turns


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until_up(base: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                await client.get(f"{base}/api/v1/health")
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
    raise RuntimeError("server did not come up")


async def ask(client: Any, base: str, run: Run, message: str,
              conversation_id: str | None) -> str | None:
    body: dict[str, Any] = {"message": message, "channel": "api"}
    if conversation_id:
        body["conversation_id"] = conversation_id
    started = time.perf_counter()
    run.sent += 1
    run.started += conversation_id is None
    try:
        response = await client.post(f"{base}/api/v1/chat", json=body)
    except Exception as error:  # count, never crash the run
        run.errors[type(error).__name__] += 1
        # a transport error leaves open whether the server got the message: see check_database
        run.unsure += 1
        run.unsure_first += conversation_id is None
        if len(run.error_samples) < 5:
            run.error_samples.append(
                f"{type(error).__name__} after {time.perf_counter() - started:.2f} s: {error!r}")
        return conversation_id
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        run.errors[f"HTTP {response.status_code}"] += 1
        if response.status_code == 422:
            run.sent -= 1  # rejected before anything was stored
            run.started -= conversation_id is None
        return conversation_id
    data = response.json()
    run.latencies_ms.append(elapsed)
    run.routes[data["route"]] += 1
    run.conversations.add(data["conversation_id"])
    run.bot_message_ids.add(data["message_id"])
    return str(data["conversation_id"])


class RawResponse:
    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self._body = body

    def json(self) -> Any:
        return json.loads(self._body)


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, one connection per worker.

    httpx costs about 4 ms of CPU per request, more than the server spends answering an FAQ
    question; on a 2-core machine the load generator would then measure itself. This client
    only builds a request, reads the status line, headers and a Content-Length body (the
    JSON endpoints do not use chunked encoding), costing a fraction of that.
    """

    def __init__(self, base: str) -> None:
        host_port = base.split("://", 1)[1].rstrip("/")
        self.host, port = host_port.split(":")
        self.port = int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, url: str, json: Any) -> RawResponse:  # noqa: A002 - httpx's name
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
        payload = _json_dumps(json).encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = (line.partition(":") for line in lines[1:] if line)
        headers = {k.strip().lower(): v.strip() for k, _, v in fields}
        body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return RawResponse(status, body)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def find_faq_questions(base: str, candidates: list[str], run: Run) -> list[str]:
    """Ask each candidate once (logged like any request) and keep those routed to an FAQ."""
    import httpx

    kept = []
    async with httpx.AsyncClient(timeout=120) as client:
        for question in candidates:
            before = run.routes["faq"]
            await ask(client, base, run, question, None)
            if run.routes["faq"] > before:
                kept.append(question)
    return kept


async def load(base: str, questions: list[str], *, concurrency: int, turns: int,
               max_requests: int, max_seconds: float, run: Run,
               raw_client: bool = True) -> float:
    """``concurrency`` conversations at once, each asking ``turns`` questions in a row; the
    questions are taken in order from one shared stream (so with as many questions as requests,
    each is sent once), wrapping around when the list is shorter."""
    import httpx

    budget = {"left": max_requests}
    stream = itertools.count()
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def conversation(client: Any) -> None:
        while time.monotonic() < deadline and budget["left"] > 0:
            conversation_id = None
            for _ in range(turns):
                if time.monotonic() >= deadline or budget["left"] <= 0:
                    return
                budget["left"] -= 1
                question = questions[next(stream) % len(questions)]
                conversation_id = await ask(client, base, run, question, conversation_id)

    started = time.perf_counter()
    if raw_client:
        clients = [RawClient(base) for _ in range(concurrency)]
        try:
            await asyncio.gather(*(conversation(c) for c in clients))
        finally:
            for raw in clients:
                await raw.aclose()
        return time.perf_counter() - started
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(conversation(client) for _ in range(concurrency)))
    return time.perf_counter() - started


def check_database(url: str, run: Run) -> dict[str, Any]:
    """The database must hold exactly what was sent: conversations, customer and bot messages."""
    from sqlalchemy import func, select

    from chatbot.conversations.engine import make_engine
    from chatbot.conversations.models import Conversation, Message

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            conversations = set(connection.scalars(select(Conversation.id)))
            customer = connection.scalar(
                select(func.count(Message.id)).where(Message.role == "customer"))
            bot_ids = set(connection.scalars(select(Message.id).where(Message.role == "bot")))
    finally:
        engine.dispose()
    client_errors = sum(run.errors.values())
    late = len(bot_ids - run.bot_message_ids)
    result: dict[str, Any] = {
        "conversations_expected": run.started,
        "conversations_in_db": len(conversations),
        "customer_messages_expected": run.sent,
        "customer_messages_in_db": int(customer or 0),
        "bot_messages_expected": len(run.bot_message_ids),
        "bot_messages_in_db": len(bot_ids),
        # replies the server logged after the client had given up on them (timeouts)
        "late_bot_messages": late,
    }
    result["requests_lost_in_transport"] = run.unsure
    customer_in_db = result["customer_messages_in_db"]
    result["passed"] = (
        run.started - run.unsure_first <= len(conversations) <= run.started
        and run.conversations <= conversations
        and run.sent - run.unsure <= customer_in_db <= run.sent
        and run.bot_message_ids <= bot_ids and late <= client_errors
    )
    result["exact"] = (result["passed"] and late == 0 and customer_in_db == run.sent
                       and len(conversations) == run.started)
    return result
