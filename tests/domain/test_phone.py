"""Phone number normalization (libphonenumber) for identities."""

from __future__ import annotations

import pytest

from gateway.domain.phone import is_region, normalize_phone


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+1 (555) 123-4567", "US", "+15551234567"),
        ("(555) 123-4567", "US", "+15551234567"),
        ("555.123.4567", "US", "+15551234567"),
        ("0044 20 7946 0958", "US", "+442079460958"),
        ("+44 20 7946 0958", "DE", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("010-1234-5678", "KR", "+821012345678"),
        ("  +49 30 901820  ", "US", "+4930901820"),
    ],
)
def test_numbers_become_e164(raw: str, region: str, e164: str) -> None:
    number = normalize_phone(raw, region)
    assert number.valid
    assert number.e164 == e164
    assert number.key == e164


@pytest.mark.parametrize("raw", ["555-1234", "anonymous", "", "12", "Restricted", "+", "not a number"])
def test_unusable_numbers_are_flagged_not_dropped(raw: str) -> None:
    number = normalize_phone(raw, "US")
    assert not number.valid
    assert number.e164 is None
    assert number.raw == raw
    assert number.key.startswith("raw:")


def test_region_codes() -> None:
    assert is_region("us")
    assert is_region("KR")
    assert not is_region("XX")
