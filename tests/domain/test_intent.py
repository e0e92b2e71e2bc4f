"""Keyword spotting in Korean and English transcripts."""

from __future__ import annotations

import pytest

from gateway.domain.intent import IntentConfig, IntentRules, KeywordHit, normalize


@pytest.fixture
def rules() -> IntentRules:
    return IntentRules.from_config(IntentConfig())


def test_normalize_folds_width_case_and_punctuation() -> None:
    fullwidth_book = "\uff22\uff2f\uff2f\uff2b"
    assert normalize(f"  {fullwidth_book}, please!!  예약?  ") == "book please 예약"
    assert normalize("Cancel_it") == "cancel it"


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("안녕하세요 예약하고 싶습니다", "book"),
        ("내일 예약을 취소해 주세요 취소요", "cancel"),
        ("견적 부탁드립니다", "estimate"),
        ("Hi, I'd like to book an appointment for Tuesday", "book"),
        ("I need to CANCEL my booking. Cancel it, please, cancelled!", "cancel"),
        ("How much would it be? Can you send a quote", "estimate"),
    ],
)
def test_intent_in_korean_and_english(rules: IntentRules, text: str, intent: str) -> None:
    decision = rules.decide(rules.spot(text))
    assert decision.intent == intent
    assert not decision.urgent


def test_urgent_sets_the_flag_but_not_the_intent(rules: IntentRules) -> None:
    d = rules.decide(rules.spot("급한 일입니다. 빨리 전화 주세요"))
    assert d.urgent
    assert d.intent is None
    d = rules.decide(rules.spot("It's an emergency, I need to book someone right away"))
    assert (d.intent, d.urgent) == ("book", True)
    assert d.keywords == ["emergency", "book", "right away"]


def test_nothing_spotted_in_unrelated_speech(rules: IntentRules) -> None:
    d = rules.decide(rules.spot("안녕하세요. 내일 날씨가 좋네요. 감사합니다. Nice weather today"))
    assert d == type(d)(None, False, ())


def test_keyword_must_start_the_word(rules: IntentRules) -> None:
    # "rebook" and "textbook" are not "book"; "예약" inside another word is not at its start either.
    assert rules.spot("rebook the textbook 사전예약") == []


def test_multi_word_keywords_and_ties_follow_configuration_order() -> None:
    rules = IntentRules({"cancel": ["call off"], "book": ["book"]})
    assert [h.keyword for h in rules.spot("please call off the book club call")] == [
        "call off",
        "book",
    ]
    assert rules.decide(rules.spot("call off book")).intent == "cancel"
    assert rules.decide(rules.spot("book call off book")).intent == "book"


def test_grammar_hits_count_like_text_hits(rules: IntentRules) -> None:
    heard = [KeywordHit("book", "예약", "grammar", 0.93, 1.2)]
    d = rules.decide(heard + rules.spot("예 를 들어"))
    assert d.intent == "book"
    assert d.hits[0].source == "grammar"
    assert rules.intent_of("예약") == "book"
    assert rules.intent_of("ASAP") == "urgent"
    assert rules.intent_of("hello") is None


def test_grammar_phrases_are_normalised_and_unique() -> None:
    rules = IntentRules({"a": ["Book", "book", "Call  Off"], "b": ["취소"]})
    assert sorted(rules.grammar_phrases()) == ["book", "call off", "취소"]


def test_bad_configuration_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="empty keyword"):
        IntentRules({"book": ["  ", "예약"]})
    with pytest.raises(ValueError, match="must not be empty"):
        IntentRules({" ": ["x"]})
