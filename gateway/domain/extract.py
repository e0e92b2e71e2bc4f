"""Reading the spine out of what customers write and say: intent, urgency, facts, channel preference.

Theory of operation: :meth:`SpineReader.read` (blocking, a few milliseconds; the learner runs it in a worker thread
so the event loop never waits for it) takes one message (chat, SMS, or a voicemail transcript) and the moment
it arrived, and returns what it found; it never touches the store (the :class:`~gateway.domain.spine_learner.
SpineLearner` applies the result through the spine service, which records who set what). Each reader is a
well-kept library where one fits:

* intent and urgency: the keyword spotting of :mod:`gateway.domain.intent` (the same lists voicemails use), limited
  to the spine's vocabulary; a message with a question mark and no other intent is a ``question``;
* ``callback_number``: libphonenumber's ``PhoneNumberMatcher`` in the office's region, as E.164;
* ``availability``: dateparser's date search in the business time zone relative to the message's time, kept only
  when the phrase really names a time (a weekday, today/tomorrow/tonight, morning/afternoon/evening, a clock time,
  "next week", "in 2 hours") so words like "we" or "may" are not read as dates; phone numbers are removed first;
  the value keeps the customer's words plus the moment as ISO 8601 with offset;
* ``address``: pyap's street-address finder (US, CA and GB formats);
* ``name``: "my name is ...", "this is ...", "I'm ..." followed by capitalised words;
* ``topic``: the first configured topic phrase heard ("chipped tooth", "roof leak");
* office facts: the configured regular expressions (group ``value``, else the whole match);
* preference: "text me" -> sms, "call me" -> voice, "can't talk" -> sms, "don't text" -> voice.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers

from gateway.domain.intent import IntentRules, normalize

_TIMEISH = re.compile(
    r"\b(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\b|\b(?:today|tomorrow|tonight|morning|afternoon|evening|noon|midday|"
    r"weekend|next week|this week)\b|\b\d{1,2}(?::\d{2})?\s*(?:am|pm|a\.m\.|p\.m\.)|\b\d{1,2}:\d{2}\b|"
    r"\bin \d+ (?:minutes?|hours?|days?)\b",
    re.IGNORECASE,
)
_AT_HOUR = re.compile(r"\b(at|after|before|around|by)\s+(\d{1,2})\b(?!\s*(?::|am|pm|a\.m|p\.m|%|\d))", re.I)
_QUALIFIER = re.compile(r"\b(after|before|around|by|from|any time|anytime)\s*$", re.IGNORECASE)
_NAME = re.compile(
    r"(?:\b[Mm]y name is|\b[Tt]his is|\bI'm|\bI am|\bIt's|\b[Nn]ame's)\s+"
    r"(?P<name>[A-Z][a-zA-Z'\-]+(?:\s+[A-Z][a-zA-Z'\-]+)?)"
)
_NOT_NAMES = frozenset(
    {
        "calling", "looking", "interested", "wondering", "trying", "just", "still", "not", "here", "so", "very",
        "available", "free", "home", "back", "out", "sorry", "the", "a", "an", "about", "in", "at", "on", "with",
        "going", "having", "hoping", "writing", "texting", "asking", "checking",
    }
)  # fmt: skip
_PREFERENCES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r"\b(?:don'?t|do not|please don'?t|can'?t|cannot)\s+(?:text|txt|sms)\b", re.I),
        "voice",
        "said no texts",
    ),
    (re.compile(r"\b(?:don'?t|do not|please don'?t)\s+call\b", re.I), "sms", "said not to call"),
    (
        re.compile(r"\b(?:text|txt|sms)\s+me\b|\bprefer\s+(?:a\s+)?(?:text|texting|sms)\b", re.I),
        "sms",
        "said 'text me'",
    ),
    (re.compile(r"\b(?:can'?t|cannot)\s+(?:talk|take (?:a )?calls?)\b", re.I), "sms", "said they cannot talk"),
    (
        re.compile(r"\b(?:call|ring)\s+me\b|\bgive\s+me\s+a\s+call\b|\bprefer\s+(?:a\s+)?(?:call|phone)\b", re.I),
        "voice",
        "said 'call me'",
    ),
)
_LEADING_AT = re.compile(r"^at\s+(?=after|before|around|by)\b", re.IGNORECASE)
_ADDRESS_COUNTRIES = frozenset({"US", "CA", "GB"})


@dataclass(frozen=True, slots=True)
class FoundFact:
    """A fact read from text, with how sure the reader is."""

    value: Any
    confidence: float


@dataclass(frozen=True, slots=True)
class Reading:
    """What one message says about the spine."""

    intent: str | None = None
    intent_from_keywords: bool = False
    urgent: bool = False
    facts: Mapping[str, FoundFact] = field(default_factory=dict)
    preference: tuple[str, str] | None = None
    """(channel, why) when the customer said how they want to be reached."""


class SpineReader:
    """Compiled readers. Build once from the config, share freely (immutable)."""

    def __init__(
        self,
        rules: IntentRules,
        intents: Sequence[str],
        *,
        region: str = "US",
        timezone: str = "UTC",
        fact_patterns: Mapping[str, Sequence[str]] | None = None,
        topic_keywords: Sequence[str] = (),
    ) -> None:
        self.rules = rules
        self.intents = frozenset(intents)
        self.region = region
        self.zone = ZoneInfo(timezone)
        self.timezone = timezone
        self.patterns = {
            name: tuple(re.compile(p, re.IGNORECASE) for p in patterns)
            for name, patterns in (fact_patterns or {}).items()
        }
        self.topics = tuple((t, normalize(t)) for t in topic_keywords if normalize(t))

    def warm(self) -> None:
        """Load dateparser's and pyap's data (about a second and a half, once) so the first real message is quick.
        Blocking: run it in a worker thread."""
        self.read("Saturday morning at 10:00, 1 Main Street, Springfield, IL 62704, call (415) 555-2671", 0.0)

    def read(self, text: str, now: float) -> Reading:
        """Everything found in ``text``, read as of ``now`` (unix seconds)."""
        text = text[:4000]
        decision = self.rules.decide(self.rules.spot(text))
        intent = decision.intent if decision.intent in self.intents else None
        from_keywords = intent is not None
        if intent is None and "?" in text and "question" in self.intents:
            intent = "question"
        facts: dict[str, FoundFact] = {}
        number, spans = self._numbers(text)
        if number is not None:
            facts["callback_number"] = FoundFact(number, 0.9)
        when = self._availability(_blank(text, spans), now)
        if when is not None:
            facts["availability"] = FoundFact(when, 0.8)
        address = self._address(text)
        if address is not None:
            facts["address"] = FoundFact(address, 0.8)
        name = self._name(text)
        if name is not None:
            facts["name"] = FoundFact(name, 0.7)
        topic = self._topic(text)
        if topic is not None:
            facts["topic"] = FoundFact(topic, 0.8)
        for fact_name, patterns in self.patterns.items():
            for pattern in patterns:
                m = pattern.search(text)
                if m is not None:
                    value = (m.groupdict().get("value") or m.group(0)).strip()
                    if value:
                        facts[fact_name] = FoundFact(value[:200], 0.8)
                        break
        preference = next(((ch, why) for rx, ch, why in _PREFERENCES if rx.search(text)), None)
        return Reading(intent, from_keywords, decision.urgent, facts, preference)

    # -- the readers ------------------------------------------------------------------------------------------------

    def _numbers(self, text: str) -> tuple[str | None, list[tuple[int, int]]]:
        first: str | None = None
        spans: list[tuple[int, int]] = []
        for match in phonenumbers.PhoneNumberMatcher(text, self.region):
            spans.append((match.start, match.end))
            if first is None and phonenumbers.is_valid_number(match.number):
                first = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        return first, spans

    def _availability(self, text: str, now: float) -> dict[str, str] | None:
        if not _TIMEISH.search(text):
            return None
        base = dt.datetime.fromtimestamp(now, self.zone).replace(tzinfo=None)
        prepared = _AT_HOUR.sub(lambda m: f"{m.group(1)} {m.group(2)}:00", " ".join(text.split()))
        settings = {
            "RELATIVE_BASE": base,
            "PREFER_DATES_FROM": "future",
            "TIMEZONE": self.timezone,
            "RETURN_AS_TIMEZONE_AWARE": True,
        }
        found = _search_dates(prepared, settings)
        for phrase, moment in found:
            if not _TIMEISH.search(phrase):
                continue
            start = prepared.find(phrase)
            qualifier = _QUALIFIER.search(prepared[:start]) if start >= 0 else None
            words = _LEADING_AT.sub("", phrase)
            if qualifier is not None and words == phrase:
                words = f"{qualifier.group(1)} {phrase}"
            return {"text": words.strip(), "start": moment.isoformat(timespec="minutes")}
        return None

    def _address(self, text: str) -> str | None:
        if self.region not in _ADDRESS_COUNTRIES:
            return None
        found = _parse_address(text, self.region)
        return found[0] if found else None

    def _name(self, text: str) -> str | None:
        for m in _NAME.finditer(text):
            words = m.group("name").split()
            while words and words[-1].lower() in _NOT_NAMES:
                words.pop()
            if words and words[0].lower() not in _NOT_NAMES:
                return " ".join(words)
        return None

    def _topic(self, text: str) -> str | None:
        tokens = normalize(text).split()
        best: tuple[int, str] | None = None
        for written, phrase in self.topics:
            pos = _find_loose(tokens, phrase.split())
            if pos is not None and (best is None or pos < best[0]):
                best = (pos, written)
        return best[1] if best else None


def _find_loose(tokens: Sequence[str], phrase: Sequence[str]) -> int | None:
    """Where ``phrase`` starts in ``tokens``, allowing up to two filler words between its words ("chipped a
    tooth" matches "chipped tooth"); each word may carry an ending ("leaking" matches "leak")."""
    for i, token in enumerate(tokens):
        if not token.startswith(phrase[0]):
            continue
        j, ok = i, True
        for word in phrase[1:]:
            nxt = next((k for k in range(j + 1, min(j + 4, len(tokens))) if tokens[k].startswith(word)), None)
            if nxt is None:
                ok = False
                break
            j = nxt
        if ok:
            return i
    return None


def _blank(text: str, spans: Sequence[tuple[int, int]]) -> str:
    for start, end in spans:
        text = text[:start] + " " * (end - start) + text[end:]
    return text


def _search_dates(text: str, settings: Mapping[str, Any]) -> list[tuple[str, dt.datetime]]:
    """dateparser's search, typed; its warnings about its own internals are not the caller's problem."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from dateparser.search import search_dates  # noqa: PLC0415 - a heavy import, loaded on first use

        result = search_dates(text, languages=["en"], settings=dict(settings))
    return [(str(p), d) for p, d in (result or []) if isinstance(d, dt.datetime)]


def _parse_address(text: str, country: str) -> list[str]:
    import pyap  # noqa: PLC0415 - loaded on first use

    # pyap 0.3.1 vendors an old `six` that appends a finder without `find_spec` to sys.meta_path; every later
    # import of a new module then raises ImportWarning. pyap itself never uses `six.moves`, so the finder goes.
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__module__ != "pyap.packages.six"]
    return [str(a) for a in pyap.parse(text, country=country)]
