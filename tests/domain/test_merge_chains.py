"""Merges are recorded and undoable in any order, also along chains; replies go to the kept contact's own number."""

from __future__ import annotations

import itertools

import pytest

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.errors import NoRouteError
from gateway.store.db import Store

NUMBERS = {"A": "+12025550101", "B": "+12025550102", "C": "+12025550103"}


def sms(number: str, ext: str, body: str) -> Inbound:
    return Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, number, ext, body)


async def bodies(service: ConversationService, conversation_id: int) -> set[str]:
    return {e.body for e in await service.timeline(conversation_id, limit=500) if e.kind == "message_in"}


async def three_contacts(service: ConversationService) -> dict[str, tuple[int, int]]:
    """A, B and C with two texts each: name -> (contact id, conversation id)."""
    out = {}
    for name, number in NUMBERS.items():
        first = await service.ingest(sms(number, f"{name}-1", f"{name} first"))
        await service.ingest(sms(number, f"{name}-2", f"{name} second"))
        out[name] = (first.contact_id, first.conversation_id)
    return out


# Shapes of two merges among three contacts: (kept, merged) in the order they are made.
SHAPES = {
    "chain A into B, B into C": [("B", "A"), ("C", "B")],
    "chain B into C, then C into A": [("C", "B"), ("A", "C")],
    "star A into C, B into C": [("C", "A"), ("C", "B")],
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
async def test_three_contacts_any_undo_order_restores_every_event(
    service: ConversationService, shape: str, order: tuple[int, int]
) -> None:
    people = await three_contacts(service)
    merge_ids = [
        await service.merge(people[keep][0], people[merged][0], author="alice", reason="same person")
        for keep, merged in SHAPES[shape]
    ]
    root = SHAPES[shape][-1][0]
    everything = {f"{n} {w}" for n in NUMBERS for w in ("first", "second")}
    assert await bodies(service, people[root][1]) == everything
    # Texts arriving while merged land in the merged timeline, and still belong to whoever sent them.
    for name, number in NUMBERS.items():
        landed = await service.ingest(sms(number, f"{name}-3", f"{name} while merged"))
        assert landed.conversation_id == people[root][1]
    for index in order:
        await service.unmerge(merge_ids[index], author="alice")
    for name, (_, conv) in people.items():
        assert await bodies(service, conv) == {f"{name} first", f"{name} second", f"{name} while merged"}, name
    # And after everything is undone, each number resolves to its own conversation again.
    for name, number in NUMBERS.items():
        again = await service.ingest(sms(number, f"{name}-4", f"{name} after"))
        assert again.conversation_id == people[name][1]


async def test_all_permutations_of_undoing_a_chain_step_by_step(service: ConversationService) -> None:
    """Between the two undos of the chain A into B into C the timelines are right too."""
    for attempt, order in enumerate(itertools.permutations([0, 1])):
        people = {}
        for name, number in NUMBERS.items():
            r = await service.ingest(sms(number.replace("555", f"55{attempt}"), f"p{attempt}{name}", f"{name} own"))
            people[name] = (r.contact_id, r.conversation_id)
        m_ab = await service.merge(people["B"][0], people["A"][0], author="alice", reason="same")
        m_bc = await service.merge(people["C"][0], people["B"][0], author="alice", reason="same")
        merges = [m_ab, m_bc]
        await service.unmerge(merges[order[0]], author="alice")
        if order[0] == 0:  # A split off; B is still inside C
            assert await bodies(service, people["A"][1]) == {"A own"}
            assert await bodies(service, people["C"][1]) == {"B own", "C own"}
        else:  # B (with A inside it) split off C
            assert await bodies(service, people["B"][1]) == {"A own", "B own"}
            assert await bodies(service, people["C"][1]) == {"C own"}
        await service.unmerge(merges[order[1]], author="alice")
        for name in NUMBERS:
            assert await bodies(service, people[name][1]) == {f"{name} own"}


async def test_reply_number_is_the_kept_contacts_own_never_an_absorbed_one(service: ConversationService) -> None:
    absorbed = await service.ingest(sms("+12025550131", "abs-1", "older contact, older number"))
    kept = await service.ingest(sms("+12025550132", "kept-1", "the customer"))
    await service.merge(kept.contact_id, absorbed.contact_id, author="alice", reason="same household")
    summary = await service.summary(kept.conversation_id)
    assert summary is not None
    assert summary.phone == "+12025550132"
    routes = await service.routes(kept.conversation_id)
    assert routes.phone == "+12025550132"
    result = await service.reply(kept.conversation_id, "sms", "Hello", "alice")
    assert result.to == "+12025550132"


async def test_replies_without_a_route_are_refused_with_the_reason(service: ConversationService) -> None:
    bank = await service.ingest(sms("BANKCO", "alpha-1", "Your code is 1234"))
    routes = await service.routes(bank.conversation_id)
    assert routes.channels == ()
    assert "name, not a number" in routes.unavailable["sms"]
    with pytest.raises(NoRouteError, match="name, not a number"):
        await service.reply(bank.conversation_id, "sms", "Thanks", "alice")
    with pytest.raises(NoRouteError, match="never wrote through the website chat"):
        await service.reply(bank.conversation_id, "chat", "Thanks", "alice")
    withheld = await service.ingest(
        Inbound(Channel.VOICE, EventKind.CALL_MISSED, IdentityKind.PHONE, "anonymous", "call-anon-1", "")
    )
    with pytest.raises(NoRouteError, match="withheld"):
        await service.reply(withheld.conversation_id, "sms", "Hi", "alice")
    broken = await service.ingest(sms("12", "short-1", "?"))
    with pytest.raises(NoRouteError, match="not a complete phone number"):
        await service.reply(broken.conversation_id, "sms", "Hi", "alice")
    # Nothing was stored for the refused replies.
    for conv in (bank.conversation_id, withheld.conversation_id, broken.conversation_id):
        assert not [e for e in await service.timeline(conv) if e.kind == "message_out"]


async def test_chat_replies_are_addressed_to_the_visitor_and_sms_off_means_no_sms(store: Store) -> None:
    from gateway.domain.bus import Bus  # noqa: PLC0415

    service = ConversationService(store, Bus(), ServiceSettings(sms_enabled=False))
    visitor = await service.ingest(
        Inbound(
            Channel.CHAT,
            EventKind.MESSAGE_IN,
            IdentityKind.CHAT,
            "web-visitor-1",
            "web:x:1",
            "hi",
            meta={"visitor": "web-visitor-1"},
        )
    )
    routes = await service.routes(visitor.conversation_id)
    assert routes.channels == ("chat",)
    assert "turned off" in routes.unavailable["sms"]
    result = await service.reply(visitor.conversation_id, "chat", "Hello!", "alice")
    assert result.to == "web-visitor-1"
    [out] = [e for e in await service.timeline(visitor.conversation_id) if e.kind == "message_out"]
    assert out.meta["to"] == "web-visitor-1"
    sms_customer = await service.ingest(sms("+12025550140", "off-1", "hello"))
    with pytest.raises(NoRouteError, match="turned off"):
        await service.reply(sms_customer.conversation_id, "sms", "Hi", "alice")
