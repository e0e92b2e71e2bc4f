"""Business hours and quiet hours: pure functions over a configured weekly schedule."""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_span(span: str, where: str) -> tuple[dt.time, dt.time]:
    """``"09:00-17:30"`` -> (09:00, 17:30); ConfigError naming ``where`` if malformed."""
    try:
        start_s, end_s = span.split("-")
        return dt.time.fromisoformat(start_s.strip()), dt.time.fromisoformat(end_s.strip())
    except ValueError as err:
        raise ConfigError(f'{where} = {span!r} is not HH:MM-HH:MM (e.g. "09:00-17:00")') from err


def zone(name: str) -> ZoneInfo:
    """The IANA zone, or ConfigError with the fix."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ConfigError(f"[web] timezone = {name!r} is unknown: use an IANA name like Europe/Berlin") from err


def _within(t: dt.time, start: dt.time, end: dt.time) -> bool:
    if start <= end:
        return start <= t < end
    return t >= start or t < end  # span crosses midnight


def is_open(hours: Mapping[str, str], tz: str, when: float) -> bool:
    """True if ``when`` (unix time) falls inside the business hours of its weekday in ``tz``."""
    local = dt.datetime.fromtimestamp(when, zone(tz))
    span = hours.get(DAYS[local.weekday()])
    if not span:
        return False
    start, end = parse_span(span, f"[web.business_hours] {DAYS[local.weekday()]}")
    return _within(local.time(), start, end)


def in_quiet_hours(quiet: str, tz: str, when: float) -> bool:
    """True if ``when`` falls in the nightly quiet hours (empty string = never quiet)."""
    if not quiet:
        return False
    start, end = parse_span(quiet, "[web] quiet_hours")
    return _within(dt.datetime.fromtimestamp(when, zone(tz)).time(), start, end)


class BusinessCalendar:
    """Business time over a bounded stretch of real time, for deadlines that only run while the office is open.

    The weekly schedule (``hours``: weekday -> "HH:MM-HH:MM", a span may cross midnight) is laid out as open
    intervals in ``tz`` from ``start`` to ``end`` (unix times), with a running total of open seconds, so a deadline
    or a business duration is two binary searches. Daylight-saving days are handled by the zone. An empty schedule
    means the office counts as always open (plain clock time).
    """

    def __init__(self, hours: Mapping[str, str], tz: str, start: float, end: float) -> None:
        self.always_open = not any(hours.get(d) for d in DAYS)
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._before: list[float] = []  # open seconds before each interval starts
        if self.always_open:
            return
        zi = zone(tz)
        spans = {d: parse_span(hours[d], f"[web.business_hours] {d}") for d in DAYS if hours.get(d)}
        day = dt.datetime.fromtimestamp(start, zi).date() - dt.timedelta(days=1)
        last = dt.datetime.fromtimestamp(end, zi).date() + dt.timedelta(days=1)
        total = 0.0
        while day <= last:
            span = spans.get(DAYS[day.weekday()])
            if span is not None:
                open_at = dt.datetime.combine(day, span[0], tzinfo=zi).timestamp()
                close_day = day if span[0] < span[1] else day + dt.timedelta(days=1)
                close_at = dt.datetime.combine(close_day, span[1], tzinfo=zi).timestamp()
                if self._ends and open_at < self._ends[-1]:
                    open_at = self._ends[-1]  # an overnight span meeting the next day's opening
                if close_at > open_at:
                    self._starts.append(open_at)
                    self._ends.append(close_at)
                    self._before.append(total)
                    total += close_at - open_at
            day += dt.timedelta(days=1)

    def open_seconds_until(self, when: float) -> float:
        """Open seconds from the calendar's beginning up to ``when``."""
        if self.always_open:
            return when
        i = bisect.bisect_right(self._starts, when) - 1
        if i < 0:
            return 0.0
        return self._before[i] + min(when, self._ends[i]) - self._starts[i]

    def business_seconds(self, a: float, b: float) -> float:
        """Open seconds between ``a`` and ``b`` (0 if ``b`` is not after ``a``)."""
        if b <= a:
            return 0.0
        return self.open_seconds_until(b) - self.open_seconds_until(a)

    def deadline(self, when: float, seconds: float) -> float:
        """The moment ``seconds`` of open time after ``when`` (a call missed at 22:00 with 30 minutes: 09:30)."""
        if self.always_open:
            return when + seconds
        target = self.open_seconds_until(when) + seconds
        i = bisect.bisect_left(self._before, target) - 1
        i = max(i, 0)
        # The interval in which the running total reaches the target.
        while i + 1 < len(self._before) and self._before[i + 1] < target:
            i += 1
        if not self._starts or target > self._before[-1] + self._ends[-1] - self._starts[-1]:
            return float("inf")  # beyond the stretch laid out: not due within it
        return max(when, self._starts[i] + (target - self._before[i]))
