"""Promises staff make: found in what they say and write, due when promised, proposed until confirmed."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.continuity.promise_keeper import PromiseKeeper
from gateway.continuity.promises import Hours, find_promises, requested_call_time
from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.domain.spine import SpineService
from gateway.errors import ValidationError
from gateway.leakage.config import LeakageConfig
from gateway.leakage.service import LeakageService
from gateway.store.db import Store
from gateway.store.promises import PromiseRow

TZ = "America/New_York"
ZI = ZoneInfo(TZ)
WEEKDAYS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:00-17:00")
OFFICE = Hours(WEEKDAYS, TZ)


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=ZI).timestamp()


# 2026-12-04 is a Friday, 2026-12-01 a Tuesday.
FRIDAY_2PM = at(2026, 12, 4, 14)
TUESDAY_10AM = at(2026, 12, 1, 10)

#: The store, the conversation and spine services, the promise keeper and its settable clock.
Rig = tuple[Store, ConversationService, SpineService, PromiseKeeper, list[float]]


def test_call_back_tomorrow_is_due_at_the_end_of_the_next_business_day() -> None:
    (p,) = find_promises("Thanks Maria. I'll call you back tomorrow with the times.", TUESDAY_10AM, OFFICE)
    assert p.step == "Call back"
    assert p.due == at(2026, 12, 2, 17)
    # Said on a Friday, "tomorrow" is a Saturday: the office is closed, so Monday's closing time.
    (p,) = find_promises("I'll call you back tomorrow.", FRIDAY_2PM, OFFICE)
    assert p.due == at(2026, 12, 7, 17)


def test_a_clock_time_and_a_weekday_are_kept() -> None:
    (p,) = find_promises("We'll give you a call at 3pm tomorrow", TUESDAY_10AM, OFFICE)
    assert p.due == at(2026, 12, 2, 15)
    (p,) = find_promises("I will send you the estimate by Friday.", TUESDAY_10AM, OFFICE)
    assert p.step == "Send the estimate"
    assert p.due == at(2026, 12, 4, 17)
    (p,) = find_promises("Let me send over the time slots today", TUESDAY_10AM, OFFICE)
    assert p.step == "Send the time slots"
    assert p.due == at(2026, 12, 1, 17)


def test_korean_promises() -> None:
    (p,) = find_promises("내일 다시 전화드리겠습니다", TUESDAY_10AM, OFFICE)
    assert p.step == "Call back"
    assert p.due == at(2026, 12, 2, 17)


def test_what_is_not_a_promise() -> None:
    assert find_promises("Can you call me back tomorrow?", TUESDAY_10AM, OFFICE) == []
    assert find_promises("The estimate was sent yesterday.", TUESDAY_10AM, OFFICE) == []
    assert find_promises("", TUESDAY_10AM, OFFICE) == []


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = Store(tmp_path / "g.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    spines = SpineService(store, bus)
    now = [TUESDAY_10AM]
    keeper = PromiseKeeper(store, service, spines, bus, OFFICE, clock=lambda: now[0])
    await keeper.start()
    yield store, service, spines, keeper, now
    await keeper.stop()
    await store.stop()


async def _promises(keeper: PromiseKeeper, conv: int, n: int) -> list[PromiseRow]:
    for _ in range(100):
        rows = await keeper.promises(conv)
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.02)
    return await keeper.promises(conv)


async def _conversation(service: ConversationService) -> int:
    res = await service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12125550147", "sms-1", "leak in the roof")
    )
    return res.conversation_id


async def test_a_promise_on_a_call_is_proposed_then_confirmed_as_the_next_step(rig: Rig) -> None:
    _store, service, spines, keeper, now = rig
    conv = await _conversation(service)
    turns = [
        {"side": "caller", "text": "Can you call me back tomorrow?", "at": now[0]},
        {"side": "staff", "text": "Sure, I'll call you back tomorrow.", "at": now[0] + 3},
    ]
    body = "Caller: Can you call me back tomorrow?\nStaff: Sure, I'll call you back tomorrow."
    eid = await service.append_event(
        conv, EventKind.TRANSCRIPT, Channel.VOICE, body, {"live": True, "turns": turns, "extension": "201"}
    )
    (event,) = [e for e in await service.timeline(conv) if e.id == eid]
    (row,) = await _promises(keeper, conv, 1)  # heard on the bus, as the daemon hears a call's transcript
    pid = row.id
    assert await keeper.consider(event) == [], "the same transcript proposes each promise once"
    assert (row.step, row.status, row.said_by) == ("Call back", "proposed", "201")
    note = [e for e in await service.timeline(conv) if e.meta.get("promise_id") == pid]
    assert note[0].kind == "note"
    assert "call you back tomorrow" in note[0].body
    # Not counted before a person confirms it.
    assert (await spines.spine(conv)).next_step is None
    confirmed = await keeper.confirm(pid, staff="alice")
    assert confirmed.status == "confirmed"
    sp = await spines.spine(conv)
    assert sp.next_step == "Call back"
    assert sp.next_step_due == at(2026, 12, 2, 17)
    assert sp.next_step_owner == "alice"


async def test_promises_not_kept_and_kept(rig: Rig) -> None:
    _store, service, _spines, keeper, now = rig
    conv = await _conversation(service)
    # Heard through the bus, as the daemon hears staff replies.
    await service.enqueue_outbound(
        conv, Channel.SMS, "+12125550147", "I will send you the estimate today.", automated=False, author="bob"
    )
    (row,) = await _promises(keeper, conv, 1)
    assert (row.step, row.said_by) == ("Send the estimate", "bob")
    await keeper.confirm(row.id, staff="bob")
    with pytest.raises(ValidationError, match="already confirmed"):
        await keeper.confirm(row.id, staff="bob")
    now[0] = at(2026, 12, 1, 18)  # past due (17:00) and nothing sent since: not kept
    assert [p.id for p in await keeper.not_kept()] == [row.id]
    # Another promise, kept: a staff reply before its due time.
    res = await service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12125550199", "sms-2", "gutters?")
    )
    now[0] = TUESDAY_10AM
    await service.enqueue_outbound(
        res.conversation_id, Channel.SMS, "+12125550199", "We'll call you back today.", automated=False, author="bob"
    )
    (kept,) = await _promises(keeper, res.conversation_id, 1)
    await keeper.confirm(kept.id, staff="bob")
    await service.append_event(
        res.conversation_id,
        EventKind.CALL_ANSWERED,
        Channel.VOICE,
        meta={"extension": "202"},
        occurred_at=at(2026, 12, 1, 11),
    )
    now[0] = at(2026, 12, 1, 18)
    assert [p.id for p in await keeper.not_kept()] == [row.id]


async def test_an_automated_text_is_never_read_as_a_promise(rig: Rig) -> None:
    _store, service, _spines, keeper, _now = rig
    conv = await _conversation(service)
    await service.enqueue_outbound(
        conv, Channel.SMS, "+12125550147", "We will call you back tomorrow.", automated=True, author="continuity"
    )
    for e in await service.timeline(conv):
        assert await keeper.consider(e) == []
    assert await keeper.promises(conv) == []


async def test_a_broken_promise_shows_on_the_leakage_page_as_a_next_step_past_due(rig: Rig) -> None:
    store, service, _spines, keeper, now = rig
    conv = await _conversation(service)
    await service.enqueue_outbound(
        conv, Channel.SMS, "+12125550147", "I'll call you back today.", automated=False, author="bob"
    )
    (row,) = await _promises(keeper, conv, 1)
    await keeper.confirm(row.id, staff="bob")
    now[0] = at(2026, 12, 2, 9)  # the next morning: the promised call never happened
    leakage = LeakageService(store, LeakageConfig(), WEEKDAYS, TZ, clock=lambda: now[0])
    win = leakage.day_window(dt.date(2026, 12, 1), dt.date(2026, 12, 1))
    (item,) = await leakage.items("next_steps_past_due", win)
    assert item["conversation_id"] == conv


def test_the_time_a_customer_asks_to_be_called() -> None:
    assert requested_call_time("Can you call me at 3pm?", TUESDAY_10AM, OFFICE) == at(2026, 12, 1, 15)
    assert requested_call_time("call me 9:30am", TUESDAY_10AM, OFFICE) == at(2026, 12, 2, 9, 30)  # passed: tomorrow
    assert requested_call_time("Give me a ring on Friday", TUESDAY_10AM, OFFICE) == at(2026, 12, 4, 9)
    assert requested_call_time("내일 3시에 전화 주세요", TUESDAY_10AM, OFFICE) == at(2026, 12, 2, 15)
    assert requested_call_time("Please call me", TUESDAY_10AM, OFFICE) is None  # the plain call-me hand-off
    assert requested_call_time("I'll call you at 3", TUESDAY_10AM, OFFICE) is None  # staff words, not a request


def test_staff_utterances_split_by_a_pause_are_one_sentence() -> None:
    """The recogniser ends an utterance at each pause: "내일" ... "전화 할게요" is one promise, made for tomorrow."""
    from gateway.continuity.promise_keeper import _staff_sentences  # noqa: PLC0415

    turns = [
        {"side": "staff", "text": "내일", "at": 10.0, "end": 10.4},
        {"side": "staff", "text": "전화 할게요", "at": 11.3, "end": 12.0},
        {"side": "caller", "text": "네", "at": 13.0, "end": 13.2},
        {"side": "staff", "text": "감사합니다", "at": 13.5, "end": 14.0},
        {"side": "staff", "text": "내일", "at": 20.0},  # an older transcript without ends: one line per utterance
        {"side": "staff", "text": "예약", "at": 20.5},
    ]
    assert _staff_sentences(turns) == "내일 전화 할게요\n감사합니다\n내일\n예약"
    (p,) = find_promises(_staff_sentences(turns), TUESDAY_10AM, OFFICE)
    assert p.step == "Call back"
    assert p.due == at(2026, 12, 2, 17)
