"""The spine learner on a real store and bus: messages and transcripts become spine entries, set by the extractor."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from gateway.domain.bus import Bus
from gateway.domain.events import SmsOutboundState
from gateway.domain.extract import SpineReader
from gateway.domain.intent import IntentConfig, IntentRules
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.domain.spine import EXTRACTOR, SPINE_EVENT_KIND, SpineConfig, SpineService
from gateway.domain.spine_learner import USE_SOURCE, SpineLearner
from gateway.store.db import Store

NOW = dt.datetime(2025, 12, 2, 19, 0, tzinfo=dt.UTC).timestamp()  # 14:00 in New York


@pytest.fixture
async def learner(store: Store, bus: Bus) -> AsyncIterator[SpineLearner]:
    cfg = SpineConfig(topic_keywords=["chipped tooth", "roof leak"])
    spines = SpineService(store, bus, cfg, clock=lambda: NOW)
    reader = SpineReader(
        IntentRules.from_config(IntentConfig()),
        cfg.intents,
        region="US",
        timezone="America/New_York",
        fact_patterns=cfg.fact_patterns,
        topic_keywords=cfg.topic_keywords,
    )
    lrn = SpineLearner(spines, reader, bus)
    await lrn.start()
    try:
        yield lrn
    finally:
        await lrn.stop()


async def until(cond: object, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not await cond():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def inbound(channel: Channel, who: str, ext: str, body: str, kind: IdentityKind = IdentityKind.PHONE) -> Inbound:
    return Inbound(channel, EventKind.MESSAGE_IN, kind, who, ext, body, occurred_at=NOW)


async def test_chat_then_sms_fill_the_spine(service: ConversationService, learner: SpineLearner) -> None:
    chat = await service.ingest(
        inbound(
            Channel.CHAT, "visitor-1", "c1", "My son chipped a tooth - do you handle emergencies?", IdentityKind.CHAT
        )
    )
    conv = chat.conversation_id
    await until(lambda: _learned(learner, 1))
    spine = await learner.spines.spine(conv)
    assert (spine.intent, spine.urgent) == ("problem", True)
    assert spine.facts["topic"].value == "chipped tooth"
    assert spine.facts["topic"].source == "chat"
    assert spine.facts["topic"].set_by == EXTRACTOR
    assert spine.provenance["intent"].source == "chat"

    live, _ = await service.link_identity(conv, IdentityKind.PHONE, "+14155552671")
    sms = await service.ingest(inbound(Channel.SMS, "+14155552671", "s1", "Saturday morning works, text me"))
    assert sms.conversation_id == live
    await until(lambda: _learned(learner, 2))
    spine = await learner.spines.spine(live)
    assert spine.facts["availability"].value == {"text": "Saturday morning", "start": "2025-12-06T09:00-05:00"}
    assert spine.facts["availability"].event_id == sms.event_id
    assert (spine.channel_preference, spine.preference_why) == ("sms", "said 'text me'")
    entries = [e for e in await service.timeline(live) if e.kind == SPINE_EVENT_KIND]
    assert any(e.body.startswith("Availability: Saturday morning - set by the extractor (from sms)") for e in entries)
    assert all(e.author is None for e in entries)


async def test_the_last_used_channel_never_replaces_what_the_customer_said(
    service: ConversationService, learner: SpineLearner
) -> None:
    # Everything goes through the bus, one event at a time, as in the daemon (the learner's own subscriber is
    # running: calling learn() beside it would apply each event twice, concurrently).
    first = await service.ingest(inbound(Channel.SMS, "+14155552672", "s1", "hello"))
    conv = first.conversation_id
    await until(lambda: _learned(learner, 1), timeout=30)
    spine = await learner.spines.spine(conv)
    assert (spine.channel_preference, spine.preference_why) == ("sms", "last wrote by text")
    assert spine.provenance["preferred_channel"].source == USE_SOURCE
    await service.append_event(conv, EventKind.CALL_MISSED, Channel.VOICE, "", {"direction": "inbound"})
    await until(lambda: _learned(learner, 2), timeout=30)
    assert (await learner.spines.spine(conv)).channel_preference == "voice"
    await service.ingest(inbound(Channel.SMS, "+14155552672", "s2", "please text me, I can't talk"))
    await until(lambda: _learned(learner, 3), timeout=30)
    await service.append_event(conv, EventKind.CALL_MISSED, Channel.VOICE, "", {"direction": "inbound"})
    await until(lambda: _learned(learner, 4), timeout=30)
    spine = await learner.spines.spine(conv)
    assert (spine.channel_preference, spine.preference_why) == ("sms", "said 'text me'")


async def test_a_failed_delivery_means_cannot_receive_texts(
    service: ConversationService, learner: SpineLearner, bus: Bus
) -> None:
    res = await service.ingest(inbound(Channel.SMS, "+14155552673", "s1", "text me please"))
    outbox_id = await service.enqueue_outbound(res.conversation_id, Channel.SMS, "+14155552673", "Hi!", automated=False)
    bus.publish(SmsOutboundState(outbox_id, None, "sent", None))
    bus.publish(SmsOutboundState(outbox_id, None, "failed", "network: unknown subscriber"))

    async def switched() -> bool:
        return (await learner.spines.spine(res.conversation_id)).channel_preference == "voice"

    await until(switched)
    spine = await learner.spines.spine(res.conversation_id)
    assert spine.preference_why == "cannot receive texts (delivery failed: network: unknown subscriber)"


async def test_a_transcript_sets_intent_from_its_keyword_decision(
    service: ConversationService, learner: SpineLearner
) -> None:
    vm = await service.ingest(
        Inbound(Channel.VOICE, EventKind.VOICEMAIL, IdentityKind.PHONE, "+14155552674", "vm1", "", occurred_at=NOW)
    )
    tid = await service.append_event(
        vm.conversation_id,
        EventKind.TRANSCRIPT,
        Channel.VOICE,
        "예약 내일",
        {"intent": "book", "urgent": False, "confidence": 0.9},
        author="transcriber",
    )
    await learner.learn(next(e for e in await service.timeline(vm.conversation_id) if e.id == tid))
    spine = await learner.spines.spine(vm.conversation_id)
    assert spine.intent == "book"
    assert spine.provenance["intent"].source == "voicemail"


async def _learned(learner: SpineLearner, n: int) -> bool:
    return learner.learned >= n


async def test_a_number_typed_in_a_message_is_a_fact_never_an_identity(
    service: ConversationService, learner: SpineLearner
) -> None:
    known = await service.ingest(inbound(Channel.SMS, "+14155552675", "s1", "I am an existing customer"))
    chat = await service.ingest(
        inbound(Channel.CHAT, "visitor-9", "c9", "call me at (415) 555-2675 please", IdentityKind.CHAT)
    )
    await learner.learn(next(e for e in await service.timeline(chat.conversation_id) if e.id == chat.event_id))
    spine = await learner.spines.spine(chat.conversation_id)
    assert spine.facts["callback_number"].value == "+14155552675"
    assert chat.conversation_id != known.conversation_id
    assert spine.phone is None, "a typed number is a claim: it never joins or reveals the customer who owns it"
    contact = await service.find_contact(IdentityKind.PHONE, "+14155552675")
    assert contact is not None
    assert contact.conversation_id == known.conversation_id


async def test_reading_happens_off_the_event_loop(service: ConversationService, learner: SpineLearner) -> None:
    import threading  # noqa: PLC0415

    loop_thread = threading.get_ident()
    threads: list[int] = []
    real_read = learner.reader.read

    def spy(text: str, now: float) -> object:
        threads.append(threading.get_ident())
        return real_read(text, now)

    learner.reader.read = spy  # type: ignore[method-assign,assignment]
    res = await service.ingest(inbound(Channel.SMS, "+14155552676", "s1", "tomorrow at 10am please"))
    await learner.learn(next(e for e in await service.timeline(res.conversation_id) if e.id == res.event_id))
    assert threads
    assert loop_thread not in threads


async def test_a_rule_can_wait_until_the_newest_message_is_read(
    service: ConversationService, learner: SpineLearner
) -> None:
    """The continuation that follows a customer's answer composes from it: it waits until the answer is read."""
    res = await service.ingest(inbound(Channel.SMS, "+14155552671", "s9", "Hi, this is Maria Rossi, text me"))
    assert await learner.read_up_to_date(res.conversation_id, limit_s=10)
    spine = await learner.spines.spine(res.conversation_id)
    assert spine.facts["name"].value == "Maria Rossi"
    # Nothing new: it answers at once; a conversation the learner will never hear of gives up after the limit.
    assert await learner.read_up_to_date(res.conversation_id, limit_s=0.01)
    learner.seen_upto = 0
    assert not await learner.read_up_to_date(res.conversation_id, limit_s=0.05)
