"""Business hours and quiet hours: pure functions over a configured weekly schedule."""

from __future__ import annotations

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
