"""The [sms] section follows the config contract: allowed types, a default and a doc line each."""

from __future__ import annotations

import dataclasses
import typing

from gateway.channels.sms.config import SmsConfig
from gateway.config import Secret
from gateway.domain.optout import Keyword

ALLOWED = {"str", "int", "float", "bool", "list[str]", "dict[str, str]", "dict[str, list[str]]", "Secret"}


def test_every_key_has_an_allowed_type_a_default_and_a_doc() -> None:
    hints = typing.get_type_hints(SmsConfig, globalns={"Secret": Secret})
    for f in dataclasses.fields(SmsConfig):
        name = getattr(hints[f.name], "__name__", None)
        shown = str(hints[f.name]) if name in (None, "list", "dict") else name
        assert shown in ALLOWED, (f.name, shown)
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        assert f.metadata.get("doc"), f.name


def test_pin_never_prints() -> None:
    cfg = SmsConfig(pin=Secret("1234"))
    assert "1234" not in repr(cfg)
    assert cfg.pin.reveal() == "1234"


def test_keywords_are_configurable() -> None:
    policy = SmsConfig(optout_stop=["ARRET", "stop"], optout_start=["go"]).optout_policy()
    assert policy.classify("  arrêt ") is None
    assert policy.classify(" arret ") is Keyword.STOP
    assert policy.classify("Go") is Keyword.START
    assert policy.classify("UNSUBSCRIBE") is None  # replaced, not added
    assert policy.classify("opt   out") is None


def test_default_keywords() -> None:
    policy = SmsConfig().optout_policy()
    for word in ["STOP", "stopall", " Unsubscribe ", "cancel", "END", "quit", "revoke", "optout"]:
        assert policy.classify(word) is Keyword.STOP, word
    assert policy.classify("opt   OUT") is Keyword.STOP
    assert policy.classify("start") is Keyword.START
    assert policy.classify("UNSTOP") is Keyword.START
    assert policy.classify("help") is Keyword.HELP
    assert policy.classify("stop!") is Keyword.STOP  # punctuation and emoji are ignored (issue 9)
    for sentence in ["stop it", "please stop", "", "   "]:
        assert policy.classify(sentence) is None, sentence
