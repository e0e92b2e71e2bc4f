"""Limits on what the gateway texts and dials: the number policy and the automated-SMS budget.

Theory of operation: a typed number is only ever texted or dialled after :class:`NumberPolicy` said yes. The policy
asks libphonenumber whether the number is valid (``is_valid_number``), which kind it is (``number_type``: mobile,
fixed line, premium rate, shared cost, satellite...) and where it is (``region_code_for_number``); only the allowed
kinds in the allowed regions pass. The default allows mobile and fixed-or-mobile numbers in
``gateway.default_region``: premium-rate, shared-cost, satellite, personal, UAN and foreign numbers, which are what
SMS pumping and toll fraud aim at, are refused unless the operator lists them.

The budget is a pure calculation over counts the store keeps (automated SMS queued in the last hour and the last
24 hours): :func:`budget_state` says how many are left; the conversation service checks it in the same write
transaction that would queue the message, so two sends can never both take the last unit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneNumberType

from gateway.errors import PermanentError

#: Config names of libphonenumber's number types.
NUMBER_TYPES: dict[str, int] = {
    "fixed_line": PhoneNumberType.FIXED_LINE,
    "mobile": PhoneNumberType.MOBILE,
    "fixed_line_or_mobile": PhoneNumberType.FIXED_LINE_OR_MOBILE,
    "toll_free": PhoneNumberType.TOLL_FREE,
    "premium_rate": PhoneNumberType.PREMIUM_RATE,
    "shared_cost": PhoneNumberType.SHARED_COST,
    "voip": PhoneNumberType.VOIP,
    "personal_number": PhoneNumberType.PERSONAL_NUMBER,
    "pager": PhoneNumberType.PAGER,
    "uan": PhoneNumberType.UAN,
    "voicemail": PhoneNumberType.VOICEMAIL,
    "satellite": 99_001,  # libphonenumber has no type for it; see _kind()
}
_NAMES = {v: k for k, v in NUMBER_TYPES.items()}
_WORDS = {
    "premium_rate": "a premium-rate number",
    "shared_cost": "a shared-cost number",
    "satellite": "a satellite number",
    "toll_free": "a toll-free number",
    "voip": "a VoIP number",
    "personal_number": "a personal (follow-me) number",
    "pager": "a pager number",
    "uan": "a universal access number",
    "voicemail": "a voicemail access number",
    "fixed_line": "a landline",
    "mobile": "a mobile number",
    "fixed_line_or_mobile": "a phone number",
}
#: Inmarsat, Iridium, Thuraya, Globalstar... (ITU-T E.164 "global services": +870, +881, +882 partly).
_SATELLITE_PREFIXES = ("+870", "+881", "+8821", "+8822", "+8823", "+8824", "+8825", "+8826", "+88213", "+88216")


class NumberRefusedError(PermanentError):
    """The number may not be texted or dialled under the configured number policy."""

    def __init__(self, message: str, *, kind: str, region: str | None) -> None:
        super().__init__(message)
        self.kind = kind
        self.region = region


class NumberNeedsConfirmationError(NumberRefusedError):
    """A staff send to a number outside the policy: allowed only with an explicit confirmation."""


class ClaimedNumberError(NumberNeedsConfirmationError):
    """A staff text to a number that someone only typed (an unverified claim): sent only when confirmed."""


class BudgetSpentError(PermanentError):
    """The global automated-SMS budget for the hour or the day is used up."""

    def __init__(self, message: str, *, window: str) -> None:
        super().__init__(message)
        self.window = window


@dataclass(frozen=True, slots=True)
class NumberVerdict:
    """What the policy found out about a number."""

    e164: str
    kind: str
    region: str | None
    allowed: bool
    reason: str


def _kind(number: phonenumbers.PhoneNumber, e164: str) -> str:
    if e164.startswith(_SATELLITE_PREFIXES):
        return "satellite"
    if not phonenumbers.is_valid_number(number):
        return "invalid"
    return _NAMES.get(phonenumbers.number_type(number), "unknown")


@lru_cache(maxsize=65536)
def _classify(raw: str, home_region: str) -> tuple[str, str, str | None] | None:
    """(E.164, kind, region) of ``raw``, or None when it is not a phone number. Cached: libphonenumber's parse and
    validation cost about a quarter of a millisecond, and every outbound text and click-to-call asks again."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, home_region)
    except phonenumbers.NumberParseException:
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, _kind(number, e164), phonenumbers.region_code_for_number(number)


@dataclass(frozen=True, slots=True)
class NumberPolicy:
    """Which numbers may be texted (``sms_types``) or dialled (``dial_types``), and in which regions.

    An empty ``regions`` means the home region only.
    """

    home_region: str = "US"
    sms_types: frozenset[str] = frozenset({"mobile", "fixed_line_or_mobile"})
    dial_types: frozenset[str] = frozenset({"mobile", "fixed_line_or_mobile", "fixed_line"})
    regions: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls, home_region: str, sms_types: Iterable[str], dial_types: Iterable[str], regions: Iterable[str]
    ) -> NumberPolicy:
        """A policy from config lists (unknown names raise ``ValueError`` naming the known ones)."""
        for name in (*sms_types, *dial_types):
            if name not in NUMBER_TYPES:
                raise ValueError(f"unknown number type {name!r}; known: {', '.join(sorted(NUMBER_TYPES))}")
        return cls(
            home_region.upper(),
            frozenset(sms_types),
            frozenset(dial_types),
            frozenset(r.upper() for r in regions),
        )

    def check(self, raw: str, *, purpose: str = "sms") -> NumberVerdict:
        """Judge ``raw`` for ``purpose`` ('sms' or 'dial'); never raises."""
        classified = _classify(raw, self.home_region)
        if classified is None:
            return NumberVerdict(raw, "invalid", None, False, "it is not a phone number")
        e164, kind, region = classified
        if kind == "invalid":
            return NumberVerdict(e164, kind, region, False, "it is not a valid number (libphonenumber)")
        allowed_types = self.dial_types if purpose == "dial" else self.sms_types
        regions = self.regions or frozenset({self.home_region})
        if kind not in allowed_types:
            what = _WORDS.get(kind, f"a number of type {kind}")
            verb = "dialled" if purpose == "dial" else "texted"
            return NumberVerdict(e164, kind, region, False, f"it is {what}, which is not {verb} by this gateway")
        if "*" not in regions and region not in regions:
            return NumberVerdict(
                e164, kind, region, False, f"it is a number in {region or 'no country'}, outside the allowed regions"
            )
        return NumberVerdict(e164, kind, region, True, "allowed")


def refusal(verdict: NumberVerdict, *, purpose: str) -> NumberRefusedError:
    """The error for a refused number, with the config key that would allow it."""
    key = "gateway.dial_number_types" if purpose == "dial" else "gateway.sms_number_types"
    if verdict.kind not in ("invalid", "unknown") and verdict.reason.startswith("it is a number in"):
        key = "gateway.allowed_regions"
    return NumberRefusedError(
        f"refused to {'call' if purpose == 'dial' else 'text'} this number: {verdict.reason} (allowed by {key})",
        kind=verdict.kind,
        region=verdict.region,
    )


@dataclass(frozen=True, slots=True)
class BudgetState:
    """The automated-SMS budget right now (status page, /metrics, the rules engine)."""

    per_hour: int
    per_day: int
    used_hour: int
    used_day: int

    @property
    def hour_left(self) -> int:
        """Automated texts still allowed in the current rolling hour."""
        return max(0, self.per_hour - self.used_hour)

    @property
    def day_left(self) -> int:
        """Automated texts still allowed in the current rolling 24 hours."""
        return max(0, self.per_day - self.used_day)

    @property
    def left(self) -> int:
        """Automated texts that may be queued now."""
        return min(self.hour_left, self.day_left)

    @property
    def spent_window(self) -> str | None:
        """'hour' or 'day' when that budget is used up, else None."""
        if self.day_left <= 0:
            return "day"
        if self.hour_left <= 0:
            return "hour"
        return None


def budget_error(state: BudgetState) -> BudgetSpentError:
    """The error for a spent budget, naming the key that raises it."""
    window = state.spent_window or "hour"
    if window == "day":
        text = f"the automated SMS budget of {state.per_day} per 24 hours is spent (sms.automated_per_day)"
    else:
        text = f"the automated SMS budget of {state.per_hour} per hour is spent (sms.automated_per_hour)"
    return BudgetSpentError(text + "; the message was not queued", window=window)
