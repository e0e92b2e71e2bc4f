"""Business hours and quiet hours: pure functions over a configured weekly schedule.

A day's hours are one span (``"09:00-17:00"``) or several separated by commas for split shifts
(``"08:00-12:00, 13:30-18:00"``: closed over lunch). Closed dates (holidays) come from a configured list of
ISO dates and, optionally, the ``holidays`` package for a country (``"US"``, ``"DE"``, ``"US-CA"`` for a
subdivision). :func:`next_open` answers "when do we reopen?" honestly across lunch breaks, weekends and holidays.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from collections.abc import Iterable, Mapping
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


def parse_spans(spec: str, where: str) -> tuple[tuple[dt.time, dt.time], ...]:
    """``"08:00-12:00, 13:30-18:00"`` -> the spans of one day (split shifts), ConfigError naming ``where``."""
    return tuple(parse_span(part, where) for part in spec.split(",") if part.strip())


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


def is_open(hours: Mapping[str, str], tz: str, when: float, closed: ClosedDates | None = None) -> bool:
    """True if ``when`` (unix time) falls inside the business hours of its weekday in ``tz`` (and is no holiday)."""
    local = dt.datetime.fromtimestamp(when, zone(tz))
    if closed is not None and closed.is_closed(local.date()):
        return False
    spec = hours.get(DAYS[local.weekday()])
    if not spec:
        return False
    where = f"[web.business_hours] {DAYS[local.weekday()]}"
    return any(_within(local.time(), start, end) for start, end in parse_spans(spec, where))


def in_quiet_hours(quiet: str, tz: str, when: float) -> bool:
    """True if ``when`` falls in the nightly quiet hours (empty string = never quiet)."""
    if not quiet:
        return False
    start, end = parse_span(quiet, "[web] quiet_hours")
    return _within(dt.datetime.fromtimestamp(when, zone(tz)).time(), start, end)


def quiet_ends(quiet: str, tz: str, when: float) -> float:
    """The first moment at or after ``when`` outside the quiet hours (``when`` itself if not quiet)."""
    if not in_quiet_hours(quiet, tz, when):
        return when
    _start, end = parse_span(quiet, "[web] quiet_hours")
    zi = zone(tz)
    local = dt.datetime.fromtimestamp(when, zi)
    candidate = dt.datetime.combine(local.date(), end, tzinfo=zi)
    if candidate.timestamp() <= when:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), end, tzinfo=zi)
    return candidate.timestamp()


class ClosedDates:
    """Dates the business is closed: a configured list plus, optionally, public holidays of a country."""

    def __init__(self, dates: Iterable[str] = (), country: str = "") -> None:
        parsed: set[dt.date] = set()
        for text in dates:
            try:
                parsed.add(dt.date.fromisoformat(text.strip()))
            except ValueError as err:
                raise ConfigError(f"closed date {text!r} is not an ISO date (YYYY-MM-DD)") from err
        self.dates = frozenset(parsed)
        self.country = country.strip()
        if self.country:
            _country_holidays(self.country, 2000)  # fail at start, not at the first question

    def is_closed(self, day: dt.date) -> bool:
        """True on a configured closed date or a public holiday."""
        if day in self.dates:
            return True
        return bool(self.country) and day in _country_holidays(self.country, day.year)

    def name(self, day: dt.date) -> str | None:
        """What the closed day is called (holiday name), or None."""
        if day in self.dates:
            return "closed"
        if self.country:
            return _country_holidays(self.country, day.year).get(day)
        return None


@functools.lru_cache(maxsize=64)
def _country_holidays(country: str, year: int) -> dict[dt.date, str]:
    import holidays  # noqa: PLC0415 - loaded only when a holiday country is configured

    code, _, subdiv = country.partition("-")
    try:
        table = holidays.country_holidays(code.upper(), subdiv=subdiv.upper() or None, years=year)
    except (NotImplementedError, KeyError) as err:
        raise ConfigError(
            f"holiday country {country!r} is unknown: use an ISO code like US, DE or US-CA, or leave it empty"
        ) from err
    return {day: str(name) for day, name in table.items()}


def next_open(
    hours: Mapping[str, str], tz: str, when: float, closed: ClosedDates | None = None, *, horizon_days: int = 30
) -> float | None:
    """The first moment at or after ``when`` at which the business is open, or None if closed for ``horizon_days``.

    Honest across split shifts (a chat at 12:15 with a 12:00-13:30 lunch break reopens at 13:30), weekends and
    closed dates.
    """
    zi = zone(tz)
    local = dt.datetime.fromtimestamp(when, zi)
    for offset in range(horizon_days + 1):
        day = local.date() + dt.timedelta(days=offset)
        if closed is not None and closed.is_closed(day):
            continue
        spec = hours.get(DAYS[day.weekday()])
        if not spec:
            continue
        starts: list[float] = []
        for start, end in parse_spans(spec, f"[web.business_hours] {DAYS[day.weekday()]}"):
            begin = dt.datetime.combine(day, start, tzinfo=zi)
            finish = dt.datetime.combine(day, end, tzinfo=zi)
            if finish <= begin:
                finish += dt.timedelta(days=1)
            if begin.timestamp() <= when < finish.timestamp():
                return when
            if begin.timestamp() > when:
                starts.append(begin.timestamp())
        if starts:
            return min(starts)
    return None


def describe_moment(moment: float, tz: str, now: float) -> str:
    """Words for a reopening time relative to ``now``: "at 13:30", "tomorrow at 08:00", "on Monday at 09:00"."""
    zi = zone(tz)
    target = dt.datetime.fromtimestamp(moment, zi)
    today = dt.datetime.fromtimestamp(now, zi).date()
    clock = target.strftime("%H:%M")
    days = (target.date() - today).days
    if days <= 0:
        return f"at {clock}"
    if days == 1:
        return f"tomorrow at {clock}"
    if days < 7:
        return f"on {target.strftime('%A')} at {clock}"
    return f"on {target.strftime('%A %d %B')} at {clock}"


def open_seconds_between(
    hours: Mapping[str, str], tz: str, start: float, end: float, closed: ClosedDates | None = None
) -> float:
    """Seconds of business hours between ``start`` and ``end`` (a customer's wait, counted as staff feel it)."""
    if end <= start:
        return 0.0
    zi = zone(tz)
    total = 0.0
    day = dt.datetime.fromtimestamp(start, zi).date() - dt.timedelta(days=1)
    last = dt.datetime.fromtimestamp(end, zi).date()
    while day <= last:
        spec = hours.get(DAYS[day.weekday()])
        if spec and not (closed is not None and closed.is_closed(day)):
            for s_time, e_time in parse_spans(spec, f"[web.business_hours] {DAYS[day.weekday()]}"):
                begin = dt.datetime.combine(day, s_time, tzinfo=zi)
                finish = dt.datetime.combine(day, e_time, tzinfo=zi)
                if finish <= begin:
                    finish += dt.timedelta(days=1)
                overlap = min(end, finish.timestamp()) - max(start, begin.timestamp())
                if overlap > 0:
                    total += overlap
        day += dt.timedelta(days=1)
    return total


class BusinessCalendar:
    """Business time over a bounded stretch of real time, for deadlines that only run while the office is open.

    The weekly schedule (``hours``: weekday -> one or more "HH:MM-HH:MM" spans; a span may cross midnight) is laid
    out as open intervals in ``tz`` from ``start`` to ``end`` (unix times), skipping ``closed`` dates, with a running
    total of open seconds, so a deadline or a business duration is two binary searches. Daylight-saving days are
    handled by the zone. An empty schedule means the office counts as always open (plain clock time).
    """

    def __init__(
        self, hours: Mapping[str, str], tz: str, start: float, end: float, closed: ClosedDates | None = None
    ) -> None:
        self.always_open = not any(hours.get(d) for d in DAYS)
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._before: list[float] = []  # open seconds before each interval starts
        if self.always_open:
            return
        zi = zone(tz)
        spans = {d: parse_spans(hours[d], f"[web.business_hours] {d}") for d in DAYS if hours.get(d)}
        day = dt.datetime.fromtimestamp(start, zi).date() - dt.timedelta(days=1)
        last = dt.datetime.fromtimestamp(end, zi).date() + dt.timedelta(days=1)
        total = 0.0
        while day <= last:
            if closed is not None and closed.is_closed(day):
                day += dt.timedelta(days=1)
                continue
            for s_time, e_time in sorted(spans.get(DAYS[day.weekday()], ())):
                open_at = dt.datetime.combine(day, s_time, tzinfo=zi).timestamp()
                close_day = day if s_time < e_time else day + dt.timedelta(days=1)
                close_at = dt.datetime.combine(close_day, e_time, tzinfo=zi).timestamp()
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
        """The moment ``seconds`` of open time after ``when`` (a call missed at 22:00 with 30 minutes: 09:30).

        ``inf`` when the deadline lies beyond the stretch laid out (it is not due within it).
        """
        if self.always_open:
            return when + seconds
        if not self._starts:
            return float("inf")
        target = self.open_seconds_until(when) + seconds
        if target > self._before[-1] + self._ends[-1] - self._starts[-1]:
            return float("inf")
        # The interval in which the running total reaches the target.
        i = max(bisect.bisect_left(self._before, target) - 1, 0)
        return max(when, self._starts[i] + (target - self._before[i]))
