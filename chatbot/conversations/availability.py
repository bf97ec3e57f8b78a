"""When a person can answer: the support hours from settings and whether an agent is signed in.

Owns: parsing ``support_hours`` ("Mon-Fri 08:00-20:00, Sat 10:00-14:00" in
``support_timezone``), telling whether a moment is inside them and when they next open, and the
one sentence a customer is told at a hand-over (``Availability.notice``). The sentence promises
only what the product does: someone "will join shortly" only when an agent is signed in during
support hours; otherwise the conversation waits in the inbox and a person replies in this chat
later (there is no e-mail or phone follow-up, so none is promised). The wording lives in
``chatbot.answering.prompt`` with the bot's other sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chatbot.answering.prompt import (
    HANDOFF_CLOSED_TEXT,
    HANDOFF_JOINING_TEXT,
    HANDOFF_NOBODY_ONLINE_TEXT,
)
from chatbot.errors import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WINDOW = re.compile(
    r"^(?:(?P<days>[a-z]{3}(?:\s*-\s*[a-z]{3})?|daily|every day)\s+)?"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$"
)


@dataclass(frozen=True)
class Window:
    """Open on ``days`` (0 = Monday) from ``start`` to ``end`` (minutes after midnight)."""

    days: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SupportHours:
    windows: tuple[Window, ...]
    zone: ZoneInfo
    text: str

    @classmethod
    def parse(cls, text: str, timezone: str = "UTC") -> SupportHours | None:
        """The hours, or None for an empty setting (no fixed hours). ConfigError says what is
        wrong with a bad one."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ConfigError(f"CHATBOT_SUPPORT_TIMEZONE {timezone!r} is not an IANA time zone "
                              "(e.g. America/New_York, Europe/Berlin, UTC)") from error
        if not text.strip():
            return None
        windows = []
        for part in re.split(r"[;,]", text):
            part = " ".join(part.strip().lower().split())
            if not part:
                continue
            match = _WINDOW.match(part)
            if match is None:
                raise ConfigError(f"CHATBOT_SUPPORT_HOURS: cannot read {part!r}; write e.g. "
                                  "'Mon-Fri 08:00-20:00, Sat 10:00-14:00'")
            start, end = _minutes(match["start"]), _minutes(match["end"])
            if not 0 <= start < end <= 24 * 60:
                raise ConfigError(f"CHATBOT_SUPPORT_HOURS: {part!r} must end after it starts, "
                                  "within one day (00:00-24:00)")
            windows.append(Window(_days(match["days"], part), start, end))
        if not windows:
            return None
        return cls(tuple(windows), zone, text.strip())

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        return any(local.weekday() in w.days and w.start <= minute < w.end for w in self.windows)

    def next_opening(self, now: datetime) -> datetime:
        """The next moment the hours open after ``now`` (in the support time zone)."""
        local = now.astimezone(self.zone)
        for ahead in range(8):
            day = (local + timedelta(days=ahead)).date()
            starts = sorted(w.start for w in self.windows if day.weekday() in w.days)
            for start in starts:
                moment = datetime.combine(day, time(start // 60, start % 60), self.zone)
                if moment > local:
                    return moment
        raise ConfigError("CHATBOT_SUPPORT_HOURS never opens")  # parse() forbids this

    def describe(self, now: datetime) -> str:
        """'Mon–Fri 8am–8pm, Sat 10am–2pm EST' (the zone's abbreviation at ``now``)."""
        parts = [f"{_day_span(w.days)} {_clock(w.start)}–{_clock(w.end)}".strip()
                 for w in self.windows]
        return f"{', '.join(parts)} {now.astimezone(self.zone).tzname() or ''}".strip()


@dataclass(frozen=True)
class Availability:
    """Whether a person can be expected soon, and what the customer is told at a hand-over."""

    agents_online: int
    in_hours: bool
    notice: str

    @property
    def staffed(self) -> bool:
        return self.agents_online > 0 and self.in_hours


def availability(hours: SupportHours | None, agents_online: int, now: datetime) -> Availability:
    in_hours = hours is None or hours.is_open(now)
    if agents_online > 0 and in_hours:
        notice = HANDOFF_JOINING_TEXT
    elif hours is not None and not in_hours:
        opening = hours.next_opening(now)
        notice = HANDOFF_CLOSED_TEXT.format(hours=hours.describe(now),
                                            back=_when(opening, now.astimezone(hours.zone)))
    else:
        notice = HANDOFF_NOBODY_ONLINE_TEXT
    return Availability(agents_online, in_hours, notice)


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    if int(minutes) >= 60:
        raise ConfigError(f"CHATBOT_SUPPORT_HOURS: {clock!r} is not a time of day")
    return int(hours) * 60 + int(minutes)


def _days(spec: str | None, part: str) -> tuple[int, ...]:
    if spec is None or spec in ("daily", "every day"):
        return tuple(range(7))
    names = [s.strip() for s in spec.split("-")]
    if any(name not in DAYS for name in names):
        raise ConfigError(f"CHATBOT_SUPPORT_HOURS: {part!r}: days are Mon, Tue, Wed, Thu, Fri, "
                          "Sat, Sun (or a range such as Mon-Fri)")
    first, last = DAYS.index(names[0]), DAYS.index(names[-1])
    return tuple((first + i) % 7 for i in range((last - first) % 7 + 1))


def _day_span(days: tuple[int, ...]) -> str:
    if len(days) == 7:
        return "every day"
    first, last = DAYS[days[0]].title(), DAYS[days[-1]].title()
    return first if len(days) == 1 else f"{first}–{last}"


def _clock(minutes: int) -> str:
    hour, minute = divmod(minutes, 60)
    if hour in (0, 24) and minute == 0:
        return "midnight"
    suffix = "am" if hour < 12 else "pm"
    shown = hour % 12 or 12
    return f"{shown}{suffix}" if minute == 0 else f"{shown}:{minute:02d}{suffix}"


def _when(moment: datetime, now: datetime) -> str:
    """'today at 8am', 'tomorrow at 8am' or 'Monday at 8am' (all in the support time zone)."""
    days = (moment.date() - now.date()).days
    day = "today" if days == 0 else "tomorrow" if days == 1 else DAY_NAMES[moment.weekday()]
    return f"{day} at {_clock(moment.hour * 60 + moment.minute)}"
