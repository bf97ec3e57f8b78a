"""The database goes away during a load run and comes back.

A private PostgreSQL (initdb + pg_ctl in a temporary folder, on a free port), the real app on a
real uvicorn server (the stand-in pipeline: the database is what is under test), client threads
sending chats in a bounded loop. Mid-run the database is stopped (``pg_ctl stop -m fast``): chat
answers 503 with a clear error and /health says why; it is started again: the app recovers on its
own (the pool's pre-ping replaces dead connections); finally every message that got a 200 is in
the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from faultkit import private_postgres, uvicorn_server
from sqlalchemy import create_engine, select
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.conversations.engine import upgrade
from chatbot.conversations.models import Message
from chatbot.errors import DatabaseUnavailableError
from chatbot.web.app import create_app

CLEAR_ERROR = {"error": DatabaseUnavailableError.MESSAGE}
CLIENTS = 4
MAX_REQUESTS = 4000  # a bound on the whole run, whatever the machine's speed


@dataclass
class LoadRun:
    """Client threads chatting until told to stop; every answer is recorded."""

    base: str
    ok: list[tuple[str, dict]] = field(default_factory=list)  # (message sent, 200 body)
    refused: list[tuple[int, dict]] = field(default_factory=list)  # (status, body) of the rest
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0

    def client(self, n: int) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as http:
            i = 0
            while not self.stop.is_set():
                with self.lock:
                    if self.sent >= MAX_REQUESTS:
                        return
                    self.sent += 1
                i += 1
                text = f"client {n} message {i}: how long is delivery"
                response = http.post("/api/v1/chat", json={"message": text})
                with self.lock:
                    if response.status_code == 200:
                        self.ok.append((text, response.json()))
                    else:
                        self.refused.append((response.status_code, response.json()))
                if response.status_code != 200:
                    time.sleep(0.05)  # a client backing off a little, as real ones do

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return len(self.ok), len(self.refused)


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_chat_survives_a_database_restart_mid_load(settings: Settings) -> None:
    with private_postgres() as pg:
        s = settings.model_copy(update={"database_url": pg.url, "rate_limit_per_minute": 0})
        upgrade(s)
        app = create_app(s, pipeline=StandInPipeline(), mount_ui=False)
        with uvicorn_server(app) as base:
            run = LoadRun(base)
            clients = [threading.Thread(target=run.client, args=(n,), daemon=True)
                       for n in range(CLIENTS)]
            for thread in clients:
                thread.start()
            try:
                assert wait_for(lambda: run.counts()[0] >= 20, 120), "no load before the outage"
                pg.stop("fast")
                before = run.counts()
                assert wait_for(lambda: run.counts()[1] >= before[1] + 10, 60), \
                    "the outage produced no refusals"
                health = httpx.get(f"{base}/api/v1/health", timeout=30)
                assert health.status_code == 503
                assert health.json()["database"] == "unavailable"
                reason = health.json()["reason"]
                assert reason.startswith("the database is unavailable: ")
                assert str(pg.port) not in reason  # says why, never where the database is
                pg.start()
                during = run.counts()
                assert wait_for(lambda: run.counts()[0] >= during[0] + 20, 120), \
                    "the app did not recover after the database came back"
            finally:
                run.stop.set()
                for thread in clients:
                    thread.join(60)
            health = httpx.get(f"{base}/api/v1/health", timeout=30)
            assert health.status_code == 200 and health.json()["database"] == "ok"
            assert health.json()["reason"] is None

        # Refusals were all the clear, retryable 503; never a 500.
        assert run.refused
        assert {status for status, _ in run.refused} == {503}
        assert all(body == CLEAR_ERROR for _, body in run.refused)

        # Every answered message (customer's and bot's) is stored.
        engine = create_engine(pg.url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    select(Message.id, Message.conversation_id, Message.role, Message.text)
                ).all()
        finally:
            engine.dispose()
        customer = {(r.conversation_id, r.text) for r in rows if r.role == "customer"}
        bot_ids = {r.id for r in rows if r.role != "customer"}
        missing = [text for text, body in run.ok
                   if (body["conversation_id"], text) not in customer
                   or body["message_id"] not in bot_ids]
        assert not missing, f"{len(missing)} answered messages are not in the database"
