"""Pure parts: business hours with split shifts and holidays, templates, config errors, restraint, rule decisions."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from gateway import config as cfgmod
from gateway.continuity import restraint, rules
from gateway.continuity.config import ContinuityConfig
from gateway.continuity.templates import check_template, render
from gateway.errors import ConfigError
from gateway.web import hours
from tests.continuity.conftest import HOURS, TZ, local


def test_split_shift_reopens_after_lunch() -> None:
    assert hours.is_open(HOURS, TZ, local(7, 11, 59))
    assert not hours.is_open(HOURS, TZ, local(7, 12, 15))
    assert hours.next_open(HOURS, TZ, local(7, 12, 15)) == local(7, 13, 30)
    assert hours.describe_moment(local(7, 13, 30), TZ, local(7, 12, 15)) == "at 13:30"


def test_weekend_and_configured_closed_dates_are_skipped() -> None:
    friday_evening = local(11, 19)
    assert hours.describe_moment(hours.next_open(HOURS, TZ, friday_evening) or 0, TZ, friday_evening) == (
        "on Monday at 08:00"
    )
    closed = hours.ClosedDates(["2026-12-14"])
    assert hours.next_open(HOURS, TZ, friday_evening, closed) == local(15, 8)


def test_public_holidays_from_the_holidays_package() -> None:
    closed = hours.ClosedDates(country="US")
    assert closed.is_closed(dt.date(2026, 12, 25))
    christmas_eve = local(24, 19)
    assert hours.next_open(HOURS, TZ, christmas_eve, closed) == local(28, 8)
    with pytest.raises(ConfigError, match="holiday country 'XX' is unknown"):
        hours.ClosedDates(country="XX")


def test_open_seconds_between_counts_business_hours_only() -> None:
    assert hours.open_seconds_between(HOURS, TZ, local(7, 11), local(7, 14)) == 1.5 * 3600
    assert hours.open_seconds_between(HOURS, TZ, local(11, 17), local(14, 9)) == 2 * 3600


def test_quiet_hours_end() -> None:
    assert hours.quiet_ends("21:00-08:00", TZ, local(7, 23)) == local(8, 8)
    assert hours.quiet_ends("21:00-08:00", TZ, local(8, 3)) == local(8, 8)
    assert hours.quiet_ends("21:00-08:00", TZ, local(8, 9)) == local(8, 9)


def test_unknown_template_variable_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"continuity\.missed_call_template: unknown template variable \{frist_name\}"
    ):
        cfgmod.parse('[continuity]\nmissed_call_template = "Hi {frist_name}"\n')
    with pytest.raises(ConfigError, match="not a named variable"):
        check_template("Hi {}", "k")
    with pytest.raises(ConfigError, match="malformed"):
        check_template("Hi {first_name", "k")
    with pytest.raises(ConfigError, match=r"continuity\.quiet_hours"):
        cfgmod.parse('[continuity]\nquiet_hours = "late"\n')
    with pytest.raises(ConfigError, match=r"continuity\.wanted_facts names 'roof_type'"):
        cfgmod.parse('[continuity]\nwanted_facts = ["roof_type"]\n')


def test_render_tidies_empty_optional_phrases() -> None:
    assert render("Sorry we missed your call{intent_phrase}. Bye", {"intent_phrase": ""}) == (
        "Sorry we missed your call. Bye"
    )


def test_episode_chains_contacts_closer_than_the_window() -> None:
    window = 30 * 60.0
    contacts = [0.0, 20 * 60, 45 * 60, 200 * 60]
    assert restraint.episode_start(contacts, window, 201 * 60) == 200 * 60
    assert restraint.episode_start(contacts[:3], window, 50 * 60) == 0.0


def test_restraint_order_and_reasons() -> None:
    cfg = ContinuityConfig()
    now = local(7, 10)
    check = lambda h: restraint.check(cfg, h, now, channel="sms", timezone=TZ)  # noqa: E731
    assert isinstance(check(restraint.History()), restraint.Allow)
    assert check(restraint.History(opted_out=True)) == restraint.Suppress("the customer opted out (STOP)")
    assert isinstance(check(restraint.History(human_at=now - 600)), restraint.Suppress)
    assert isinstance(check(restraint.History(human_at=now - 7200)), restraint.Allow)
    night = restraint.check(cfg, restraint.History(), local(7, 22), channel="sms", timezone=TZ)
    assert night == restraint.Defer(local(8, 8), "quiet hours: deferred until tomorrow at 08:00")
    chat = restraint.check(cfg, restraint.History(), local(7, 22), channel="chat", timezone=TZ)
    assert isinstance(chat, restraint.Allow), "quiet hours hold texts, not an answer in an open chat"


def _ctx() -> rules.Context:
    return rules.Context(ContinuityConfig(), "Roof Pros", TZ, HOURS, hours.ClosedDates())


def test_missed_call_rule_is_pure_and_refers_to_what_is_known() -> None:
    state = rules.State(conversation_id=1, phone="+12025550143", intent="estimate")
    trigger = rules.Trigger("call_missed", "voice", 1, 10)
    (decision,) = rules.on_event(trigger, state, _ctx(), local(7, 10))
    assert decision == rules.Schedule("missed_call", local(7, 10, 3), "text back after the delay")
    sent = rules.on_due("missed_call", {}, state, _ctx(), local(7, 10, 3))
    assert isinstance(sent, rules.Send)
    assert sent.body.startswith("Sorry we missed your call about your estimate.")
    landline = rules.State(conversation_id=1, phone="+12025550143", textable=False)
    assert rules.on_event(trigger, landline, _ctx(), local(7, 10)) == [
        rules.Skip("missed_call", "the number cannot receive texts (landline or service number)")
    ]
    unreachable = rules.State(conversation_id=1, phone="+12025550143", unreachable=True)
    assert isinstance(rules.on_event(trigger, unreachable, _ctx(), local(7, 10))[0], rules.Skip)
    cooled = rules.State(conversation_id=1, phone="+12025550143", last_missed_call_text=local(7, 9))
    (skip,) = rules.on_event(trigger, cooled, _ctx(), local(7, 10))
    assert skip == rules.Skip("missed_call", "cooldown: this number was texted 60 min ago")


def test_readme_continuity_examples_are_valid_config() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Rules that remember") : readme.index("## Channels")]
    blocks = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    for block in blocks:
        cfg = cfgmod.parse(block, "README")
        assert cfg.continuity.business_name


def test_a_deferred_call_back_failure_text_is_a_text_never_a_new_call() -> None:
    state = rules.State(conversation_id=1, phone="+12025550143", owner_extension="201")
    decision = rules.on_due("call_me", {"channel": "sms", "to": "+12025550143"}, state, _ctx(), local(7, 10))
    assert isinstance(decision, rules.Send)
    assert decision.body.startswith("We tried to call you back")
    assert isinstance(rules.on_due("call_me", {"attempt": 1}, state, _ctx(), local(7, 10)), rules.Call)
