"""The conversation service over a real SQLite store."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from gateway.domain.bus import Bus
from gateway.domain.events import ALL_EVENTS, ContactsMerged, OutboxQueued, TimelineEventAdded
from gateway.domain.models import (
    Channel,
    EventKind,
    IdentityKind,
    Inbound,
)
from gateway.domain.optout import Keyword
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.errors import OptedOutError, ValidationError
from gateway.store import queries as q
from gateway.store.db import Store


def sms(number: str, ext: str, body: str = "hi", **kw: object) -> Inbound:
    return Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, number, ext, body, **kw)  # type: ignore[arg-type]


def chat(visitor: str, ext: str, body: str = "hello", name: str | None = None) -> Inbound:
    return Inbound(Channel.CHAT, EventKind.MESSAGE_IN, IdentityKind.CHAT, visitor, ext, body, display_name=name)


async def test_the_same_number_in_any_format_is_one_conversation(service: ConversationService) -> None:
    a = await service.ingest(sms("+1 (555) 123-4567", "m1"))
    b = await service.ingest(sms("555.123.4567", "m2"))
    c = await service.ingest(sms("001 555 123 4567", "m3"))
    assert a.conversation_id == b.conversation_id == c.conversation_id
    assert not (a.duplicate)
    assert not (b.duplicate)
    assert not (c.duplicate)
    contact = await service.find_contact(IdentityKind.PHONE, "(555) 123-4567")
    assert contact is not None
    assert contact.phone() == "+15551234567"


async def test_ingest_is_idempotent_per_external_id(service: ConversationService, bus: Bus) -> None:
    sub = bus.subscribe("t", types=ALL_EVENTS)
    first = await service.ingest(sms("+15551230000", "dup-1", "once"))
    again = await service.ingest(sms("+15551230000", "dup-1", "once"))
    assert again.duplicate
    assert again.event_id == first.event_id
    events = await service.timeline(first.conversation_id)
    assert [e.body for e in events] == ["once"]
    assert sub.pending() == 1, "a duplicate is not published again"


async def test_concurrent_duplicates_store_one_event(service: ConversationService) -> None:
    results = await asyncio.gather(*(service.ingest(sms("+15551230001", "same")) for _ in range(20)))
    assert len({r.event_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1


async def test_unparsable_numbers_are_kept_raw_and_flagged(service: ConversationService) -> None:
    r = await service.ingest(sms("555-1234", "local-1", "call me"))
    r2 = await service.ingest(sms("555 1234", "local-2", "again"))
    assert r.conversation_id == r2.conversation_id, "the same raw number still finds its conversation"
    contact = await service.contact(r.contact_id)
    assert contact is not None
    (ident,) = contact.identities
    assert ident.valid is False
    assert ident.raw == "555-1234"
    events = await service.timeline(r.conversation_id)
    assert events[0].meta["identity_flag"] == "unparsed"


async def test_region_decides_national_numbers(store: Store, bus: Bus) -> None:
    uk = ConversationService(store, bus, ServiceSettings(default_region="GB"))
    r = await uk.ingest(sms("020 7946 0958", "uk-1"))
    r2 = await uk.ingest(sms("0044 20 7946 0958", "uk-2"))
    assert r.contact_id == r2.contact_id
    contact = await uk.contact(r.contact_id)
    assert contact is not None
    assert contact.phone() == "+442079460958"


async def test_oversized_body_is_rejected_with_the_limit(service: ConversationService) -> None:
    with pytest.raises(ValidationError, match="limit is 10000"):
        await service.ingest(sms("+15551230002", "big", "x" * 10_001))
    assert await service.find_contact(IdentityKind.PHONE, "+15551230002") is None, "nothing half-stored"


async def test_chat_visitor_giving_a_known_number_merges_and_can_be_undone(
    service: ConversationService, bus: Bus
) -> None:
    sub = bus.subscribe("merges", types=(ContactsMerged,))
    phone = await service.ingest(sms("+15551239999", "s1", "my roof leaks"))
    await service.update_conversation(phone.conversation_id, intent="estimate")
    visitor = await service.ingest(chat("v-abc", "c1", "is anyone there?", name="Maria R"))
    assert visitor.conversation_id != phone.conversation_id

    conv, merge_id = await service.link_identity(visitor.conversation_id, IdentityKind.PHONE, "(555) 123-9999")
    assert conv == phone.conversation_id
    assert merge_id is not None
    kinds = [(e.channel, e.kind) for e in await service.timeline(conv)]
    assert ("sms", "message_in") in kinds
    assert ("chat", "message_in") in kinds
    assert ("system", "merge") in kinds
    # The chat visitor's next message lands in the merged conversation.
    later = await service.ingest(chat("v-abc", "c2", "still me"))
    assert later.conversation_id == conv
    # The old conversation id still leads to the live one.
    assert (await service.summary(visitor.conversation_id)).conversation_id == conv  # type: ignore[union-attr]
    summary = await service.summary(conv)
    assert summary is not None
    assert summary.display_name == "Maria R"
    assert summary.intent == "estimate"
    assert isinstance(sub.get_nowait(), ContactsMerged)

    undone = await service.unmerge(merge_id, author="alice")
    assert undone.undone
    phone_kinds = [e.body for e in await service.timeline(phone.conversation_id)]
    chat_kinds = [e.body for e in await service.timeline(visitor.conversation_id)]
    assert "my roof leaks" in phone_kinds
    assert "is anyone there?" not in phone_kinds
    assert "is anyone there?" in chat_kinds
    audit = await service.store.read(lambda c: [a["action"] for a in q.recent_audit(c)])
    assert "merge" in audit
    assert "unmerge" in audit


async def test_linking_a_new_number_just_adds_it(service: ConversationService) -> None:
    visitor = await service.ingest(chat("v-new", "c-new"))
    conv, merge_id = await service.link_identity(visitor.conversation_id, "phone", "+1 202 555 0143")
    assert conv == visitor.conversation_id
    assert merge_id is None
    found = await service.find_contact(IdentityKind.PHONE, "2025550143")
    assert found is not None
    assert found.id == visitor.contact_id


async def test_outbound_is_recorded_and_queued_and_answers_the_customer(service: ConversationService) -> None:
    r = await service.ingest(sms("+15551230003", "o1", "when can you come?"))
    inbox = await service.inbox()
    assert inbox[0].conversation_id == r.conversation_id
    assert inbox[0].awaiting_since is not None
    outbox_id = await service.enqueue_outbound(
        r.conversation_id, "sms", "+15551230003", "Tomorrow 9am 👍", automated=False, author="alice"
    )
    row = await service.store.read(
        lambda c: c.execute("SELECT state, parts, to_addr FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
    )
    assert tuple(row) == ("queued", 1, "+15551230003")
    events = await service.timeline(r.conversation_id)
    assert events[-1].kind == "message_out"
    assert events[-1].delivery == "queued"
    inbox = await service.inbox()
    assert inbox[0].awaiting_since is None


async def test_opted_out_numbers_get_no_automated_messages(service: ConversationService) -> None:
    r = await service.ingest(sms("+12025550104", "x1", "STOP"))
    await service.store.write(lambda c: q.suppress(c, "+12025550104", "STOP", 0))
    with pytest.raises(OptedOutError, match="opted out"):
        await service.enqueue_outbound(r.conversation_id, "sms", "+12025550104", "Reminder", automated=True)
    with pytest.raises(OptedOutError, match="explicit override"):
        await service.enqueue_outbound(r.conversation_id, "sms", "+12025550104", "Sorry", automated=False)
    assert await service.enqueue_outbound(
        r.conversation_id, "sms", "+12025550104", "Sorry", automated=False, override_optout=True, author="bob"
    )
    assert await service.is_suppressed("(202) 555-0104")


async def test_a_stop_is_recorded_and_answered_once_by_the_service(service: ConversationService, bus: Bus) -> None:
    sub = bus.subscribe("t", types=(TimelineEventAdded, OutboxQueued))
    r = await service.ingest(sms("+15551230005", "k1", "STOP"))
    await service.store.write(lambda c: q.suppress(c, "+15551230005", "STOP", 0))
    first = await service.answer_keyword(
        r.conversation_id, Keyword.STOP, "+15551230005", "You are unsubscribed.", source_id="k1", expires_in=60.0
    )
    again = await service.answer_keyword(
        r.conversation_id, Keyword.STOP, "+15551230005", "You are unsubscribed.", source_id="k1", expires_in=60.0
    )
    assert first is not None, "the confirmation of the STOP itself reaches the suppressed number"
    assert again is None, "a replay queues nothing twice"
    events = await service.timeline(r.conversation_id)
    assert [(e.kind, e.body) for e in events] == [
        ("message_in", "STOP"),
        ("opt_out", "Opted out of text messages (replied STOP)"),
        ("message_out", "You are unsubscribed."),
    ]
    assert events[-1].meta["automated"] is True
    assert events[-1].meta["rule"] == "keyword_reply"
    published = []
    while (item := sub.get_nowait()) is not None:
        published.append(item)
    assert [type(e) for e in published] == [TimelineEventAdded] * 3 + [OutboxQueued]
    assert published[-1] == OutboxQueued(first, r.conversation_id, "sms")


async def test_a_keyword_from_an_unanswerable_sender_is_recorded_without_an_answer(
    service: ConversationService,
) -> None:
    r = await service.ingest(sms("12", "k2", "START"))
    assert (
        await service.answer_keyword(
            r.conversation_id, Keyword.START, None, "Welcome back.", source_id="k2", expires_in=60.0
        )
        is None
    )
    assert [e.kind for e in await service.timeline(r.conversation_id)] == ["message_in", "opt_in"]


def test_no_sql_outside_the_store() -> None:
    root = Path(__file__).resolve().parents[2] / "gateway"
    sql = re.compile(r"\.execute(many)?\(|\"(SELECT|INSERT|UPDATE|DELETE|PRAGMA) ")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted(root.rglob("*.py"))
        if path.parent.name != "store"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if sql.search(line)
    ]
    assert offenders == []


async def test_inbox_puts_the_longest_waiting_customer_first(service: ConversationService) -> None:
    a = await service.ingest(sms("+15551230010", "w1", "first", occurred_at=1000.0))
    b = await service.ingest(sms("+15551230011", "w2", "second", occurred_at=2000.0))
    c = await service.ingest(sms("+15551230012", "w3", "third", occurred_at=500.0))
    order = [row.conversation_id for row in await service.inbox()]
    assert order[:3] == [c.conversation_id, a.conversation_id, b.conversation_id]


async def test_search_finds_messages_and_survives_odd_queries(service: ConversationService) -> None:
    await service.ingest(sms("+15551230020", "f1", "The roof estimate for Tuesday"))
    await service.ingest(sms("+15551230021", "f2", "예약 하고 싶어요"))
    hits = await service.search("roof estim")
    assert [h.event.body for h in hits] == ["The roof estimate for Tuesday"]
    assert [h.event.body for h in await service.search("예약")] == ["예약 하고 싶어요"]
    for odd in ['"', "AND OR NOT", "*", "roof)", "NEAR(", ""]:
        await service.search(odd)  # never raises on what a person types


async def test_published_events_carry_the_stored_event(service: ConversationService, bus: Bus) -> None:
    sub = bus.subscribe("t", types=(TimelineEventAdded,))
    r = await service.ingest(chat("v-pub", "p1", "ping"))
    event = sub.get_nowait()
    assert isinstance(event, TimelineEventAdded)
    assert event.event.id == r.event_id
    assert event.event.body == "ping"


async def test_summary_knows_the_last_staff_extension(service: ConversationService) -> None:
    r = await service.ingest(sms("+15551230030", "e1"))
    assert (await service.summary(r.conversation_id)).last_staff_extension is None  # type: ignore[union-attr]
    await service.append_event(r.conversation_id, EventKind.CALL_ANSWERED, Channel.VOICE, meta={"extension": "202"})
    summary = await service.summary(r.conversation_id)
    assert summary is not None
    assert summary.last_staff_extension == "202"


def test_the_conversation_port_is_defined_once() -> None:
    """Adapters take gateway.domain.ports.ConversationPort; no module declares its own copy of the service's calls."""
    root = Path(__file__).resolve().parents[2] / "gateway"
    copies = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "ports.py":
            continue
        for block in re.split(r"\nclass ", path.read_text())[1:]:
            head, _, rest = block.partition("\n")
            if "(Protocol)" in head and re.search(r"def (ingest|append_event)\(", rest.split("\nclass ")[0]):
                copies.append(f"{path.relative_to(root.parent)}: class {head}")
    assert copies == [], "use gateway.domain.ports.ConversationPort instead of: " + ", ".join(copies)


async def test_a_burst_of_ingests_lands_each_item_where_it_belongs(
    service: ConversationService, store: Store, bus: Bus
) -> None:
    numbers = [f"+1555200{n:04d}" for n in range(40)]
    known = [await service.ingest(sms(numbers[n], f"old-{n}", f"earlier {n}")) for n in range(5)]
    sub = bus.subscribe("burst", maxsize=10_000, types=(TimelineEventAdded,))
    items = [
        sms(numbers[i % 40], f"b{i}", f"burst {i} marker{i}", display_name=f"Name {i % 40}" if i % 7 == 0 else None)
        for i in range(400)
    ]
    items.insert(50, sms(numbers[2], "old-2", "earlier 2"))  # a replay of a stored item
    items.insert(120, sms(numbers[7], "b7", "burst 7 marker7"))  # the same item twice within the burst
    batches_before = store.stats.batches
    results = await asyncio.gather(*(service.ingest(it) for it in items))
    assert store.stats.batches - batches_before < 40, "the burst went in few group commits"

    replay, twice = results[50], results[120]
    assert replay.duplicate
    assert replay.event_id == known[2].event_id
    assert twice.duplicate
    first_b7 = next(r for it, r in zip(items, results, strict=True) if it.external_id == "b7" and r is not twice)
    assert not first_b7.duplicate
    assert twice.event_id == first_b7.event_id

    stored = await store.read(
        lambda c: {r[0]: r[1:] for r in c.execute("SELECT id, conversation_id, external_id, body FROM events")}
    )
    conv_of: dict[str, int] = {}
    for it, r in zip(items, results, strict=True):
        conv, ext, body = stored[r.event_id]
        assert (ext, body) == (it.external_id, it.body), "each caller got its own event's id"
        assert conv == r.conversation_id
        conv_of.setdefault(it.identity_value, conv)
        assert conv_of[it.identity_value] == conv, "one conversation per number"
    assert len(set(conv_of.values())) == 40
    assert all(conv_of[numbers[n]] == known[n].conversation_id for n in range(5))
    assert len(stored) == 5 + 400

    published = []
    while (event := sub.get_nowait()) is not None:
        assert isinstance(event, TimelineEventAdded)
        published.append(event.event.id)
    assert sorted(published) == sorted(r.event_id for r in results if not r.duplicate)

    hits = await service.search("marker123")
    assert [h.event.external_id for h in hits] == ["b123"], "the full-text index has every row"
    summary = await service.summary(conv_of[numbers[13]])
    assert summary is not None
    assert summary.awaiting_since is not None, "the waiting state followed the rows"
    named = await service.summary(conv_of[numbers[14]])
    assert named is not None
    assert named.display_name == "Name 14", "a name learnt in the burst is kept"
