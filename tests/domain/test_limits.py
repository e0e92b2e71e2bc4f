"""The number policy and the automated-SMS budget, through the conversation service over a real store."""

from __future__ import annotations

import logging

import pytest

from gateway.config import parse
from gateway.domain.bus import Bus
from gateway.domain.limits import (
    BudgetSpentError,
    NumberNeedsConfirmationError,
    NumberPolicy,
    NumberRefusedError,
)
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.errors import ConfigError, PermanentError
from gateway.store.db import Store

MOBILE_US = "+12025550123"  # fixed_line_or_mobile in libphonenumber
PREMIUM_US = "+19005551234"
UK_MOBILE = "+447400123456"
UK_LANDLINE = "+442079460958"
INVALID_US = "+15551234567"  # area code 555 does not exist


def visitor(value: str = "visitor-1") -> Inbound:
    return Inbound(Channel.CHAT, EventKind.MESSAGE_IN, IdentityKind.CHAT, value, f"x-{value}", "hi")


def test_policy_types_and_regions() -> None:
    policy = NumberPolicy(home_region="US")
    assert policy.check(MOBILE_US).allowed
    premium = policy.check("1-900-555-1234")
    assert (premium.allowed, premium.kind) == (False, "premium_rate")
    assert not policy.check(INVALID_US).allowed
    assert policy.check(INVALID_US).kind == "invalid"
    foreign = policy.check(UK_MOBILE)
    assert (foreign.allowed, foreign.kind, foreign.region) == (False, "mobile", "GB")
    assert "outside the allowed regions" in foreign.reason
    assert not policy.check("+881612345678").allowed  # Iridium satellite
    assert policy.check("+881612345678").kind == "satellite"
    assert not policy.check("not a number").allowed
    # Dialling a landline is normal (calling a customer back); texting one is not.
    gb = NumberPolicy.build("GB", ["mobile"], ["mobile", "fixed_line"], [])
    assert gb.check(UK_LANDLINE, purpose="dial").allowed
    assert not gb.check(UK_LANDLINE, purpose="sms").allowed
    assert gb.check("07400 123456").allowed  # national format read in the home region
    anywhere = NumberPolicy.build("US", ["mobile", "fixed_line_or_mobile"], ["mobile"], ["*"])
    assert anywhere.check(UK_MOBILE).allowed


def test_policy_config_keys_are_validated() -> None:
    with pytest.raises(ConfigError, match="unknown number type 'premium'"):
        parse('[gateway]\nsms_number_types = ["mobile", "premium"]\n')
    with pytest.raises(ConfigError, match="allowed_regions: 'XX'"):
        parse('[gateway]\nallowed_regions = ["XX"]\n')
    with pytest.raises(ConfigError, match="staff_number_check"):
        parse('[gateway]\nstaff_number_check = "maybe"\n')
    cfg = parse('[gateway]\nsms_number_types = ["mobile", "fixed_line_or_mobile", "premium_rate"]\n')
    assert cfg.gateway.number_policy().check(PREMIUM_US).allowed


async def test_automated_texts_to_premium_foreign_or_invalid_numbers_are_refused(
    service: ConversationService,
) -> None:
    r = await service.ingest(visitor())
    for number, words in (
        (PREMIUM_US, "premium-rate"),
        (UK_MOBILE, "outside the allowed regions"),
        (INVALID_US, "not a valid number"),
    ):
        with pytest.raises(NumberRefusedError, match=words) as info:
            await service.enqueue_outbound(r.conversation_id, Channel.SMS, number, "Your code", automated=True)
        assert isinstance(info.value, PermanentError)
    assert await service.store.read(lambda c: c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]) == 0
    assert await service.enqueue_outbound(r.conversation_id, Channel.SMS, MOBILE_US, "Hello", automated=True)


async def test_staff_texts_outside_the_policy_warn_confirm_or_refuse(
    store: Store, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    warn = ConversationService(store, bus, ServiceSettings(staff_number_check="warn"))
    r = await warn.ingest(visitor())
    caplog.set_level(logging.WARNING)
    await warn.enqueue_outbound(r.conversation_id, Channel.SMS, PREMIUM_US, "as asked", automated=False, author="ana")
    event = (await warn.timeline(r.conversation_id))[-1]
    assert "premium-rate" in event.meta["number_warning"]
    assert any("outside the policy" in rec.getMessage() for rec in caplog.records)
    assert all("900" not in rec.getMessage() for rec in caplog.records)  # numbers only at DEBUG

    confirm = ConversationService(store, bus, ServiceSettings(staff_number_check="confirm"))
    with pytest.raises(NumberNeedsConfirmationError, match="Confirm to send anyway"):
        await confirm.enqueue_outbound(r.conversation_id, Channel.SMS, PREMIUM_US, "x", automated=False)
    await confirm.enqueue_outbound(
        r.conversation_id, Channel.SMS, PREMIUM_US, "confirmed", automated=False, author="ana", confirm_number=True
    )
    audit = await store.read(
        lambda c: c.execute("SELECT actor, action FROM audit_log WHERE action = 'number_policy_override'").fetchall()
    )
    assert audit == [("ana", "number_policy_override")]
    # A confirmation never lets an automated message through.
    with pytest.raises(NumberRefusedError):
        await confirm.enqueue_outbound(r.conversation_id, Channel.SMS, PREMIUM_US, "x", automated=True)

    refuse = ConversationService(store, bus, ServiceSettings(staff_number_check="refuse"))
    with pytest.raises(NumberRefusedError, match=r"gateway\.sms_number_types"):
        await refuse.enqueue_outbound(
            r.conversation_id, Channel.SMS, PREMIUM_US, "x", automated=False, confirm_number=True
        )


async def test_budget_caps_automated_texts_per_hour_and_warns_once(
    store: Store, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    service = ConversationService(store, bus, ServiceSettings(automated_sms_per_hour=3, automated_sms_per_day=10))
    caplog.set_level(logging.INFO)
    convs = [(await service.ingest(visitor(f"v{i}"))).conversation_id for i in range(5)]
    assert (await service.budget_left()).left == 3
    for i in range(3):
        await service.enqueue_outbound(convs[i], Channel.SMS, f"+1202555010{i}", "Hi", automated=True)
    state = await service.budget_left()
    assert (state.left, state.hour_left, state.day_left, state.spent_window) == (0, 0, 7, "hour")
    for i in (3, 4):
        with pytest.raises(BudgetSpentError, match=r"3 per hour is spent \(sms\.automated_per_hour\)"):
            await service.enqueue_outbound(convs[i], Channel.SMS, f"+1202555010{i}", "Hi", automated=True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "budget" in r.getMessage()]
    assert len(warnings) == 1  # once per spell, not once per refused text
    # Staff replies are never held back by the automated budget.
    assert await service.enqueue_outbound(convs[3], Channel.SMS, "+12025550103", "Staff here", automated=False)
    # An hour later the budget is back (the window rolls): age the rows instead of sleeping.
    await store.write(lambda c: c.execute("UPDATE outbox SET created_at = created_at - 3601"))
    state = await service.budget_left()
    assert (state.hour_left, state.day_left) == (3, 7)
    assert any("available again" in r.getMessage() for r in caplog.records)


async def test_budget_per_day(store: Store, bus: Bus) -> None:
    service = ConversationService(store, bus, ServiceSettings(automated_sms_per_hour=100, automated_sms_per_day=2))
    conv = (await service.ingest(visitor())).conversation_id
    await service.enqueue_outbound(conv, Channel.SMS, MOBILE_US, "1", automated=True)
    await store.write(lambda c: c.execute("UPDATE outbox SET created_at = created_at - 7200"))
    await service.enqueue_outbound(conv, Channel.SMS, MOBILE_US, "2", automated=True)
    with pytest.raises(BudgetSpentError, match=r"2 per 24 hours") as info:
        await service.enqueue_outbound(conv, Channel.SMS, MOBILE_US, "3", automated=True)
    assert info.value.window == "day"
    await store.write(lambda c: c.execute("UPDATE outbox SET created_at = created_at - 86400 WHERE body = '1'"))
    assert (await service.budget_left()).left == 1


@pytest.mark.parametrize(
    "body", ["Stop!", "\uff33\uff34\uff2f\uff30", "STOP 🙏", " stop. ", "Opt-Out", "STOP\u200d\ufe0f", "¡STOP!"]
)
def test_stop_is_recognised_however_it_is_typed(body: str) -> None:
    from gateway.domain.optout import Keyword, OptOutPolicy  # noqa: PLC0415

    assert OptOutPolicy().classify(body) is Keyword.STOP


@pytest.mark.parametrize("body", ["please stop calling me", "🙏", "!!!", "stopp", "don't stop"])
def test_sentences_and_symbols_are_not_keywords(body: str) -> None:
    from gateway.domain.optout import OptOutPolicy  # noqa: PLC0415

    assert OptOutPolicy().classify(body) is None
