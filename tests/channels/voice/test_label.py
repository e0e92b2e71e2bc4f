"""Caller labels for the phone display, and the [voice] settings validation."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from gateway.channels.voice.agi_server import AgiServer
from gateway.channels.voice.label import context_label, sanitize_label, short_name, stored_name
from gateway.channels.voice.settings import VoiceSettings
from gateway.domain.models import ConversationSummary
from gateway.errors import ConfigError
from gateway.protocols.agi import set_variable


def summary(**kw: Any) -> ConversationSummary:
    base: dict[str, Any] = {
        "conversation_id": 1,
        "contact_id": 1,
        "display_name": "Maria Rodriguez",
        "status": "open",
        "intent": "roof estimate",
        "next_step": None,
        "urgent": False,
        "owner": None,
        "preferred_channel": None,
        "facts": {},
        "phone": None,
        "last_by_channel": {},
        "latest_transcript": None,
        "last_staff_extension": None,
        "awaiting_since": None,
    }
    base.update(kw)
    return ConversationSummary(**base)


SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,/&+#()!?:@_-")

HOSTILE = [
    "",
    "   ",
    'Maria "the boss" R',
    "Maria\r\nVia: evil",
    "Maria; Dial(PJSIP/999)",
    "José Müller-Lüdenscheidt",
    "Łukasz Ærø ßtraße",
    "김민준",
    "Zoë 🙂 café",
    "\x00\x1b[31mred\x7f",
    "x" * 100_000,
    "<sip:evil@host>",
    "back\\slash",
    "'single' `tick`",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_sanitize_never_lets_unsafe_characters_through(raw: str) -> None:
    out = sanitize_label(raw, 32)
    assert len(out) <= 32
    assert set(out) <= SAFE
    assert out == out.strip()
    assert "  " not in out
    # Whatever comes out can be carried by an AGI command line.
    set_variable("CALLERID(name)", out)


def test_transliteration_and_cuts() -> None:
    assert sanitize_label("José Müller") == "Jose Muller"
    assert sanitize_label("Łukasz straße") == "Lukasz strasse"
    assert sanitize_label("김민준") == "GimMinJun"
    assert sanitize_label("Zoë 🙂 café") == "Zoe cafe"
    assert sanitize_label("שלום") == "slvm"
    assert sanitize_label("Maria Rodriguez - roof estimate and gutters", 24) == "Maria Rodriguez - roof"
    assert sanitize_label("Supercalifragilisticexpialidocious", 10) == "Supercalif"
    assert sanitize_label('Maria "M" R;') == "Maria M R"


def test_stored_name_keeps_what_was_written() -> None:
    assert stored_name("김민수") == "김민수"
    assert stored_name("Zoë 🙂 café") == "Zoë 🙂 café"
    assert stored_name("👩\u200d💻 Ana") == "👩\u200d💻 Ana"  # the joiner is part of the emoji
    assert stored_name("evil\u202etxt.exe") == "eviltxt.exe"  # no right-to-left override
    assert stored_name("a\r\n  b\x00") == "a b"


def test_short_name() -> None:
    assert short_name("Maria Rodriguez") == "Maria R"
    assert short_name("Maria de la Cruz") == "Maria C"
    assert short_name("Cher") == "Cher"


def test_context_label_known_unknown_withheld() -> None:
    kw: dict[str, Any] = {"caller_number": "+15551234567", "caller_name": "", "withheld": False}
    assert context_label(summary(), **kw) == "Maria R - roof estimate"
    assert context_label(summary(intent=None, next_step="call back"), **kw) == "Maria R - call back"
    assert context_label(summary(urgent=True), **kw) == "Maria R - roof estimate, urgent"
    assert context_label(summary(urgent=True, facts={"topic": "chipped tooth"}), **kw) == (
        "Maria R - chipped tooth, urgent"
    )
    assert (
        context_label(summary(urgent=True, intent="emergency root canal"), **kw) == "! Maria R - emergency root canal"
    )
    assert context_label(summary(display_name=None), **kw) == "+15551234567 - roof estimate"
    assert context_label(summary(display_name=None, facts={"name": "Dana Whitfield"}), **kw) == (
        "Dana W - roof estimate"
    ), "the spine's captured name when the contact has none"
    assert context_label(summary(display_name="김민준", intent="예약"), **kw) == "GimMinJun - YeYag"
    assert context_label(summary(display_name="🙂", intent=None, next_step=None), **kw) == "+15551234567"
    assert context_label(None, **kw) == "+15551234567"
    assert context_label(None, caller_number="5551234", caller_name="ACME; Inc", withheld=False) == "ACME Inc"
    assert context_label(None, caller_number="", caller_name="", withheld=False) == "Unknown caller"
    assert context_label(None, caller_number="anonymous", caller_name="x", withheld=True) == "Withheld number"
    long = summary(display_name="A" * 500, intent="B" * 500)
    assert len(context_label(long, **kw, max_chars=20)) <= 20


def test_settings_validation() -> None:
    VoiceSettings(staff={"201": "alice"}, staff_group="PJSIP/201&PJSIP/202").validate()
    bad = [
        (VoiceSettings(staff={"2 01": "alice"}), r"voice\.staff"),
        (VoiceSettings(staff={"201": "al ice"}), r"voice\.staff"),
        (VoiceSettings(staff_group="PJSIP/201,tT"), r"voice\.staff_group"),
        (VoiceSettings(staff_group="Local/201@x"), r"voice\.staff_group"),
        (VoiceSettings(lookup_budget_ms=500), r"voice\.lookup_budget_ms"),
        (VoiceSettings(label_max_chars=0), r"voice\.label_max_chars"),
        (VoiceSettings(ami_ping_interval=25, ami_ping_timeout=10), r"half-open"),
        (VoiceSettings(click_to_call_context="a,b"), r"voice\.click_to_call_context"),
    ]
    for settings, match in bad:
        with pytest.raises(ConfigError, match=match):
            settings.validate()


def test_secret_does_not_print() -> None:
    from gateway.config import Secret  # noqa: PLC0415

    s = VoiceSettings(ami_secret=Secret("hunter2"))
    assert "hunter2" not in repr(s)
    assert s.ami_secret.reveal() == "hunter2"


async def test_agi_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = AgiServer({}, port=port)
        with pytest.raises(ConfigError, match=r"voice\.agi_port"):
            await server.start()
    await asyncio.sleep(0)
