"""Business time: deadlines and durations that only run while the office is open."""

from __future__ import annotations

from gateway.web.hours import BusinessCalendar, ClosedDates

from .seed import at

WEEKDAYS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:00-17:00")


def cal(tz: str = "UTC", hours: dict[str, str] | None = None) -> BusinessCalendar:
    return BusinessCalendar(WEEKDAYS if hours is None else hours, tz, at("2026-10-01 00:00"), at("2026-12-31 00:00"))


def test_call_missed_at_night_is_due_next_morning() -> None:
    c = cal()
    assert c.deadline(at("2026-11-23 22:00"), 30 * 60) == at("2026-11-24 09:30")


def test_friday_afternoon_rolls_over_the_weekend() -> None:
    c = cal()
    # 10 minutes left on Friday, 20 more on Monday morning.
    assert c.deadline(at("2026-11-27 16:50"), 30 * 60) == at("2026-11-30 09:20")


def test_inside_hours_is_plain_clock_time() -> None:
    c = cal()
    assert c.deadline(at("2026-11-24 10:00"), 30 * 60) == at("2026-11-24 10:30")
    assert c.deadline(at("2026-11-24 16:59"), 60) == at("2026-11-24 17:00")


def test_business_seconds_skip_closed_time() -> None:
    c = cal()
    assert c.business_seconds(at("2026-11-23 16:00"), at("2026-11-24 11:00")) == 3 * 3600
    assert c.business_seconds(at("2026-11-28 10:00"), at("2026-11-29 20:00")) == 0  # a weekend
    assert c.business_seconds(at("2026-11-24 11:00"), at("2026-11-24 10:00")) == 0


def test_daylight_saving_change_in_new_york() -> None:
    c = cal("America/New_York")
    # DST ended on Sunday 2026-11-01: Friday is EDT (UTC-4), Monday EST (UTC-5).
    due = c.deadline(at("2026-10-30 16:50", "America/New_York"), 30 * 60)
    assert due == at("2026-11-02 09:20", "America/New_York")
    assert due == at("2026-11-02 14:20")


def test_span_crossing_midnight() -> None:
    c = cal(hours={"fri": "20:00-02:00"})
    assert c.deadline(at("2026-11-27 23:30"), 60 * 60) == at("2026-11-28 00:30")
    assert c.business_seconds(at("2026-11-27 19:00"), at("2026-11-28 03:00")) == 6 * 3600


def test_no_hours_means_always_open() -> None:
    c = cal(hours={})
    assert c.always_open
    assert c.deadline(at("2026-11-28 22:00"), 30 * 60) == at("2026-11-28 22:30")


def test_closed_dates_are_skipped() -> None:
    closed = ClosedDates(["2026-11-26"])  # Thanksgiving
    c = BusinessCalendar(WEEKDAYS, "UTC", at("2026-11-01 00:00"), at("2026-12-31 00:00"), closed)
    assert c.deadline(at("2026-11-25 16:50"), 30 * 60) == at("2026-11-27 09:20")
    assert c.business_seconds(at("2026-11-25 16:00"), at("2026-11-27 10:00")) == 2 * 3600


def test_split_shifts_pause_over_lunch() -> None:
    c = cal(hours={"mon": "08:00-12:00, 13:30-18:00"})
    assert c.deadline(at("2026-11-23 11:45"), 30 * 60) == at("2026-11-23 13:45")
