"""The conversation spine over a real SQLite store, with a fixed clock."""

from __future__ import annotations

import pytest

from gateway.domain.bus import Bus
from gateway.domain.events import ConversationUpdated, TimelineEventAdded
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.domain.spine import (
    EXTRACTOR,
    SPINE_EVENT_KIND,
    Fact,
    LastContact,
    SpineConfig,
    SpineService,
    summary_line,
)
from gateway.errors import ValidationError
from gateway.store.db import Store

T0 = 1_764_600_000.0  # 2025-12-01 14:40 UTC


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spines(store: Store, bus: Bus, clock: Clock) -> SpineService:
    return SpineService(store, bus, SpineConfig(), clock=clock)


async def sms_in(service: ConversationService, number: str, ext: str, body: str, at: float) -> int:
    res = await service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, number, ext, body, occurred_at=at)
    )
    return res.conversation_id


async def spine_entries(service: ConversationService, conv: int) -> list[tuple[str, dict[str, object], str | None]]:
    return [(e.body, dict(e.meta), e.author) for e in await service.timeline(conv) if e.kind == SPINE_EVENT_KIND]


async def test_a_new_conversation_has_an_empty_spine(service: ConversationService, spines: SpineService) -> None:
    conv = await sms_in(service, "+15551230001", "m1", "hello", T0 - 600)
    spine = await spines.spine(conv)
    assert spine.intent is None
    assert not spine.urgent
    assert dict(spine.facts) == {}
    assert spine.next_step is None
    assert spine.phone == "+15551230001"
    assert spine.last_contact == LastContact("message_in", "sms", T0 - 600)
    assert spine.summary == "+15551230001 - texted 10 min ago"


async def test_every_change_is_one_timeline_entry_saying_who_set_it(
    service: ConversationService, spines: SpineService, bus: Bus
) -> None:
    conv = await sms_in(service, "+15551230002", "m1", "hi", T0)
    sub = bus.subscribe("t", types=(TimelineEventAdded, ConversationUpdated))
    assert await spines.set_intent(conv, "estimate", source="sms", set_by=EXTRACTOR)
    assert await spines.set_fact(conv, "roof_type", "metal", source="staff", set_by="anna")
    assert await spines.set_next_step(conv, "Send estimate", source="staff", set_by="anna", due=T0 + 3600, owner="bob")
    assert await spines.set_owner(conv, "bob", source="staff", set_by="anna")
    assert await spines.set_channel_preference(conv, "sms", "said 'text me'", source="sms", set_by=EXTRACTOR)
    # Setting the same values again changes nothing and writes nothing.
    assert not await spines.set_intent(conv, "estimate", source="staff", set_by="anna")
    assert not await spines.set_fact(conv, "roof_type", "metal", source="staff", set_by="anna")
    assert not await spines.set_owner(conv, "bob", source="staff", set_by="anna")

    entries = await spine_entries(service, conv)
    assert len(entries) == 5
    assert entries[0][0] == "Intent: estimate - set by the extractor (from sms)"
    assert entries[0][1]["set_by"] == EXTRACTOR
    assert entries[0][2] is None, "automatic changes have no staff author"
    assert entries[1][0] == "Roof type: metal - set by anna"
    assert entries[1][2] == "anna"
    assert "Next step: Send estimate" in entries[2][0]
    assert "due Mon 2025-12-01 15:40 UTC" in entries[2][0]
    assert "Next step owner: bob" in entries[2][0]
    assert entries[3][1]["previous"] == {"owner": None}
    assert entries[4][1]["value"] == {"preferred_channel": "sms", "preference_why": "said 'text me'"}
    published = [sub.get_nowait() for _ in range(sub.pending())]
    assert sum(isinstance(e, TimelineEventAdded) for e in published) == 5
    assert sum(isinstance(e, ConversationUpdated) for e in published) == 5

    spine = await spines.spine(conv)
    assert spine.intent == "estimate"
    assert spine.facts["roof_type"] == Fact("roof_type", "metal", "staff", "anna", T0, 1.0, None)
    assert (spine.next_step, spine.next_step_due, spine.next_step_owner) == ("Send estimate", T0 + 3600, "bob")
    assert spine.owner == "bob"
    assert (spine.channel_preference, spine.preference_why) == ("sms", "said 'text me'")
    assert spine.provenance["intent"].set_by == EXTRACTOR
    assert spine.provenance["owner"].set_by == "anna"
    # The older summary (screen-pop, inbox) sees the same values.
    summary = await service.summary(conv)
    assert summary is not None
    assert (summary.intent, summary.owner, summary.preferred_channel) == ("estimate", "bob", "sms")
    assert summary.facts == {"roof_type": "metal"}


async def test_staff_corrections_win_over_the_extractor(
    service: ConversationService, spines: SpineService, clock: Clock
) -> None:
    conv = await sms_in(service, "+15551230003", "m1", "hi", T0)
    assert await spines.set_fact(conv, "availability", {"text": "Saturday"}, source="sms", set_by=EXTRACTOR)
    clock.now += 60
    assert await spines.set_fact(conv, "availability", {"text": "Friday 3pm"}, source="staff", set_by="anna")
    clock.now += 60
    assert not await spines.set_fact(conv, "availability", {"text": "Sunday"}, source="sms", set_by=EXTRACTOR)
    spine = await spines.spine(conv)
    assert spine.facts["availability"].text() == "Friday 3pm"
    assert spine.facts["availability"].set_by == "anna"
    entries = await spine_entries(service, conv)
    assert entries[-1][0] == "Availability: Friday 3pm (was Saturday) - set by anna"
    assert await spines.clear_fact(conv, "availability", set_by="anna")
    assert not await spines.clear_fact(conv, "availability", set_by="anna")
    assert "availability" not in (await spines.spine(conv)).facts
    assert (await spine_entries(service, conv))[-1][0] == "Availability removed (was Friday 3pm) - by anna"


async def test_bad_values_are_refused_with_the_fix(service: ConversationService, spines: SpineService) -> None:
    conv = await sms_in(service, "+15551230004", "m1", "hi", T0)
    with pytest.raises(ValidationError, match="not in the vocabulary"):
        await spines.set_intent(conv, "party", source="staff", set_by="anna")
    with pytest.raises(ValidationError, match="lower-case letters"):
        await spines.set_fact(conv, "Roof Type", "metal", source="staff", set_by="anna")
    with pytest.raises(ValidationError, match="needs a value"):
        await spines.set_fact(conv, "roof_type", "  ", source="staff", set_by="anna")
    with pytest.raises(ValidationError, match="not one of"):
        await spines.set_channel_preference(conv, "fax", "", source="staff", set_by="anna")
    with pytest.raises(LookupError):
        await spines.spine(99999)


async def test_missing_facts_lists_only_what_is_not_captured(
    service: ConversationService, spines: SpineService
) -> None:
    conv = await sms_in(service, "+15551230005", "m1", "hi", T0)
    await spines.set_fact(conv, "name", "Maria Rodriguez", source="chat", set_by=EXTRACTOR)
    await spines.set_fact(conv, "insurance", "Delta", source="chat", set_by=EXTRACTOR)
    missing = await spines.missing_facts(conv, ["name", "availability", "insurance", "address", "availability"])
    assert missing == ["availability", "address"]


async def test_facts_of_merged_conversations_are_read_together_and_split_again(
    service: ConversationService, spines: SpineService, clock: Clock
) -> None:
    a = await sms_in(service, "+15551230006", "m1", "hi", T0)
    b = (
        await service.ingest(
            Inbound(Channel.CHAT, EventKind.MESSAGE_IN, IdentityKind.CHAT, "visitor-6", "c1", "hello", occurred_at=T0)
        )
    ).conversation_id
    await spines.set_fact(a, "name", "Maria Rodriguez", source="sms", set_by=EXTRACTOR)
    clock.now += 10
    await spines.set_fact(b, "availability", {"text": "Saturday morning"}, source="chat", set_by=EXTRACTOR)
    live, merge_id = await service.link_identity(b, IdentityKind.PHONE, "+15551230006")
    assert merge_id is not None
    merged = await spines.spine(b)  # the old id follows the merge
    assert merged.conversation_id == live
    assert set(merged.facts) == {"name", "availability"}
    await service.unmerge(merge_id, author="anna")
    assert set((await spines.spine(a)).facts) == {"name"}
    assert set((await spines.spine(b)).facts) == {"availability"}


async def test_contacts_within_the_window_form_one_episode(
    service: ConversationService, spines: SpineService, clock: Clock
) -> None:
    number = "+15551230007"
    calls = [T0 + i * 60 for i in range(3)]
    for i, at in enumerate(calls):
        await service.ingest(
            Inbound(Channel.VOICE, EventKind.CALL_MISSED, IdentityKind.PHONE, number, f"call-{i}", occurred_at=at)
        )
    conv = await sms_in(service, number, "m-1", "are you there?", T0 + 20 * 60)
    # An automated text inside the episode is counted for the rules' budget.
    clock.now = T0 + 21 * 60
    await service.append_event(
        conv, EventKind.MESSAGE_OUT, Channel.SMS, "Sorry we missed you", meta={"automated": True}, occurred_at=clock.now
    )
    episode = await spines.episode_of(conv, T0 + 22 * 60)
    assert episode is not None
    assert [c.kind for c in episode.contacts] == ["call_missed", "call_missed", "call_missed", "message_in"]
    assert episode.channels == ("voice", "sms")
    assert episode.started_at == T0
    assert episode.automated_sent == 1
    # 49 minutes after the first call but only 29 after the text: still the same episode.
    same = await spines.episode_of(conv, T0 + 49 * 60)
    assert same is not None
    assert same.key == episode.key
    # 31 minutes after the last contact nothing is open: a new contact would start a new episode.
    assert await spines.episode_of(conv, T0 + 51 * 60) is None
    await sms_in(service, number, "m-2", "hello again", T0 + 90 * 60)
    later = await spines.episode_of(conv, T0 + 90 * 60)
    assert later is not None
    assert later.key != episode.key
    assert [c.kind for c in later.contacts] == ["message_in"]
    assert later.automated_sent == 0
    clock.now = T0 + 90 * 60
    assert (await spines.spine(conv)).episode == later, "the spine carries the episode open now"


async def test_outbound_calls_are_not_customer_contacts(service: ConversationService, spines: SpineService) -> None:
    conv = await sms_in(service, "+15551230008", "m1", "hi", T0 - 3600)
    await service.append_event(
        conv, EventKind.CALL_ANSWERED, Channel.VOICE, "answered", meta={"direction": "outbound"}, occurred_at=T0
    )
    assert await spines.episode_of(conv, T0) is None
    spine = await spines.spine(conv)
    assert spine.last_contact == LastContact("message_in", "sms", T0 - 3600)


async def test_the_episode_window_is_configurable(store: Store, bus: Bus, service: ConversationService) -> None:
    spines = SpineService(store, bus, SpineConfig(episode_window_minutes=5), clock=Clock())
    conv = await sms_in(service, "+15551230009", "m1", "one", T0)
    await sms_in(service, "+15551230009", "m2", "two", T0 + 6 * 60)
    episode = await spines.episode_of(conv, T0 + 6 * 60)
    assert episode is not None
    assert len(episode.contacts) == 1


def test_summary_line_reads_like_the_screen_pop() -> None:
    facts = {"topic": Fact("topic", "chipped tooth", "chat", EXTRACTOR, T0)}
    line = summary_line(
        display_name="Maria Rodriguez",
        phone="+15551230000",
        intent="book",
        urgent=True,
        facts=facts,
        next_step=None,
        last_contact=LastContact("message_in", "sms", T0 - 600),
        now=T0,
    )
    assert line == "Maria R - chipped tooth, urgent - texted 10 min ago"
    bare = summary_line(
        display_name=None,
        phone=None,
        intent="estimate",
        urgent=False,
        facts={},
        next_step=None,
        last_contact=LastContact("call_missed", "voice", T0 - 7200),
        now=T0,
    )
    assert bare == "estimate - missed call 2 h ago"


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        SpineConfig(intents=["Book"]).validate()
    with pytest.raises(ValueError, match=r"fact_patterns\.roof_type"):
        SpineConfig(fact_patterns={"roof_type": ["(unclosed"]}).validate()
    SpineConfig().validate()


async def test_the_extractor_never_overwrites_spine_fields_staff_set(
    service: ConversationService, spines: SpineService
) -> None:
    conv = await sms_in(service, "+15551230010", "m1", "hi", T0)
    assert await spines.set_intent(conv, "estimate", source="sms", set_by=EXTRACTOR)
    assert await spines.set_intent(conv, "book", source="sms", set_by=EXTRACTOR), "the extractor may revise itself"
    assert await spines.set_intent(conv, "reschedule", source="staff", set_by="anna")
    assert not await spines.set_intent(conv, "cancel", source="sms", set_by=EXTRACTOR)
    assert await spines.set_channel_preference(conv, "voice", "picked by staff", source="staff", set_by="anna")
    assert not await spines.set_channel_preference(conv, "sms", "said 'text me'", source="sms", set_by=EXTRACTOR)
    spine = await spines.spine(conv)
    assert (spine.intent, spine.channel_preference, spine.preference_why) == ("reschedule", "voice", "picked by staff")


async def test_older_callers_of_update_conversation_land_on_the_timeline_too(
    service: ConversationService, spines: SpineService, bus: Bus
) -> None:
    conv = await sms_in(service, "+15551230011", "m1", "hi", T0)
    sub = bus.subscribe("t", types=(TimelineEventAdded,))
    await service.update_conversation(conv, preferred_channel="sms", next_step="Call back")
    await service.update_conversation(conv, owner="bob", author="anna")
    await service.update_conversation(conv, status="waiting")  # not a spine field: no spine entry
    entries = await spine_entries(service, conv)
    assert [e[0] for e in entries] == [
        "Next step: Call back, Preferred channel: sms - set by the gateway",
        "Owner: bob - set by anna",
    ]
    assert [e[2] for e in entries] == [None, "anna"]
    assert sub.pending() == 2
    spine = await spines.spine(conv)
    assert spine.provenance["preferred_channel"].set_by == "system"
    # What the gateway set on the customer's behalf is not overwritten by automatic reading either.
    assert not await spines.set_channel_preference(conv, "voice", "last called", source="last_used", set_by=EXTRACTOR)


async def test_due_times_are_written_in_the_business_time_zone(
    store: Store, bus: Bus, service: ConversationService
) -> None:
    spines = SpineService(store, bus, clock=Clock(), timezone="America/New_York")
    conv = await sms_in(service, "+15551230012", "m1", "hi", T0)
    await spines.set_next_step(conv, "Site visit", source="staff", set_by="anna", due=T0 + 3600 + 59)
    (entry,) = await spine_entries(service, conv)
    assert "due Mon 2025-12-01 10:40 EST" in entry[0]
    assert (await spines.spine(conv)).next_step_due == T0 + 3600, "due times are kept to the minute"
