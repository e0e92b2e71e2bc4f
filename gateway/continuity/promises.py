"""Promises staff make to customers ("I'll call you back tomorrow"), found in what they said and wrote.

Theory of operation: :func:`find_promises` is a pure function of (text, now, business hours). It looks for a
commitment in the first person ("I'll / we'll / let me ... call you back / get back to you / send you the estimate",
and the Korean "다시 전화드리겠습니다" / "견적 보내드리겠습니다") and for a time said with it ("tomorrow",
"on Friday", "at 3pm", "today", "내일"). The due time is that moment when a clock time was said, else the end of the
business day named ("tomorrow" on a Friday is Monday's closing time when the office is closed at the weekend), else
the end of the current business day. A found promise is only *proposed*: staff confirm it in the console before it
becomes the conversation's next step and before the leakage view counts it as kept or not. Nothing here sends
anything.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.web import hours

#: (pattern, next step); ``{0}`` takes the pattern's first group.
_COMMITMENTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"\b(?:i'll|i will|we'll|we will|i'm going to|we're going to|let me|i can)\s+"
            r"(?:give you a (?:call|ring)|call you|ring you)(?:\s+back)?\b",
            re.IGNORECASE,
        ),
        "Call back",
    ),
    (
        re.compile(r"\b(?:i'll|i will|we'll|we will)\s+(?:get back to you|follow up)\b", re.IGNORECASE),
        "Get back to the customer",
    ),
    (
        re.compile(
            r"\b(?:i'll|i will|we'll|we will|let me)\s+(?:send|email|e-mail|text)\s+(?:you\s+)?(?:over\s+)?"
            r"(?:the\s+|an?\s+|your\s+)?(estimate|quote|time slots|slots|invoice|confirmation|details|prices?)\b",
            re.IGNORECASE,
        ),
        "Send the {0}",
    ),
    (re.compile(r"(?:다시\s*)?전화\s*(?:드리겠|드릴게|드릴께|하겠|할게)"), "Call back"),
    (re.compile(r"견적(?:서)?\s*(?:을|를)?\s*(?:보내|드리)"), "Send the estimate"),
)

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_WORD = re.compile(
    r"\b(today|tonight|this (?:morning|afternoon|evening)|tomorrow|"
    r"(?:on |by |next |this )?(monday|tuesday|wednesday|thursday|friday|saturday|sunday))\b",
    re.IGNORECASE,
)
_CLOCK = re.compile(
    r"\b(?:at|by|around|before)\s+(\d{1,2})(?::(\d{2}))?\s*(am|pm|a\.m\.|p\.m\.)?"
    r"|\b(\d{1,2})(?::(\d{2}))?\s*(am|pm|a\.m\.|p\.m\.)",
    re.IGNORECASE,
)
#: A customer asking to be called ("call me at 3", "give me a ring tomorrow", "3시에 전화 주세요").
_CALL_ME = re.compile(
    r"\b(?:call|ring|phone) me\b|\bgive me a (?:call|ring)\b|전화\s*(?:주세요|해\s*주세요|부탁)", re.IGNORECASE
)
_KO_CLOCK = re.compile(r"(오전|오후)?\s*(\d{1,2})\s*시(?:\s*(\d{1,2})\s*분|\s*반)?")
_KO_DAY = {"오늘": 0, "내일": 1, "모레": 2}


@dataclass(frozen=True, slots=True)
class PromiseFound:
    """A commitment found in a text: the next step it means, when it is due, and the words that said it."""

    step: str
    due: float | None
    phrase: str


@dataclass(frozen=True, slots=True)
class Hours:
    """The office's business hours, for due times ("tomorrow" means the next business day)."""

    business_hours: Mapping[str, str]
    timezone: str
    closed: hours.ClosedDates | None = None


def _day_offset(text: str, today: dt.date) -> int | None:
    m = _DAY_WORD.search(text)
    if m is not None:
        word = m.group(1).lower()
        if word.startswith(("today", "tonight", "this morning", "this afternoon", "this evening")):
            return 0
        if word == "tomorrow":
            return 1
        name = (m.group(2) or "").lower()
        if name:
            ahead = (_WEEKDAYS.index(name) - today.weekday()) % 7
            return ahead or 7
    for word, offset in _KO_DAY.items():
        if word in text:
            return offset
    return None


def _clock(text: str) -> dt.time | None:
    m = _CLOCK.search(text)
    if m is None:
        ko = _KO_CLOCK.search(text)
        if ko is None:
            return None
        hour = int(ko.group(2))
        minute = int(ko.group(3) or (30 if "반" in ko.group(0) else 0))
        if (ko.group(1) == "오후" and hour < 12) or (ko.group(1) is None and 1 <= hour <= 7):
            hour += 12
        return dt.time(hour, minute) if hour <= 23 and minute <= 59 else None
    if m.group(1) is None:  # the bare "3pm" form
        hour, minute, raw_marker = int(m.group(4)), int(m.group(5) or 0), m.group(6)
    else:
        hour, minute, raw_marker = int(m.group(1)), int(m.group(2) or 0), m.group(3)
    marker = (raw_marker or "").lower().replace(".", "")
    if marker == "pm" and hour < 12:
        hour += 12
    elif marker == "am" and hour == 12:
        hour = 0
    elif not marker and 1 <= hour <= 7:
        hour += 12  # "at 3" said in an office means the afternoon
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    return dt.time(hour, minute)


def _end_of_business_day(day: dt.date, office: Hours) -> float:
    """The closing time of the first business day on or after ``day`` (end of that day when none is found)."""
    zi = hours.zone(office.timezone)
    start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=zi).timestamp()
    opening = hours.next_open(office.business_hours, office.timezone, start, office.closed)
    if opening is None:
        return dt.datetime.combine(day, dt.time(23, 59), tzinfo=zi).timestamp()
    open_day = dt.datetime.fromtimestamp(opening, zi).date()
    spans = hours.parse_spans(office.business_hours.get(hours.DAYS[open_day.weekday()], ""), "[web.business_hours]")
    closing = max((end for _, end in spans), default=dt.time(23, 59))
    return dt.datetime.combine(open_day, closing, tzinfo=zi).timestamp()


def find_promises(text: str, now: float, office: Hours) -> list[PromiseFound]:
    """Every commitment in ``text`` with its due time (see the module docstring); at most one per next step."""
    found: dict[str, PromiseFound] = {}
    zi = hours.zone(office.timezone)
    today = dt.datetime.fromtimestamp(now, zi).date()
    for sentence in re.split(r"(?<=[.!?。])\s+|\n", text):
        for pattern, template in _COMMITMENTS:
            m = pattern.search(sentence)
            if m is None:
                continue
            step = template.format(*(g.lower() for g in m.groups() if g)) if "{0}" in template else template
            if step in found:
                continue
            offset = _day_offset(sentence, today)
            clock = _clock(sentence)
            day = today + dt.timedelta(days=offset or 0)
            if clock is not None:
                due = dt.datetime.combine(day, clock, tzinfo=zi).timestamp()
                if due <= now:
                    due += 86400.0
            else:
                due = _end_of_business_day(day, office)
            found[step] = PromiseFound(step, due, sentence.strip()[:200])
    return list(found.values())


def requested_call_time(text: str, now: float, office: Hours) -> float | None:
    """When a customer asks to be called ("call me at 3", "give me a ring tomorrow"), the moment they picked.

    A clock time is taken as said (today, or tomorrow when it has passed; on the day named when there is one); a day
    without a time means that business day's opening. None when the text asks for no call or names no time (then
    the plain "call me" hand-off applies).
    """
    zi = hours.zone(office.timezone)
    today = dt.datetime.fromtimestamp(now, zi).date()
    for sentence in re.split(r"(?<=[.!?。])\s+|\n", text):
        if _CALL_ME.search(sentence) is None:
            continue
        offset = _day_offset(sentence, today)
        clock = _clock(sentence)
        if clock is None and offset is None:
            return None
        day = today + dt.timedelta(days=offset or 0)
        if clock is not None:
            at = dt.datetime.combine(day, clock, tzinfo=zi).timestamp()
            if at <= now and offset is None:
                at += 86400.0
            return at if at > now else None
        start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=zi).timestamp()
        return hours.next_open(office.business_hours, office.timezone, max(start, now), office.closed)
    return None
