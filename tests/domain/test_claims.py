"""Claims over a real SQLite store: what verifies one by SMS answer and what never does."""

from __future__ import annotations

import asyncio

import pytest

from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.errors import PermanentError
from gateway.store.db import Store

NUMBER = "+12025550181"


def chat(ext: str, body: str) -> Inbound:
    return Inbound(Channel.CHAT, EventKind.MESSAGE_IN, IdentityKind.CHAT, "web-visitor-c", ext, body)


def sms(ext: str, body: str) -> Inbound:
    return Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, NUMBER, ext, body)


async def claim_and_text(service: ConversationService) -> int:
    visitor = await service.ingest(chat("c-1", "hello"))
    claim = await service.claim_identity(visitor.conversation_id, IdentityKind.PHONE, NUMBER, visitor_hash="v")
    await service.enqueue_outbound(visitor.conversation_id, Channel.SMS, NUMBER, "Reply here", automated=True)
    await service.mark_claim_texted(claim.id)
    return visitor.conversation_id


async def test_a_claim_alone_changes_no_identity(service: ConversationService) -> None:
    visitor = await service.ingest(chat("c-0", "hello"))
    await service.claim_identity(visitor.conversation_id, IdentityKind.PHONE, NUMBER)
    assert await service.find_contact(IdentityKind.PHONE, NUMBER) is None
    routes = await service.routes(visitor.conversation_id)
    assert routes.phone is None
    answer = await service.ingest(sms("s-0", "who is this?"))  # never texted: no verification
    assert answer.conversation_id != visitor.conversation_id


async def test_the_answer_verifies_even_after_a_restart(store: Store) -> None:
    first = ConversationService(store, Bus())
    conv = await claim_and_text(first)
    restarted = ConversationService(store, Bus())  # a new daemon process on the same database
    answer = await restarted.ingest(sms("s-1", "yes, text me"))
    assert answer.conversation_id == conv
    [claim] = await restarted.claims(conv)
    assert claim.state == "verified"
    assert claim.method == "sms_reply"


async def test_a_refused_text_verifies_nothing(service: ConversationService) -> None:
    await service.ingest(sms("s-stop", "STOP"))
    await service.store.write(lambda c: c.execute("INSERT INTO suppressions VALUES (?, 'STOP', 0)", (NUMBER,)))
    visitor = await service.ingest(chat("c-2", "hello"))
    await service.claim_identity(visitor.conversation_id, IdentityKind.PHONE, NUMBER)
    with pytest.raises(PermanentError, match="opted out"):
        await service.enqueue_outbound(visitor.conversation_id, Channel.SMS, NUMBER, "Reply here", automated=True)
    later = await service.ingest(sms("s-2", "unrelated text days later"))
    assert later.conversation_id != visitor.conversation_id
    merges = await service.store.read(lambda c: c.execute("SELECT COUNT(*) FROM merges").fetchone()[0])
    assert merges == 0


async def test_an_answer_after_the_window_verifies_nothing(store: Store) -> None:
    service = ConversationService(store, Bus(), ServiceSettings(claim_reply_window_s=0.0))
    conv = await claim_and_text(service)
    late = await service.ingest(sms("s-3", "sorry, only now"))
    assert late.conversation_id != conv
    [claim] = await service.claims(conv)
    assert claim.state == "pending"


async def test_an_answer_among_a_burst_of_other_texts_verifies(service: ConversationService) -> None:
    conv = await claim_and_text(service)
    others = [
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, f"+1202555{n:04d}", f"o-{n}", "other")
        for n in range(200, 260)
    ]
    burst = [*others[:30], sms("s-9", "yes, this is me"), sms("s-10", "and again"), *others[30:]]
    results = await asyncio.gather(*(service.ingest(it) for it in burst))
    assert results[30].conversation_id == conv, "the answer joined the conversation that texted the number"
    assert results[31].conversation_id == conv, "the next text from the number follows it"
    [claim] = await service.claims(conv)
    assert claim.state == "verified"
    assert len({r.conversation_id for r in results} - {conv}) == 60
