"""Reading the spine from text with the real libraries (dateparser, libphonenumber, pyap) and a fixed clock."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.domain.extract import SpineReader
from gateway.domain.intent import IntentConfig, IntentRules
from gateway.domain.spine import DEFAULT_INTENTS, SpineConfig

# Tuesday 2025-12-02 19:00 UTC = 14:00 in New York, 04:00 on Wednesday in Seoul.
NOW = dt.datetime(2025, 12, 2, 19, 0, tzinfo=dt.UTC).timestamp()


def reader(timezone: str = "America/New_York", region: str = "US") -> SpineReader:
    cfg = SpineConfig(
        fact_patterns={
            **SpineConfig().fact_patterns,
            "roof_type": [r"(?P<value>shingle|metal|tile|flat) roof"],
        },
        topic_keywords=["chipped tooth", "roof leak", "estimate"],
    )
    return SpineReader(
        IntentRules.from_config(IntentConfig()),
        DEFAULT_INTENTS,
        region=region,
        timezone=timezone,
        fact_patterns=cfg.fact_patterns,
        topic_keywords=cfg.topic_keywords,
    )


def test_the_dental_emergency_chat() -> None:
    got = reader().read("My son chipped a tooth - do you handle emergencies?", NOW)
    assert got.intent == "problem"
    assert got.urgent
    assert got.facts["topic"].value == "chipped tooth"
    assert "availability" not in got.facts
    assert got.preference is None


@pytest.mark.parametrize(
    ("text", "words", "start"),
    [
        ("Saturday morning works for us", "Saturday morning", "2025-12-06T09:00-05:00"),
        ("any time after 3pm", "any time after 3pm", "2025-12-02T15:00-05:00"),
        ("tomorrow at 10 is fine", "tomorrow at 10:00", "2025-12-03T10:00-05:00"),
        ("can you come Friday?", "Friday", "2025-12-05T00:00-05:00"),
        ("next Monday at 9am please", "next Monday at 9am", "2025-12-08T09:00-05:00"),
    ],
)
def test_availability_is_read_in_the_business_time_zone(text: str, words: str, start: str) -> None:
    got = reader().read(text, NOW)
    assert got.facts["availability"].value == {"text": words, "start": start}


def test_relative_days_follow_the_business_time_zone_not_utc() -> None:
    # At 19:00 UTC it is already Wednesday 04:00 in Seoul: "tomorrow" there is Thursday.
    got = reader(timezone="Asia/Seoul", region="KR").read("tomorrow at 10am", NOW)
    assert got.facts["availability"].value == {"text": "tomorrow at 10am", "start": "2025-12-04T10:00+09:00"}


@pytest.mark.parametrize("text", ["we are open?", "May I ask something", "I have 2 kids", "thanks!"])
def test_ordinary_words_are_not_read_as_times(text: str) -> None:
    assert "availability" not in reader().read(text, NOW).facts


def test_callback_number_name_and_spoken_preference() -> None:
    got = reader().read("Hi this is Maria Rodriguez, call me back at (415) 555-2671 after 3pm", NOW)
    assert got.facts["name"].value == "Maria Rodriguez"
    assert got.facts["callback_number"].value == "+14155552671"
    assert got.facts["availability"].value == {"text": "after 3pm", "start": "2025-12-02T15:00-05:00"}, (
        "the phone number's digits are not read as a time"
    )
    assert got.preference == ("voice", "said 'call me'")


def test_the_roofer_estimate() -> None:
    got = reader().read("Need an estimate for a metal roof at 123 Main Street, Springfield, IL 62704", NOW)
    assert got.intent == "estimate"
    assert got.facts["address"].value == "123 Main Street, Springfield, IL 62704"
    assert got.facts["roof_type"].value == "metal"
    assert got.facts["topic"].value == "estimate"


def test_office_facts_and_text_me() -> None:
    got = reader().read("Saturday morning works, text me. Insurance is Delta Dental", NOW)
    assert got.facts["insurance"].value == "Delta Dental"
    assert got.preference == ("sms", "said 'text me'")
    assert reader().read("please don't text me, I can't read them", NOW).preference == ("voice", "said no texts")
    assert reader().read("I can't talk at work", NOW).preference == ("sms", "said they cannot talk")


def test_a_plain_question_is_a_question_and_keywords_win() -> None:
    plain = reader().read("Are you open on Sundays?", NOW)
    assert (plain.intent, plain.intent_from_keywords) == ("question", False)
    keyed = reader().read("Can I reschedule my cleaning?", NOW)
    assert (keyed.intent, keyed.intent_from_keywords) == ("reschedule", True)


def test_intents_outside_the_vocabulary_are_ignored() -> None:
    narrow = SpineReader(IntentRules.from_config(IntentConfig()), ["book", "other"], region="US", timezone="UTC")
    got = narrow.read("I need a quote", NOW)
    assert got.intent is None


def _readme_spine_examples() -> list[str]:
    from pathlib import Path  # noqa: PLC0415

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## The conversation spine") : readme.index("**Episodes.**")]
    blocks = section.split("```toml\n")[1:]
    return [b[: b.index("```")] for b in blocks]


def _reader_from_toml(text: str) -> SpineReader:
    import tomllib  # noqa: PLC0415

    section = tomllib.loads(text)["spine"]
    cfg = SpineConfig(**section)
    cfg.validate()
    return SpineReader(
        IntentRules.from_config(IntentConfig()),
        cfg.intents,
        region="US",
        timezone="America/New_York",
        fact_patterns=cfg.fact_patterns,
        topic_keywords=cfg.topic_keywords,
    )


def test_the_readme_examples_for_a_dental_office_and_a_roofer_hold() -> None:
    dental, roofer = (_reader_from_toml(t) for t in _readme_spine_examples())
    chat = dental.read("My son chipped a tooth - do you handle emergencies?", NOW)
    assert (chat.intent, chat.urgent, chat.facts["topic"].value) == ("problem", True, "chipped tooth")
    sms = dental.read("Saturday morning works, text me. Insurance is Delta Dental", NOW)
    assert sms.facts["availability"].value["text"] == "Saturday morning"
    assert sms.facts["insurance"].value == "Delta Dental"
    assert sms.preference is not None
    assert sms.preference[0] == "sms"
    roof = roofer.read("Need an estimate for a metal roof at 123 Main Street, Springfield, IL 62704", NOW)
    assert roof.intent == "estimate"
    assert roof.facts["roof_type"].value == "metal"
    assert roof.facts["address"].value == "123 Main Street, Springfield, IL 62704"


def test_reading_an_address_leaves_the_import_system_clean() -> None:
    import sys  # noqa: PLC0415

    assert reader().read("at 123 Main Street, Springfield, IL 62704", NOW).facts["address"]
    assert all(hasattr(f, "find_spec") for f in sys.meta_path), "a finder without find_spec breaks later imports"


@pytest.mark.parametrize(
    ("region", "timezone", "text", "address"),
    [
        (
            "GB",
            "Europe/London",
            "The leak is at 10 Downing Street, London SW1A 2AA, please come",
            "10 Downing Street, London SW1A 2AA",
        ),
        (
            "CA",
            "America/Toronto",
            "We are at 123 Main Street, Toronto, ON M5V 2T6",
            "123 Main Street, Toronto, ON M5V 2T6",
        ),
    ],
)
def test_british_and_canadian_addresses(region: str, timezone: str, text: str, address: str) -> None:
    assert reader(timezone=timezone, region=region).read(text, NOW).facts["address"].value == address


def test_regions_without_an_address_format_read_no_address() -> None:
    got = reader(timezone="Asia/Seoul", region="KR").read("123 Main Street, Springfield, IL 62704", NOW)
    assert "address" not in got.facts
