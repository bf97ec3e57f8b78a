"""Outgoing webhooks: signed POSTs to the team's systems, retried, logged for the admin.

Owns: turning committed conversation events into webhook events (``handoff_created`` ->
``handoff.created``, ``resolved`` -> ``conversation.resolved``; ``send`` takes any other, such
as later alerts), the body (``json``: ``{"id", "event", "created_at", "data"}``; ``slack``: a
``{"text"}`` an incoming-webhook URL accepts), the signature (``X-Chatbot-Signature:
sha256=<hex>``, HMAC-SHA256 of the raw body with ``CHATBOT_WEBHOOK_SECRET``), retries with
exponential back-off, and the ``webhook_deliveries`` rows the admin reads.

Nothing here can slow down or fail a chat: ``send`` only puts the job on a queue; one daemon
thread writes the log rows and makes the calls (a 4xx other than 408/429 is final, anything else
is retried ``webhook_retries`` times, waiting ``webhook_backoff_s`` doubling each time). Jobs
still waiting when the process stops are lost; their rows stay ``pending`` in the log.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine, insert, select, update

from chatbot.config import Settings, mask_url
from chatbot.conversations.events import Event
from chatbot.conversations.models import WebhookDelivery, new_id, utcnow
from chatbot.conversations.views import ReadModel, UtcDatetime

log = logging.getLogger(__name__)

# Conversation events that become webhooks, and their public names.
EVENT_NAMES = {"handoff_created": "handoff.created", "resolved": "conversation.resolved"}
SIGNATURE_HEADER = "X-Chatbot-Signature"
MAX_BACKOFF_S = 3600.0
ERROR_CHARS = 500


class DeliveryView(ReadModel):
    """A row of the admin's webhook log (the URL without its secret path)."""

    id: str
    event: str
    url: str
    status: str
    attempts: int
    last_error: str | None
    created_at: UtcDatetime
    delivered_at: UtcDatetime | None


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute the signature and compare in constant time."""
    return bool(header) and hmac.compare_digest(sign(secret, body), str(header))


def slack_text(event: str, data: dict[str, Any]) -> str:
    """One readable line for a Slack-compatible channel (no customer text: a chat channel is
    not the place for it; the inbox has the transcript)."""
    conversation = data.get("conversation_id", "?")
    if event == "handoff.created":
        urgent = ":rotating_light: High-priority hand-over" if data.get("priority") == "high" \
            else "New hand-over"
        return (f"{urgent}: conversation {conversation} is waiting in the inbox "
                f"({data.get('reason') or 'no reason given'}).")
    if event == "conversation.resolved":
        return f"Conversation {conversation} was resolved by {data.get('agent') or 'an agent'}."
    return f"{event}: {json.dumps(data, ensure_ascii=False)}"


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    delivery_id: str = field(compare=False)
    event: str = field(compare=False)
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    attempts: int = field(default=0, compare=False)


class WebhookSender:
    """The background sender (see the module docstring). ``transport`` lets a test route the
    calls; ``send`` is safe from any thread."""

    def __init__(self, settings: Settings, engine: Engine,
                 *, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.engine = engine
        self.urls = list(settings.webhook_urls)
        self._secret = settings.webhook_secret
        self._clock = clock
        self._transport = transport
        self._inbox: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._waiting: list[_Job] = []  # retries, a heap by due time
        self._seq = itertools.count()
        self._busy = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        if self.urls and not self._secret:
            log.warning("CHATBOT_WEBHOOK_URLS without CHATBOT_WEBHOOK_SECRET: webhooks go out "
                        "unsigned (set a secret so receivers can check them)")

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    # --- the producer side -------------------------------------------------------------------
    def handle(self, event: Event) -> None:
        """An ``EventBus`` handler: committed events that are webhooks go out."""
        name = EVENT_NAMES.get(event.type)
        if name is not None:
            self.send(name, {"conversation_id": event.conversation_id, **event.data})

    def send(self, event: str, data: dict[str, Any]) -> None:
        """Queue ``event`` for every URL; returns at once and never raises."""
        if not self.urls:
            return
        try:
            self.start()
            with self._idle:
                self._busy += 1
            self._inbox.put((event, data))
        except Exception:  # a webhook must never fail the request that caused it
            log.exception("queueing webhook %s failed", event)

    # --- the admin's log ---------------------------------------------------------------------
    def deliveries(self, limit: int = 100, offset: int = 0) -> list[DeliveryView]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(WebhookDelivery).order_by(WebhookDelivery.created_at.desc(),
                                                 WebhookDelivery.id)
                .limit(limit).offset(offset)).all()
        return [DeliveryView.model_validate(row).model_copy(update={"url": mask_url(row.url)})
                for row in rows]

    # --- the worker --------------------------------------------------------------------------
    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="webhooks")
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (retries still waiting are dropped; their rows stay pending)."""
        if self._thread is not None and self._thread.is_alive():
            self._inbox.put(None)
            self._thread.join(timeout)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every queued delivery has succeeded or finally failed (for tests and
        shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _run(self) -> None:
        with httpx.Client(timeout=self.settings.webhook_timeout_s, transport=self._transport,
                          follow_redirects=False) as client:
            while True:
                timeout = None
                if self._waiting:
                    timeout = max(0.0, self._waiting[0].due - self._clock())
                try:
                    item = self._inbox.get(timeout=timeout)
                except queue.Empty:  # a retry is due
                    item = ("", {})
                if item is None:
                    return
                if item[0]:
                    try:
                        self._fan_out(client, *item)
                    except Exception:  # e.g. data that is not JSON: drop this one, go on
                        log.exception("webhook %s could not be sent", item[0])
                        self._done()
                while self._waiting and self._waiting[0].due <= self._clock():
                    self._attempt(client, heapq.heappop(self._waiting))

    def _fan_out(self, client: httpx.Client, event: str, data: dict[str, Any]) -> None:
        body = self._body(event, data)  # may raise: before any bookkeeping
        jobs = []
        for url in self.urls:
            job = _Job(self._clock(), next(self._seq), new_id(), event, url, body)
            self._log_insert(job)
            jobs.append(job)
        with self._idle:  # one queued send became len(urls) deliveries
            self._busy += len(jobs) - 1
            self._idle.notify_all()
        for job in jobs:
            self._attempt(client, job)

    def _body(self, event: str, data: dict[str, Any]) -> bytes:
        if self.settings.webhook_format == "slack":
            payload: dict[str, Any] = {"text": slack_text(event, data)}
        else:
            payload = {"id": str(uuid.uuid4()), "event": event,
                       "created_at": utcnow().isoformat(), "data": data}
        return json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")

    def _attempt(self, client: httpx.Client, job: _Job) -> None:
        job.attempts += 1
        headers = {"Content-Type": "application/json", "User-Agent": "chatbot-webhooks",
                   "X-Chatbot-Event": job.event, "X-Chatbot-Delivery": job.delivery_id}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, job.body)
        error: str | None = None
        final = False
        try:
            response = client.post(job.url, content=job.body, headers=headers)
            if response.is_success:
                self._log_update(job, "delivered", None)
                self._done()
                return
            error = f"HTTP {response.status_code}"
            final = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
        except Exception as caught:  # refused, timed out, DNS: all worth a retry
            error = f"{type(caught).__name__}: {caught}"
        if final or job.attempts > self.settings.webhook_retries:
            log.warning("webhook %s to %s failed for good after %d attempt(s): %s", job.event,
                        mask_url(job.url), job.attempts, error)
            self._log_update(job, "failed", error)
            self._done()
            return
        wait = min(MAX_BACKOFF_S, self.settings.webhook_backoff_s * 2 ** (job.attempts - 1))
        self._log_update(job, "pending", error)
        job.due = self._clock() + wait
        heapq.heappush(self._waiting, job)

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def _log_insert(self, job: _Job) -> None:
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(WebhookDelivery).values(
                    id=job.delivery_id, event=job.event, url=job.url, status="pending",
                    attempts=0, last_error=None, created_at=utcnow(), delivered_at=None))
        except Exception:  # the log is for the admin; the call still goes out
            log.exception("could not log webhook delivery %s", job.delivery_id)

    def _log_update(self, job: _Job, status: str, error: str | None) -> None:
        values: dict[str, Any] = dict(status=status, attempts=job.attempts)
        if error is not None:  # a delivery after retries keeps the error that preceded it
            values["last_error"] = error[:ERROR_CHARS]
        if status == "delivered":
            values["delivered_at"] = utcnow()
        try:
            with self.engine.begin() as connection:
                connection.execute(update(WebhookDelivery)
                                   .where(WebhookDelivery.id == job.delivery_id).values(**values))
        except Exception:
            log.exception("could not update webhook delivery %s", job.delivery_id)
