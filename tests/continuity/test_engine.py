"""The engine on a real SQLite store with a hand-moved clock: rules, restraint and durable scheduling together."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from gateway.domain.calls import CallDirection, CallOutcome, CallRecord
from gateway.domain.events import CallEnded, StalledThread
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ServiceSettings
from gateway.domain.spine import SpineService
from gateway.leakage.config import LeakageConfig
from gateway.leakage.service import LeakageService
from gateway.store.queries import upsert_staff
from tests.continuity.conftest import CUSTOMER, HOURS, TZ, Rig, local


async def test_missed_call_is_texted_after_the_delay_naming_what_is_known(rig: Rig) -> None:
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "How much would a new roof estimate be?")
    await rig.service.update_conversation(conv, intent="estimate")
    await rig.inbound(EventKind.CALL_MISSED)
    assert rig.texts() == []
    assert rig.decisions("missed_call")[-1][1] == "deferred"
    await rig.at(local(7, 10, 2))
    assert rig.texts() == [], "nothing before the 3-minute delay is over"
    await rig.at(local(7, 10, 3))
    (text,) = rig.texts()
    assert "about your estimate" in text
    assert "Bright Smile Dental" in text
    out = rig.rows(
        "SELECT json_extract(meta, '$.rule'), json_extract(meta, '$.automated') FROM events WHERE kind = 'message_out'"
    )
    assert out == [("missed_call", 1)]
    assert rig.decisions("missed_call")[-1][1] == "sent"


async def test_staff_reply_during_the_delay_cancels_the_text_back(rig: Rig) -> None:
    conv = await rig.inbound(EventKind.CALL_MISSED)
    await rig.at(local(7, 10, 1))
    await rig.service.enqueue_outbound(
        conv, Channel.SMS, CUSTOMER, "Sorry, calling you now", automated=False, author="anna"
    )
    await rig.engine.tick()
    await rig.at(local(7, 10, 10))
    assert rig.texts() == []
    assert ("missed_call", "cancelled", "staff replied during the delay") in rig.decisions()


async def test_staff_call_back_and_voicemail_cancel_the_text_back(rig: Rig) -> None:
    conv = await rig.inbound(EventKind.CALL_MISSED)
    await rig.service.append_event(conv, EventKind.CALL_RINGING, Channel.VOICE, "", {"direction": "outbound"})
    await rig.engine.tick()
    assert ("missed_call", "cancelled", "staff called back during the delay") in rig.decisions()
    await rig.at(local(7, 14))
    await rig.inbound(EventKind.CALL_MISSED, number="+12025550199")
    await rig.inbound(EventKind.VOICEMAIL, number="+12025550199")
    assert rig.decisions("missed_call")[-1][1] == "cancelled"
    assert "voicemail" in rig.decisions("missed_call")[-1][2]


async def test_withheld_and_internal_numbers_are_never_texted(rig: Rig) -> None:
    await rig.inbound(EventKind.CALL_MISSED, number="")
    await rig.inbound(EventKind.CALL_MISSED, number="201")
    await rig.at(local(7, 11))
    assert rig.texts() == []
    reasons = [d[2] for d in rig.decisions("missed_call")]
    assert reasons == ["the number is withheld or unknown", "the number is an internal extension"]


async def test_ten_missed_calls_in_five_minutes_produce_one_text(rig: Rig) -> None:
    for i in range(10):
        await rig.at(local(7, 10) + i * 30)
        await rig.inbound(EventKind.CALL_MISSED)
    await rig.at(local(7, 10, 30))
    assert len(rig.texts()) == 1
    decisions = rig.decisions("missed_call")
    assert sum(1 for d in decisions if d[1] == "sent") == 1
    assert sum(1 for d in decisions if d[1] == "suppressed") == 9


async def test_a_missed_call_at_23_is_texted_at_08_exactly_once_across_a_restart(rig: Rig) -> None:
    await rig.at(local(7, 23))
    await rig.inbound(EventKind.CALL_MISSED)
    await rig.at(local(7, 23, 3))
    assert rig.texts() == []
    assert rig.decisions("missed_call")[-1][1:] == ("deferred", "quiet hours: deferred until tomorrow at 08:00")
    await rig.at(local(8, 3))
    await rig.restart()
    await rig.at(local(8, 7, 59))
    assert rig.texts() == []
    await rig.at(local(8, 8))
    assert len(rig.texts()) == 1
    await rig.restart()
    await rig.at(local(8, 9))
    assert len(rig.texts()) == 1, "a restart after the send does not send again"


async def test_a_send_interrupted_after_queueing_is_not_sent_twice(rig: Rig) -> None:
    conv = await rig.inbound(EventKind.CALL_MISSED)
    (job_id,) = [r[0] for r in rig.rows("SELECT id FROM continuity_jobs WHERE state = 'scheduled'")]
    # What a crash between queueing the message and marking the job leaves behind:
    await rig.store.write(lambda c: c.execute("UPDATE continuity_jobs SET state = 'sending' WHERE id = ?", (job_id,)))
    await rig.service.enqueue_outbound(
        conv,
        Channel.SMS,
        CUSTOMER,
        "Sorry we missed your call",
        automated=True,
        event_meta={"rule": "missed_call", "job_id": job_id},
    )
    await rig.restart()
    await rig.at(local(7, 11))
    assert len(rig.texts()) == 1
    assert rig.rows("SELECT state FROM continuity_jobs WHERE id = ?", job_id) == [("done",)]


async def test_a_send_interrupted_before_queueing_goes_once_after_the_restart(rig: Rig) -> None:
    await rig.inbound(EventKind.CALL_MISSED)
    await rig.store.write(lambda c: c.execute("UPDATE continuity_jobs SET state = 'sending'"))
    await rig.restart()
    await rig.at(local(7, 11))
    await rig.at(local(7, 12))
    assert len(rig.texts()) == 1


async def test_a_send_whose_moment_passed_while_down_is_rechecked(rig: Rig) -> None:
    await rig.inbound(EventKind.CALL_MISSED)
    await rig.engine.stop()
    await rig.store.write(
        lambda c: c.execute("INSERT INTO suppressions (address, reason, created_at) VALUES (?, 'stop', 0)", (CUSTOMER,))
    )
    await rig.restart()
    await rig.at(local(7, 11))
    assert rig.texts() == []
    assert rig.decisions("missed_call")[-1][1:] == ("suppressed", "the customer opted out (STOP)")


async def test_opted_out_number_gets_no_automated_message_on_any_rule(rig: Rig) -> None:
    await rig.store.write(
        lambda c: c.execute("INSERT INTO suppressions (address, reason, created_at) VALUES (?, 'stop', 0)", (CUSTOMER,))
    )
    await rig.at(local(7, 22))
    await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "are you open tomorrow?")  # after-hours rule
    await rig.inbound(EventKind.CALL_MISSED)  # missed-call rule
    await rig.inbound(EventKind.VOICEMAIL)  # voicemail rule
    await rig.inbound(EventKind.HANDOFF, Channel.CHAT, "continue by text", handoff="sms", phone=CUSTOMER)
    await rig.at(local(8, 12))
    assert rig.texts() == []
    rules_seen = {d[0] for d in rig.decisions() if d[1] == "suppressed" and "opted out" in d[2]}
    assert rules_seen == {"after_hours", "missed_call", "voicemail_ack", "chat_sms"}


async def test_no_automated_message_within_the_grace_after_a_human_reply(rig: Rig) -> None:
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "hello")
    await rig.service.enqueue_outbound(conv, Channel.SMS, CUSTOMER, "Hi, how can we help?", automated=False)
    await rig.engine.tick()
    await rig.at(local(7, 10, 20))
    await rig.inbound(EventKind.CALL_MISSED)
    await rig.at(local(7, 10, 24))
    assert rig.texts() == []
    assert rig.decisions("missed_call")[-1][2].startswith("staff answered 24 min ago")


async def test_daily_cap_counts_every_rule(rig: Rig) -> None:
    await rig.restart(quiet_hours="")
    for hour in (19, 20, 21):  # evenings: after-hours replies, each in its own episode (an hour apart)
        await rig.at(local(7, hour))
        await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "question?")
    assert len(rig.texts()) == 3
    await rig.at(local(7, 22))
    await rig.inbound(EventKind.CALL_MISSED)
    await rig.at(local(7, 22, 5))
    assert len(rig.texts()) == 3
    last = rig.decisions()[-1]
    assert last[:2] == ("missed_call", "suppressed")
    assert last[2].startswith("daily cap reached: 3 automated messages")


async def test_one_automated_message_per_episode(rig: Rig) -> None:
    await rig.at(local(7, 19))
    await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "are you open?")  # deferred to 08:00 by quiet hours
    await rig.restart(quiet_hours="")
    await rig.at(local(7, 19, 10))
    await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "hello?")
    assert len(rig.texts()) == 1
    assert rig.decisions()[-1][2].startswith("episode cap reached")


async def test_after_hours_chat_at_lunch_names_the_reopening_time(rig: Rig) -> None:
    await rig.at(local(7, 12, 15))
    await rig.inbound(EventKind.MESSAGE_IN, Channel.CHAT, "Do you take new patients?", number="")
    chat = rig.rows("SELECT body FROM events WHERE kind = 'message_out' AND channel = 'chat'")
    assert len(chat) == 1
    assert "reopen at 13:30" in chat[0][0]


async def test_voicemail_acknowledgement_names_what_was_heard_or_stays_generic(rig: Rig) -> None:
    conv = await rig.inbound(EventKind.VOICEMAIL)
    await rig.service.append_event(
        conv, EventKind.TRANSCRIPT, Channel.VOICE, "the roof leak is back", {"confidence": 0.91, "keywords": []}
    )
    await rig.engine.tick()
    assert rig.texts() == [
        "We got your message about the roof leak is back. We will get back to you today. - Bright Smile Dental"
    ]
    await rig.at(local(7, 15))
    other = "+12025550177"
    conv2 = await rig.inbound(EventKind.VOICEMAIL, number=other)
    await rig.service.append_event(conv2, EventKind.TRANSCRIPT, Channel.VOICE, "mumble", {"confidence": 0.2})
    await rig.engine.tick()
    assert rig.texts()[-1].startswith("We got your voicemail and will get back to you")


async def test_voicemail_without_transcript_gets_the_generic_acknowledgement_after_the_wait(rig: Rig) -> None:
    await rig.inbound(EventKind.VOICEMAIL)
    await rig.at(local(7, 10, 4))
    assert rig.texts() == []
    await rig.at(local(7, 10, 5))
    assert len(rig.texts()) == 1
    assert "voicemail" in rig.texts()[0]


async def test_chat_continuation_quotes_the_question_and_asks_only_for_what_is_missing(rig: Rig) -> None:
    conv = await rig.inbound(
        EventKind.MESSAGE_IN, Channel.CHAT, "My son chipped a tooth - do you handle emergencies?", visitor="web-1"
    )
    await rig.service.update_conversation(conv, facts={"name": "Maria Rossi"}, intent="book", urgent=True)
    await rig.inbound(
        EventKind.HANDOFF, Channel.CHAT, "continue by text", visitor="web-1", handoff="sms", phone=CUSTOMER
    )
    (text,) = rig.texts()
    assert 'You asked: "My son chipped a tooth - do you handle emergencies?"' in text
    assert "a time that suits you" in text
    assert "your name" not in text, "never asks for a fact already captured"


async def test_stalled_thread_alerts_staff_never_the_customer(rig: Rig) -> None:
    await rig.restart(after_hours_enabled=False)
    rig.clock.set(time.time())
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Can someone call me about the leak?")
    since = rig.rows("SELECT awaiting_since FROM conversations WHERE id = ?", conv)[0][0]
    rig.clock.set(since + 3600)
    assert await rig.engine.check_stalled() == 0
    rig.clock.set(since + 3 * 24 * 3600)
    assert await rig.engine.check_stalled() == 1
    assert await rig.engine.check_stalled() == 0, "one alert per waiting period"
    assert rig.decisions("stalled_thread")[-1][1] == "sent"
    assert rig.rows("SELECT COUNT(*) FROM outbox WHERE automated = 1") == [(0,)]


async def test_stalled_thread_waiting_time_is_read_on_the_rules_clock_only(rig: Rig) -> None:
    """The rules' clock is days away from the wall clock here (as it is in every journey test): the business hours
    waited are counted from when the rules saw the customer's message, never from the timeline's wall-clock stamp."""
    await rig.restart(after_hours_enabled=False)
    assert abs(rig.clock.now() - time.time()) > 3600
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Is the crown ready?")  # Monday 10:00
    # 10:00-12:00 and 13:30-15:29 are 3 h 59 min of business hours: not yet.
    rig.clock.set(local(7, 15, 29))
    assert await rig.engine.check_stalled() == 0
    rig.clock.set(local(7, 15, 31))
    assert await rig.engine.check_stalled() == 1
    (alert,) = rig.decisions("stalled_thread")
    assert alert[2] == "the customer has waited 4.0 business hours for an answer"
    # A staff answer ends the wait; a new question starts a new one, again on the rules' clock.
    await rig.service.enqueue_outbound(conv, Channel.SMS, CUSTOMER, "Yes, come by at 4", automated=False)
    await rig.engine.tick()
    rig.clock.set(local(8, 9))
    await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Can I come tomorrow instead?")
    rig.clock.set(local(8, 12))
    assert await rig.engine.check_stalled() == 0, "3 business hours since Tuesday 09:00"
    rig.clock.set(local(8, 14, 31))
    assert await rig.engine.check_stalled() == 1


async def test_switched_off_rule_does_nothing(rig: Rig) -> None:
    await rig.restart(missed_call_enabled=False)
    await rig.inbound(EventKind.CALL_MISSED)
    await rig.at(local(7, 11))
    assert rig.texts() == []
    assert rig.decisions("missed_call") == []


async def test_call_recap_texts_what_was_agreed(rig: Rig) -> None:
    conv = await rig.inbound(EventKind.CALL_MISSED)
    await rig.service.update_conversation(conv, intent="estimate", next_step="Site visit to measure the roof")
    await rig.engine.recap(conv, author="anna")
    bodies = [r[0] for r in rig.rows("SELECT body FROM outbox ORDER BY id")]
    assert bodies[-1].startswith("Thanks for talking with us about your estimate. Next step: Site visit")
    assert ("call_recap", "sent", "anna sent the call recap") in rig.decisions()


async def test_rules_read_the_spine_facts_next_step_and_learned_preference(rig: Rig) -> None:
    spine = SpineService(rig.store, rig.bus)
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.CHAT, "Is the roof estimate free?", visitor="web-2")
    await spine.set_fact(conv, "name", "Dana Whitfield", source="chat", set_by="extractor")
    await spine.set_fact(conv, "availability", {"text": "Saturday morning"}, source="chat", set_by="extractor")
    await spine.set_intent(conv, "estimate", source="chat", set_by="extractor")
    await spine.set_next_step(conv, "Site visit", source="staff", set_by="anna", due=local(12, 9))
    await rig.inbound(
        EventKind.HANDOFF, Channel.CHAT, "continue by text", visitor="web-2", handoff="sms", phone=CUSTOMER
    )
    await rig.service.link_identity(conv, IdentityKind.PHONE, CUSTOMER)  # as the chat widget does on hand-off
    (text,) = rig.texts()
    assert "about your estimate" in text
    assert "Could you send us" not in text, "name and availability are known: nothing to ask"
    await rig.engine.recap(conv, author="anna")
    recap = rig.rows("SELECT body FROM outbox ORDER BY id DESC LIMIT 1")[0][0]
    assert "Next step: Site visit, on Saturday at 09:00" in recap
    await spine.set_channel_preference(conv, "voice", "texts failed", source="sms", set_by="extractor")
    await rig.at(local(8, 10))
    await rig.inbound(EventKind.CALL_MISSED)
    assert rig.decisions("missed_call")[-1][2] == "learned unreachable: texts failed"


async def test_call_me_rings_the_owner_first_retries_then_texts_the_customer(rig: Rig) -> None:
    dialled: list[tuple[str, str, int]] = []

    async def dialer(extension: str, number: str, conv: int) -> str:
        dialled.append((extension, number, conv))
        return f"c2c-{len(dialled)}"

    await rig.restart(call_me_extension="201", call_me_retries=1, call_me_retry_minutes=5)
    rig.engine.dialer = dialer
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Please call me at 11")
    # The customer's own words booked 11:00; staff booking the same slot does not make a second call.
    await rig.engine.schedule_call(conv, local(7, 11), author="anna")
    await rig.at(local(7, 10, 59))
    assert dialled == []
    await rig.at(local(7, 11))
    assert dialled == [("201", CUSTOMER, conv)]

    def ended(call_id: str, outcome: CallOutcome) -> CallEnded:
        record = CallRecord(call_id, CallDirection.OUTBOUND, "201", "", CUSTOMER, local(7, 11), outcome=outcome)
        return CallEnded(call_id, CUSTOMER, conv, outcome, record)

    async def unanswered(call_id: str) -> None:
        # What the voice channel puts on the timeline for a call-back whose owner phone rang out unanswered.
        for kind in (EventKind.CALL_RINGING, EventKind.CALL_ENDED):
            await rig.service.ingest(
                Inbound(
                    Channel.VOICE,
                    kind,
                    IdentityKind.PHONE,
                    CUSTOMER,
                    f"{call_id}-{kind.value}",
                    meta={"direction": "outbound", "call_id": call_id, "outcome": "missed"},
                )
            )
        rig.engine._call_results.append(ended(call_id, CallOutcome.MISSED))  # what the bus listener collects
        await rig.engine.tick()

    await unanswered("c2c-1")
    assert rig.decisions("call_me")[-1][1] == "deferred"
    await rig.at(local(7, 11, 5))
    assert len(dialled) == 2
    # The rules' own unanswered call is not "staff answered": the text below is not held back by that restraint.
    await unanswered("c2c-2")
    assert rig.texts() == [
        "We tried to call you back but could not reach you. Reply here with a better time. - Bright Smile Dental"
    ]
    steps = [d[1:] for d in rig.decisions("call_me")]
    assert steps[0] == ("deferred", "the customer booked a call-back at 11:00")
    assert not [st for st in steps if "anna booked" in st[1]]
    assert steps[1][0] == "sent"
    assert "ringing extension 201 first" in steps[1][1]


async def test_the_automated_sms_budget_suppression_is_recorded(rig: Rig) -> None:
    rig.service.settings = ServiceSettings(default_region="US", automated_sms_per_day=0)
    await rig.inbound(EventKind.CALL_MISSED)
    await rig.at(local(7, 10, 3))
    assert rig.texts() == []
    last = rig.decisions("missed_call")[-1]
    assert last[1] == "suppressed"
    assert "sms.automated_per_day" in last[2]


async def test_stalled_alert_is_published_for_staff(rig: Rig) -> None:
    await rig.restart(after_hours_enabled=False)
    sub = rig.bus.subscribe("t", types=(StalledThread,))
    rig.clock.set(time.time())
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "anyone there?")
    rig.clock.set(time.time() + 5 * 24 * 3600)
    assert await rig.engine.check_stalled() == 1
    alert = sub.get_nowait()
    assert isinstance(alert, StalledThread)
    assert alert.conversation_id == conv


async def test_a_chat_answer_is_not_a_text_and_leaves_the_episode_budget_for_the_continuation(rig: Rig) -> None:
    await rig.at(local(7, 12, 15))
    await rig.inbound(EventKind.MESSAGE_IN, Channel.CHAT, "Do you handle emergencies?", visitor="web-3")
    await rig.inbound(
        EventKind.HANDOFF, Channel.CHAT, "continue by text", visitor="web-3", handoff="sms", phone=CUSTOMER
    )
    assert [d[:2] for d in rig.decisions()] == [("after_hours", "sent"), ("chat_sms", "sent")]
    assert len(rig.texts()) == 1


async def test_the_continuation_waits_for_the_customer_to_confirm_the_number(rig: Rig) -> None:
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.CHAT, "Can you fix a leaking gutter?", visitor="web-4")
    await rig.inbound(
        EventKind.HANDOFF,
        Channel.CHAT,
        "continue by text",
        visitor="web-4",
        handoff="sms",
        phone=CUSTOMER,
        text_by="chat",
    )
    assert rig.texts() == []
    assert rig.decisions("chat_sms")[-1][1] == "deferred"
    await rig.service.link_identity(conv, IdentityKind.PHONE, CUSTOMER)
    await rig.service.append_event(conv, EventKind.CLAIM, Channel.SYSTEM, "verified", {"verified": True})
    await rig.engine.tick()
    (text,) = rig.texts()
    assert 'You asked: "Can you fix a leaking gutter?"' in text
    # A number nobody confirms never gets the chat's content.
    conv2 = await rig.inbound(EventKind.MESSAGE_IN, Channel.CHAT, "Quote for a roof?", visitor="web-5")
    await rig.inbound(
        EventKind.HANDOFF,
        Channel.CHAT,
        "continue by text",
        visitor="web-5",
        handoff="sms",
        phone="+12025550188",
        text_by="chat",
    )
    await rig.at(local(8, 11))
    assert len(rig.texts()) == 1
    assert rig.decisions("chat_sms")[-1][1:] == (
        "suppressed",
        "the customer never confirmed the number, so the chat was not continued by text",
    )
    assert conv2 != conv


async def test_health_says_how_many_sends_wait(rig: Rig) -> None:
    await rig.engine.start()  # the engine's own loop: nothing else may tick it now
    await rig.service.ingest(
        Inbound(Channel.VOICE, EventKind.CALL_MISSED, IdentityKind.PHONE, CUSTOMER, "h1", meta={"direction": "inbound"})
    )
    await wait_until(lambda: rig.engine.waiting == 1)
    health = rig.engine.health()
    assert health.state.value == "ok"
    assert health.cause == "1 scheduled send(s) waiting"
    rig.clock.set(local(7, 10, 3) + 3600)  # an hour past its moment, loop not yet run: late
    rig.engine.next_due = local(7, 10, 3)
    assert rig.engine.health().state.value == "degraded"


async def wait_until(predicate: Callable[[], bool]) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


async def test_the_customer_picks_the_call_back_time_in_their_own_words(rig: Rig) -> None:
    dialled: list[tuple[str, str, int]] = []

    async def dialer(extension: str, number: str, conversation_id: int) -> str:
        dialled.append((extension, number, conversation_id))
        return f"c2c-{len(dialled)}"

    await rig.restart(call_me_extension="201")
    rig.engine.dialer = dialer
    # Monday 09:00: "call me at 3pm" books 15:00 today, with no staff action at all.
    await rig.at(local(7, 9))
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Busy now. Can you call me at 3pm?")
    assert rig.decisions("call_me")[-1][1:] == ("deferred", "the customer booked a call-back at 15:00")
    await rig.at(local(7, 14, 59))
    assert dialled == []
    await rig.at(local(7, 15))
    assert dialled == [("201", CUSTOMER, conv)]
    # "call me tomorrow" without a time: the next business opening (Tuesday 08:00).
    await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Call me tomorrow please")
    assert rig.decisions("call_me")[-1][1:] == ("deferred", "the customer booked a call-back tomorrow at 08:00")


async def test_a_call_back_asked_for_when_the_office_is_closed_moves_to_the_first_time_it_can_call(rig: Rig) -> None:
    await rig.restart(call_me_extension="201")
    rig.engine.dialer = _never_dialled
    await rig.at(local(7, 9))
    await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Can you call me at 9pm?")
    assert rig.decisions("call_me")[-1][1:] == (
        "deferred",
        "the customer asked for a call-back at 21:00; the office is closed then, so it is booked tomorrow at 08:00",
    )
    assert rig.rows("SELECT due_at FROM continuity_jobs WHERE rule = 'call_me'") == [(local(8, 8),)]


async def _call_ended_on_timeline(rig: Rig, call_id: str, outcome: str, talk_seconds: float) -> None:
    """What the voice channel records when a click-to-call ends (also when it recovers after downtime)."""
    await rig.service.ingest(
        Inbound(
            Channel.VOICE,
            EventKind.CALL_ENDED,
            IdentityKind.PHONE,
            CUSTOMER,
            f"{call_id}:end",
            meta={"direction": "outbound", "call_id": call_id, "outcome": outcome, "talk_seconds": talk_seconds},
        )
    )


async def test_a_call_back_caught_by_a_restart_is_never_rung_twice(rig: Rig) -> None:
    dialled: list[str] = []

    async def dialer(extension: str, number: str, conversation_id: int) -> str:
        dialled.append(number)
        return f"c2c-{len(dialled)}"

    await rig.restart(call_me_extension="201", call_me_retries=0)
    rig.engine.dialer = dialer
    await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Please call me at 11")
    await rig.at(local(7, 11))
    assert dialled == [CUSTOMER]
    # The daemon stops during the call; the call ends while it is down and the voice channel records the end.
    await _call_ended_on_timeline(rig, "c2c-1", "answered", 42.0)
    await rig.restart()
    rig.engine.dialer = dialer
    await rig.at(local(7, 11, 1))
    assert dialled == [CUSTOMER], "never rung twice"
    assert rig.decisions("call_me")[-1][1:] == ("sent", "call-back connected")

    # Again, but the call is still up at the restart and ends (unanswered) afterwards: the outcome still decides.
    await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Sorry I missed it, call me at 2pm")
    await rig.at(local(7, 14))
    assert dialled == [CUSTOMER, CUSTOMER]
    await rig.restart()
    rig.engine.dialer = dialer
    await rig.at(local(7, 14, 1))
    assert len(dialled) == 2
    await _call_ended_on_timeline(rig, "c2c-2", "missed", 0.0)
    await rig.engine.tick()
    assert len(dialled) == 2
    assert rig.texts() == [
        "We tried to call you back but could not reach you. Reply here with a better time. - Bright Smile Dental"
    ]
    await rig.restart()
    await rig.at(local(7, 15))
    assert len(rig.texts()) == 1


async def _never_dialled(extension: str, number: str, conversation_id: int) -> str:
    raise AssertionError("not called in this test")


def _spine_row(rig: Rig, conv: int) -> tuple[Any, ...]:
    (row,) = rig.rows("SELECT next_step, next_step_due, next_step_owner FROM conversations WHERE id = ?", conv)
    return row


def _spine_entries(rig: Rig, conv: int) -> list[tuple[str, str | None]]:
    return rig.rows(
        "SELECT body, json_extract(meta, '$.set_by') FROM events WHERE kind = 'spine' AND conversation_id = ?"
        " ORDER BY id",
        conv,
    )


async def test_every_booked_call_back_is_the_next_step_and_a_connected_one_completes_it(rig: Rig) -> None:
    dialled: list[str] = []

    async def dialer(extension: str, number: str, conversation_id: int) -> str:
        dialled.append(extension)
        return f"c2c-{len(dialled)}"

    await rig.restart(call_me_extension="201", call_me_retries=0)
    rig.engine.dialer = dialer
    await rig.store.write(lambda c: upsert_staff(c, "anna", "Anna", "201", "staff", 0.0))
    await rig.store.write(lambda c: upsert_staff(c, "bob", "Bob", "202", "staff", 0.0))
    # (1) The customer's own words by SMS: the step is due at the booked time, owned by whoever's phone rings.
    await rig.at(local(7, 9))
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Busy now. Can you call me at 3pm?")
    assert _spine_row(rig, conv) == ("Call back", local(7, 15), "anna")
    body, set_by = _spine_entries(rig, conv)[-1]
    assert (
        body == "Next step: Call back, due Mon 2026-12-07 15:00 EST, Next step owner: anna - set by the gateway (sms)"
    )
    assert set_by == "system"
    # The call connects: the step is done, and the timeline says the gateway cleared it.
    await rig.at(local(7, 15))
    assert dialled == ["201"]
    await _call_ended_on_timeline(rig, "c2c-1", "answered", 75.0)
    await rig.engine.tick()
    assert _spine_row(rig, conv) == (None, None, None)
    assert _spine_entries(rig, conv)[-1][0] == (
        "Next step cleared, no due time, Next step owner cleared - set by the gateway (voice)"
    )

    # (2) Staff book through the API for a conversation bob owns: bob's phone rings, bob owns the step.
    await rig.service.update_conversation(conv, owner="bob")
    await rig.engine.schedule_call(conv, local(8, 10), author="anna")
    assert _spine_row(rig, conv) == ("Call back", local(8, 10), "bob")
    assert _spine_entries(rig, conv)[-1][1] == "anna"

    # (3) The chat's call-back picker (a visitor, no owner yet): the office's call-back extension's staff member.
    chat = await rig.inbound(EventKind.MESSAGE_IN, Channel.CHAT, "Can someone call me?", visitor="web-9")
    await rig.inbound(
        EventKind.HANDOFF, Channel.CHAT, "call me", visitor="web-9", handoff="call_me", phone=CUSTOMER, at=local(8, 11)
    )
    assert _spine_row(rig, chat) == ("Call back", local(8, 11), "anna")
    assert _spine_entries(rig, chat)[-1][0].endswith("set by the gateway (chat)")


async def test_a_call_back_nobody_reaches_leaves_the_next_step_overdue_on_the_leakage_page(rig: Rig) -> None:
    async def dialer(extension: str, number: str, conversation_id: int) -> str:
        return "c2c-x"

    await rig.restart(call_me_extension="201", call_me_retries=0)
    rig.engine.dialer = dialer
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Please call me at 11")
    await rig.at(local(7, 11))
    await _call_ended_on_timeline(rig, "c2c-x", "missed", 0.0)
    await rig.engine.tick()
    assert rig.texts() == [
        "We tried to call you back but could not reach you. Reply here with a better time. - Bright Smile Dental"
    ]
    assert _spine_row(rig, conv) == ("Call back", local(7, 11), None)  # 201 is nobody's extension here
    now = local(7, 12)
    leakage = LeakageService(rig.store, LeakageConfig(), HOURS, TZ, clock=lambda: now)
    day = dt.datetime.fromtimestamp(local(7, 11), ZoneInfo(TZ)).date()
    (item,) = await leakage.items("next_steps_past_due", leakage.day_window(day, day))
    assert item["conversation_id"] == conv
    # Staff then reach the customer themselves: the step is done.
    await rig.at(local(7, 12))
    await _staff_call(rig, "staff-9", 120.0)
    assert _spine_row(rig, conv) == (None, None, None)


async def test_with_no_phone_to_ring_the_request_waits_for_staff_and_the_customer_is_promised_nothing(
    rig: Rig,
) -> None:
    async def dialer(extension: str, number: str, conversation_id: int) -> str:
        raise AssertionError("nothing may be rung: no phone is named")

    rig.engine.dialer = dialer  # voice is on; continuity.call_me_extension is empty and nobody owns the conversation
    await rig.at(local(7, 9))
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Can you call me at 3pm?")
    assert _spine_row(rig, conv) == ("Call back", local(7, 15), None)
    decision, reason = rig.decisions("call_me")[-1][1:]
    assert decision == "deferred"
    assert "no phone is named to ring" in reason
    assert "staff call back (the next step)" in reason
    health = rig.engine.health()
    assert health.state.value == "degraded"
    assert health.cause == "1 booked call-back(s) have no phone to ring"
    await rig.at(local(7, 15))
    assert rig.decisions("call_me")[-1][1] == "suppressed"
    assert "nobody was rung and the customer was not texted" in rig.decisions("call_me")[-1][2]
    assert rig.texts() == []
    assert _spine_row(rig, conv) == ("Call back", local(7, 15), None)

    # Decided again at its moment: an owner with an extension set before then makes the call-back ring after all.
    dialled: list[str] = []

    async def ringing(extension: str, number: str, conversation_id: int) -> str:
        dialled.append(extension)
        return "c2c-owner"

    rig.engine.dialer = ringing
    await rig.store.write(lambda c: upsert_staff(c, "anna", "Anna", "201", "staff", 0.0))
    await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Nobody called. Can you call me at 4pm?")
    await rig.service.update_conversation(conv, owner="anna")
    await rig.engine.tick()
    assert rig.engine.health().state.value == "ok"
    await rig.at(local(7, 16))
    assert dialled == ["201"]


async def test_with_the_voice_channel_off_a_booked_call_back_waits_for_staff_too(rig: Rig) -> None:
    await rig.restart(call_me_extension="201")  # an extension is named, but nothing can ring it (no dialer)
    await rig.at(local(7, 9))
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Can you call me at 3pm?")
    assert rig.decisions("call_me")[-1][2] == (
        "the customer booked a call-back at 15:00; the voice channel is off, so nobody will be rung:"
        " staff call back (the next step)"
    )
    assert rig.engine.health().cause == "1 booked call-back(s) have no phone to ring"
    await rig.at(local(7, 15))
    assert rig.decisions("call_me")[-1][1:] == (
        "suppressed",
        "the voice channel is off: nobody was rung; the call-back is the next step for staff",
    )
    assert rig.texts() == []
    assert _spine_row(rig, conv) == ("Call back", local(7, 15), None)


async def _staff_call(rig: Rig, call_id: str, talk_seconds: float) -> None:
    """A call staff placed themselves to the customer, ended, as the voice channel records it."""
    await rig.service.ingest(
        Inbound(
            Channel.VOICE,
            EventKind.CALL_ENDED,
            IdentityKind.PHONE,
            CUSTOMER,
            f"{call_id}:end",
            meta={
                "direction": "outbound",
                "call_id": call_id,
                "outcome": "answered",
                "talk_seconds": talk_seconds,
                "staff": "anna",
            },
        )
    )
    await rig.engine.tick()


async def test_staff_calling_back_themselves_completes_the_call_back_step(rig: Rig) -> None:
    await rig.at(local(7, 9))
    conv = await rig.inbound(EventKind.MESSAGE_IN, Channel.SMS, "Can you call me at 3pm?")
    assert _spine_row(rig, conv) == ("Call back", local(7, 15), None)
    await rig.at(local(7, 10))
    await _staff_call(rig, "staff-1", 40.0)  # about something else, hours before the booked time: not the call-back
    assert _spine_row(rig, conv) == ("Call back", local(7, 15), None)
    await rig.at(local(7, 15))  # no phone named: nothing rings, the step waits for staff
    await rig.at(local(7, 15, 10))
    await _staff_call(rig, "staff-2", 0.0)  # never got through
    assert _spine_row(rig, conv) == ("Call back", local(7, 15), None)
    await _staff_call(rig, "staff-3", 95.0)
    assert _spine_row(rig, conv) == (None, None, None)
    assert _spine_entries(rig, conv)[-1] == (
        "Next step cleared, no due time - set by anna (voice)",
        "anna",
    )
