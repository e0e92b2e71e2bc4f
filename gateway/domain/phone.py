"""Phone number normalization with libphonenumber: E.164 when possible, raw and flagged when not."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

_PUNCT = re.compile(r"[\s().\-/]")


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A normalized number. ``e164`` is None when the input could not be parsed as a real number."""

    raw: str
    e164: str | None
    valid: bool

    @property
    def key(self) -> str:
        """The identity value to store: E.164 when valid, else a flagged raw form that still matches itself."""
        if self.e164 is not None:
            return self.e164
        cleaned = _PUNCT.sub("", self.raw.strip())
        return f"raw:{cleaned}" if cleaned else "raw:"


@lru_cache(maxsize=65536)
def normalize_phone(raw: str, region: str = "US") -> PhoneNumber:
    """Normalize ``raw`` ("+1 (555) 123-4567", "0044 20 7946 0958", "555-1234"...) for ``region``.

    Numbers that libphonenumber can parse but considers impossible, and strings that are not numbers at all, are
    kept raw and flagged (``valid=False``), never dropped. International prefixes written as 00 are understood.
    """
    text = raw.strip()
    if not text:
        return PhoneNumber(raw=raw, e164=None, valid=False)
    candidate = text
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    try:
        parsed = phonenumbers.parse(candidate, region.upper())
    except phonenumbers.NumberParseException:
        return PhoneNumber(raw=raw, e164=None, valid=False)
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        # Too short/long, or a local number without its area code ("555-1234" in the US): E.164 would be a
        # guess, so we keep the raw text and flag it for staff instead.
        return PhoneNumber(raw=raw, e164=None, valid=False)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return PhoneNumber(raw=raw, e164=e164, valid=True)


def is_region(code: str) -> bool:
    """True when ``code`` is a region libphonenumber knows (used to validate config)."""
    return code.upper() in phonenumbers.SUPPORTED_REGIONS
