"""Trading sessions per exchange, and the clock they are read with.

NSE trades 09:15–15:30 India time on weekdays that are not exchange holidays
(``AXISOR_HOLIDAYS``: the fixed-date national holidays every year, and the dates operators
list in ``MARKET_HOLIDAYS_NSE``); AXISOR, the crypto venue, trades around the clock.
``AXISOR_MARKET["SESSIONS"]`` turns the rules off (the test suite does, so its results do not depend
on the hour it runs at; the session tests turn them back on with a clock of their own). ``clock``
is what every session rule reads the time from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import cast
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

clock: Callable[[], datetime] = timezone.now

# Per exchange: the (month, day) closed every year, and the dates closed once.
Holidays = dict[str, tuple[frozenset[tuple[int, int]], frozenset[date]]]


@dataclass(frozen=True)
class Session:
    exchange: str
    zone: ZoneInfo
    opens: time
    closes: time
    weekdays: frozenset[int]  # Monday is 0

    def trades_on(self, day: date) -> bool:
        """A trading day: one of the weekdays, and not a holiday (read from the settings each time)."""
        holidays = cast(Holidays, settings.AXISOR_HOLIDAYS)
        fixed, dates = holidays.get(self.exchange, (frozenset(), frozenset()))
        return day.weekday() in self.weekdays and (day.month, day.day) not in fixed and day not in dates

    def _bounds(self, day: datetime) -> tuple[datetime, datetime]:
        local = day.astimezone(self.zone).date()
        return (
            datetime.combine(local, self.opens, tzinfo=self.zone),
            datetime.combine(local, self.closes, tzinfo=self.zone),
        )

    def is_open(self, at: datetime) -> bool:
        opens, closes = self._bounds(at)
        return self.trades_on(at.astimezone(self.zone).date()) and opens <= at < closes

    def next_open(self, at: datetime) -> datetime:
        """The start of the next session after ``at`` (``at`` itself if a session opens then)."""
        for days in range(32):
            opens, _ = self._bounds(at + timedelta(days=days))
            if self.trades_on(opens.date()) and opens >= at:
                return opens
        raise ImproperlyConfigured(f"{self.exchange} has no trading day in the next month: check its holidays")

    def close_after(self, at: datetime) -> datetime:
        """The end of the session open at ``at``, or of the next one."""
        opens = at if self.is_open(at) else self.next_open(at)
        return self._bounds(opens)[1]


SESSIONS: dict[str, Session] = {
    "NSE": Session("NSE", ZoneInfo("Asia/Kolkata"), time(9, 15), time(15, 30), frozenset(range(5))),
}


def enforced() -> bool:
    return bool(settings.AXISOR_MARKET["SESSIONS"])


def session_for(exchange: str) -> Session | None:
    """The exchange's session rules, or None where it trades around the clock (or rules are off)."""
    return SESSIONS.get(exchange) if enforced() else None


def is_open(exchange: str, at: datetime | None = None) -> bool:
    session = session_for(exchange)
    return session is None or session.is_open(at or clock())


def next_open(exchange: str, at: datetime | None = None) -> datetime | None:
    session = session_for(exchange)
    return None if session is None else session.next_open(at or clock())


def day_end(exchange: str, placed_at: datetime) -> datetime:
    """When a DAY order placed at ``placed_at`` expires: the end of its session (for an AMO, of the
    session it opens in); around the clock, the next midnight UTC."""
    session = session_for(exchange)
    if session is None:
        return (placed_at.astimezone(ZoneInfo("UTC")) + timedelta(days=1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
    return session.close_after(placed_at)
