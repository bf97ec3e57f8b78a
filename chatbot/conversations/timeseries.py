"""Daily statistics for the admin charts: conversations, deflection, hand-over rate, average
sentiment and the share of frustrated conversations, per UTC day.

Each conversation counts on the day it started (UTC), like ``compute_stats`` filters by start
time, and the rates use the same definitions (``queries.outcomes``; sentiment and frustration
from the conversation's roll-up, ``signal_log``). The grouping runs in SQL, one row per day,
so a year of traffic costs one scan of the conversations index, not a row per conversation in
Python. SQLite stores UTC times as naive text and ``date()`` reads the UTC day from it;
PostgreSQL's ``timestamptz`` would take the session's time zone, so it is converted to UTC first.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from chatbot.conversations.models import Conversation
from chatbot.conversations.queries import outcomes
from chatbot.conversations.views import StatsDay, StatsSeries
from chatbot.errors import InvalidRequestError

DEFAULT_DAYS = 30  # the window when no start is given
MAX_DAYS = 366  # longest series served at once: one chart, not a bulk export


def _utc_day(column: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _ratio(part: int, whole: int) -> float | None:
    return None if not whole else part / whole


def window(since: date | None, until: date | None, today: date | None = None
           ) -> tuple[date, date]:
    """The inclusive UTC day range asked for: ``until`` defaults to today, ``since`` to
    ``DEFAULT_DAYS`` days before ``until``; raises ``InvalidRequestError`` for a reversed or
    too long range."""
    until = until or today or datetime.now(UTC).date()
    if until == date.max:  # the series reads up to the start of the day after ``until``
        raise InvalidRequestError(f"until must be before {date.max}", field="until")
    # The default start, clamped to the first day the calendar has (a far-past ``until``).
    since = since or until - min(timedelta(days=DEFAULT_DAYS - 1), until - date.min)
    if since > until:
        raise InvalidRequestError(f"since ({since}) is after until ({until})", field="since")
    if (until - since).days + 1 > MAX_DAYS:
        raise InvalidRequestError(f"a series covers at most {MAX_DAYS} days; narrow since/until",
                                  field="since")
    return since, until


def daily_stats(session: Session, since: date, until: date) -> StatsSeries:
    """One ``StatsDay`` per UTC day from ``since`` to ``until`` (inclusive), days without
    conversations included (zero conversations, null rates)."""
    dialect = session.get_bind().dialect.name
    day = _utc_day(Conversation.started_at, dialect).label("day")
    has_bot, answered, has_handoff = outcomes()
    with_signals = Conversation.sentiment_avg.is_not(None)
    start = datetime.combine(since, time(), tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time(), tzinfo=UTC)
    rows = session.execute(
        select(
            day,
            func.count(Conversation.id),
            _count_if(has_bot),
            _count_if(answered & ~has_handoff),
            _count_if(has_handoff),
            func.avg(Conversation.sentiment_avg),
            _count_if(with_signals),
            _count_if(with_signals & Conversation.frustrated.is_(True)),
        )
        .where(Conversation.started_at >= start, Conversation.started_at < end)
        .group_by(day)
    ).all()
    # SQLite returns the day as 'YYYY-MM-DD' text, PostgreSQL as a date.
    by_day = {date.fromisoformat(str(row[0])[:10]): row for row in rows}
    days = []
    for offset in range((until - since).days + 1):
        current = since + timedelta(days=offset)
        row = by_day.get(current)
        if row is None:
            days.append(StatsDay(day=current, conversations=0, deflection_rate=None,
                                 handoff_rate=None, sentiment_avg=None, frustrated_rate=None))
            continue
        _, n, n_bot, n_deflected, n_handed, sentiment, n_signals, n_frustrated = row
        n, n_bot, n_signals = int(n), int(n_bot or 0), int(n_signals or 0)
        days.append(StatsDay(
            day=current, conversations=n,
            deflection_rate=_ratio(int(n_deflected or 0), n_bot),
            handoff_rate=_ratio(int(n_handed or 0), n),
            sentiment_avg=None if sentiment is None else round(float(sentiment), 4),
            frustrated_rate=_ratio(int(n_frustrated or 0), n_signals),
        ))
    return StatsSeries(since=since, until=until, days=tuple(days))
