"""The frustration alert: tell the team, once, when customers are unusually frustrated.

Owns measuring the share of frustrated conversations over a sliding window, the alert's state
(``alert_states``, shared by every replica), firing it (the admin banner reads the state; an
``alert.frustration`` webhook goes out through ``chatbot.conversations.webhooks``) and
``AlertJob``, the server's periodic evaluation.

What is measured: conversations, not messages. A conversation counts when one of its customer
messages with signals was written in the last ``alert_window_minutes``, and is frustrated when
one of those messages was. One angry customer writing ten times is one frustrated customer, not
ten, and the alert is about how many customers are unhappy. Below ``alert_min_conversations``
the share is noise and the alert cannot fire (the defaults are justified in ``chatbot.config``).

Hysteresis: the alert fires when the share reaches ``alert_frustrated_share`` with enough
volume, then stays active (no second webhook) until a window's share is below the threshold (a
window without any conversation counts as below); only then can it fire again. While active, a
quiet hour with too few conversations to fire does not end it unless the share is below too.

Shared state: every replica evaluates, and firing is a conditional ``UPDATE alert_states SET
active = true WHERE name = 'frustration' AND active = false``: the database lets one process
win, and only that one sends the webhook, so N replicas do not page the team N times. (Per-process
memory would fire once per replica and forget the state on restart.)

Never in a chat request's path: ``AlertJob`` evaluates every ``alert_interval_s`` seconds in a
daemon thread (one indexed aggregate over the window's messages), and sending the webhook only
queues it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Engine, case, distinct, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from chatbot.config import Settings
from chatbot.conversations.models import AlertState, Message, utcnow
from chatbot.conversations.periodic import PeriodicJob
from chatbot.conversations.views import ReadModel, UtcDatetime, to_utc
from chatbot.conversations.webhooks import WebhookSender

log = logging.getLogger(__name__)

NAME = "frustration"
EVENT = "alert.frustration"
Change = Literal["fired", "recovered"]


@dataclass(frozen=True)
class Window:
    """One measurement: conversations with signals in (start, end], and the frustrated ones."""

    start: datetime
    end: datetime
    conversations: int
    frustrated: int

    @property
    def share(self) -> float | None:
        return self.frustrated / self.conversations if self.conversations else None


class AlertStatus(ReadModel):
    """The alert as the admin sees it: its state, its settings and the current window."""

    name: str
    active: bool
    since: UtcDatetime | None  # when it fired, while it is active
    changed_at: UtcDatetime | None  # when it last fired or recovered
    fired_count: int
    evaluated_at: UtcDatetime | None
    window_minutes: float
    min_conversations: int
    threshold: float
    window_start: UtcDatetime
    window_end: UtcDatetime
    conversations: int
    frustrated: int
    share: float | None


class FrustrationAlert:
    """Measures, evaluates and reports the alert. It holds no state of its own (that is the
    database row), so building one per caller is fine; ``webhooks`` None sends nothing."""

    def __init__(self, settings: Settings, engine: Engine,
                 webhooks: WebhookSender | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.webhooks = webhooks
        self.window = timedelta(minutes=settings.alert_window_minutes)
        self.min_conversations = settings.alert_min_conversations
        self.threshold = settings.alert_frustrated_share
        self._row_ready = False

    def measure(self, now: datetime | None = None) -> Window:
        end = to_utc(now) or utcnow()
        start = end - self.window
        frustrated_id = case((Message.frustrated.is_(True), Message.conversation_id))
        with self.engine.connect() as connection:
            total, frustrated = connection.execute(
                select(func.count(distinct(Message.conversation_id)),
                       func.count(distinct(frustrated_id)))
                .where(Message.role == "customer", Message.frustrated.is_not(None),
                       Message.created_at > start, Message.created_at <= end)).one()
        return Window(start, end, int(total or 0), int(frustrated or 0))

    def evaluate(self, now: datetime | None = None) -> Change | None:
        """Measure the window and move the state: ``"fired"`` when this call fired the alert
        (and queued its webhook), ``"recovered"`` when it ended it, else None."""
        reading = self.measure(now)
        share = reading.share
        crossed = (reading.conversations >= self.min_conversations and share is not None
                   and share >= self.threshold)
        below = share is None or share < self.threshold
        self._ensure_row()
        seen = dict(evaluated_at=reading.end, conversations=reading.conversations,
                    frustrated=reading.frustrated, share=share)
        this = AlertState.name == NAME
        change: Change | None = None
        with self.engine.begin() as connection:
            if crossed:  # the conditional UPDATE: one process in the whole deployment wins
                won = connection.execute(
                    update(AlertState).where(this, AlertState.active.is_(False)).values(
                        active=True, changed_at=reading.end,
                        fired_count=AlertState.fired_count + 1, **seen)).rowcount
                change = "fired" if won else None
            elif below:
                won = connection.execute(
                    update(AlertState).where(this, AlertState.active.is_(True)).values(
                        active=False, changed_at=reading.end, **seen)).rowcount
                change = "recovered" if won else None
            if change is None:
                connection.execute(update(AlertState).where(this).values(**seen))
        if change == "fired":
            self._fire(reading)
        elif change == "recovered":
            log.info("frustration alert recovered: %d of %d conversations frustrated",
                     reading.frustrated, reading.conversations)
        return change

    def status(self, now: datetime | None = None) -> AlertStatus:
        """The stored state with a fresh measurement of the window (for the banner and API)."""
        reading = self.measure(now)
        with self.engine.connect() as connection:
            row = connection.execute(select(AlertState).where(AlertState.name == NAME)).first()
        active = bool(row and row.active)
        return AlertStatus(
            name=NAME, active=active, since=row.changed_at if row and active else None,
            changed_at=row.changed_at if row else None,
            fired_count=int(row.fired_count) if row else 0,
            evaluated_at=row.evaluated_at if row else None,
            window_minutes=self.settings.alert_window_minutes,
            min_conversations=self.min_conversations, threshold=self.threshold,
            window_start=reading.start, window_end=reading.end,
            conversations=reading.conversations, frustrated=reading.frustrated,
            share=reading.share)

    def _ensure_row(self) -> None:
        if self._row_ready:
            return
        with self.engine.connect() as connection:
            present = connection.scalar(select(AlertState.name).where(AlertState.name == NAME))
        if present is None:
            try:
                with self.engine.begin() as connection:
                    connection.execute(insert(AlertState).values(name=NAME, active=False,
                                                                 fired_count=0))
            except IntegrityError:  # another replica inserted it first: that is fine
                pass
        self._row_ready = True

    def _fire(self, reading: Window) -> None:
        log.warning("frustration alert: %d of %d conversations (%.0f%%) in the last %g minutes "
                    "had a frustrated customer (threshold %.0f%%)", reading.frustrated,
                    reading.conversations, 100 * (reading.share or 0.0),
                    self.settings.alert_window_minutes, 100 * self.threshold)
        if self.webhooks is None:
            return
        # Numbers only: no customer text or conversation ids leave with an alert.
        self.webhooks.send(EVENT, {
            "alert": NAME, "state": "firing", "fired_at": reading.end.isoformat(),
            "conversations": reading.conversations, "frustrated": reading.frustrated,
            "share": round(reading.share or 0.0, 4), "threshold": self.threshold,
            "min_conversations": self.min_conversations,
            "window_minutes": self.settings.alert_window_minutes,
            "window_start": reading.start.isoformat(), "window_end": reading.end.isoformat(),
        })


class AlertJob(PeriodicJob):
    """Calls ``alert.evaluate()`` now and then every ``interval_s`` seconds in a daemon thread
    until ``stop()``; a failed evaluation is logged and tried again at the next interval."""

    def __init__(self, alert: FrustrationAlert, interval_s: float) -> None:
        super().__init__(alert.evaluate, interval_s, name="alerts",
                         what="frustration alert evaluation")
        self.alert = alert
