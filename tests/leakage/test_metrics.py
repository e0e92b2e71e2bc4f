"""Every leakage metric against a seeded week with hand-computed answers (real SQLite store)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.errors import ValidationError
from gateway.leakage.config import LeakageConfig
from gateway.leakage.service import LeakageService
from gateway.store import queries as q
from gateway.store.db import Store

from .history import NOW, History, seed_week
from .seed import Seeder, at

WEEKDAYS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:00-17:00")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    st = Store(tmp_path / "gateway.db")
    await st.start()
    try:
        yield st
    finally:
        await st.stop()


def service(store: Store, now: float = NOW, tz: str = "UTC", config: LeakageConfig | None = None) -> LeakageService:
    return LeakageService(
        store,
        config or LeakageConfig(),
        WEEKDAYS,
        tz,
        clock=lambda: now,
        edit_check_seconds=0.0,
    )


async def merged(store: Store, h: History) -> None:
    def op(c: sqlite3.Connection) -> None:
        keep = q.contact_of(c, h.ids["R"])
        gone = q.contact_of(c, h.ids["S"])
        q.merge_contacts(c, keep, gone, "same person", "alice", NOW)
        q.merge_contacts(c, q.contact_of(c, h.ids["U"]), q.contact_of(c, h.ids["V"]), "same person", "alice", NOW)

    await store.write(op)


async def test_every_metric_of_the_seeded_week(store: Store) -> None:
    h = await seed_week(store)
    await merged(store, h)
    svc = service(store)
    rep = await svc.report(svc.parse_range("2026-11-23", "2026-11-29"))
    m = rep["metrics"]
    ids = h.ids
    expected = {
        "missed_calls_unreturned": 2,  # B (automated text does not count, call late), C
        "calls_abandoned": 1,  # C
        "voicemails_unreturned": 1,  # E
        "chats_without_next_step": 2,  # F, I's second chat
        "sms_threads_waiting": 2,  # K, L
        "facts_asked_twice": 2,  # M (meta.asks_for), U (a question phrase, the fact came with the merge)
        "next_steps_past_due": 1,  # O
        "automated_sent": 2,  # B, M
        "automated_not_sent": 2,  # N suppressed + cancelled (deferred is not counted)
        "recovered": 4,  # A, D and both of R's missed calls after the merge
    }
    assert {k: v["count"] for k, v in m.items()} == expected
    assert m["recovered"]["conversations"] == 3  # A, D, R: the merged calls count once, in R
    assert m["missed_calls_unreturned"]["by_owner"] == {"": 1, "bob": 1}
    assert m["voicemails_unreturned"]["by_owner"] == {"bob": 1}
    assert m["chats_without_next_step"]["by_owner"] == {"": 1, "alice": 1}
    assert rep["automated_not_sent_by_reason"] == {
        "missed_call: opted out": 1,
        "missed_call: staff called back": 1,
    }
    assert rep["leaks_total"] == 11
    days = rep["daily"]["days"]
    assert days == [f"2026-11-{d}" for d in range(23, 30)]
    assert rep["daily"]["series"]["missed_calls_unreturned"] == [1, 1, 0, 0, 0, 0, 0]
    assert rep["daily"]["series"]["sms_threads_waiting"] == [0, 1, 0, 0, 0, 1, 0]
    assert rep["daily"]["series"]["recovered"] == [1, 0, 0, 2, 1, 0, 0]

    lists = {
        metric: sorted(
            {r["conversation_id"] for r in await svc.items(metric, svc.parse_range("2026-11-23", "2026-11-29"))}
        )
        for metric in expected
    }
    assert lists["missed_calls_unreturned"] == sorted([ids["B"], ids["C"]])
    assert lists["voicemails_unreturned"] == [ids["E"]]
    assert lists["chats_without_next_step"] == sorted([ids["F"], ids["I"]])
    assert lists["sms_threads_waiting"] == sorted([ids["K"], ids["L"]])
    assert lists["facts_asked_twice"] == sorted([ids["M"], ids["U"]])
    assert lists["next_steps_past_due"] == [ids["O"]]
    assert lists["recovered"] == sorted([ids["A"], ids["D"], ids["R"]])
    rows = await svc.items("missed_calls_unreturned", svc.parse_range("2026-11-23", "2026-11-29"))
    assert [r["name"] for r in rows] == ["<b>Cho</b>", "Ben Cho"]  # newest first, names exactly as stored
    assert rows[0]["local_time"] == "2026-11-24 10:00"


async def test_before_the_merge_each_number_counts_on_its_own(store: Store) -> None:
    h = await seed_week(store)
    svc = service(store)
    win = svc.parse_range("2026-11-26", "2026-11-26")
    rep = await svc.report(win)
    assert rep["metrics"]["missed_calls_unreturned"]["count"] == 1  # S, on its own, was never returned
    assert {r["conversation_id"] for r in await svc.items("missed_calls_unreturned", win)} == {h.ids["S"]}
    await merged(store, h)
    rep = await svc.report(win)
    assert rep["metrics"]["missed_calls_unreturned"]["count"] == 0
    assert rep["metrics"]["recovered"]["count"] == 2
    assert rep["metrics"]["recovered"]["conversations"] == 1


async def test_a_leak_whose_deadline_is_ahead_is_not_counted_yet(store: Store) -> None:
    s = Seeder(store)
    cid = await s.conversation("Late caller")
    await s.event(cid, "call_missed", "voice", at("2026-11-23 22:00"))
    early = service(store, now=at("2026-11-24 09:29"))
    win = early.parse_range("2026-11-23", "2026-11-24")
    assert (await early.report(win))["metrics"]["missed_calls_unreturned"]["count"] == 0
    late = service(store, now=at("2026-11-24 09:31"))
    assert (await late.report(win))["metrics"]["missed_calls_unreturned"]["count"] == 1


async def test_thresholds_are_configurable(store: Store) -> None:
    h = await seed_week(store)
    await merged(store, h)
    svc = service(store, config=LeakageConfig(missed_call_minutes=60, sms_wait_hours=6))
    rep = await svc.report(svc.parse_range("2026-11-23", "2026-11-29"))
    # B's 09:45 call is within 60 minutes of opening; K's 5.5 hours are within 6.
    assert rep["metrics"]["missed_calls_unreturned"]["count"] == 1
    assert rep["metrics"]["sms_threads_waiting"]["count"] == 1


async def test_first_response_median_and_p90_per_channel(store: Store) -> None:
    s = Seeder(store)
    one = await s.conversation("One", owner="alice")
    two = await s.conversation("Two", owner="alice")
    three = await s.conversation("Three", owner="bob")
    four = await s.conversation("Four")
    five = await s.conversation("Five")
    six = await s.conversation("Six")
    await s.event(one, "message_in", "sms", at("2026-11-23 10:00"))
    await s.event(one, "message_out", "sms", at("2026-11-23 10:30"), author="alice")  # 1800 s
    await s.event(two, "message_in", "sms", at("2026-11-23 16:30"))
    await s.event(two, "message_out", "sms", at("2026-11-24 09:30"), author="alice")  # 30 + 30 min: 3600 s
    await s.event(three, "message_in", "sms", at("2026-11-23 11:00"))
    await s.event(three, "message_out", "sms", at("2026-11-23 11:01"), {"automated": True})  # not a human
    await s.event(three, "message_out", "sms", at("2026-11-23 11:20"), author="bob")  # 1200 s
    await s.event(four, "call_answered", "voice", at("2026-11-23 12:00"), {"direction": "inbound"})  # 0 s
    await s.event(five, "call_missed", "voice", at("2026-11-23 13:00"))
    await s.event(five, "call_ringing", "voice", at("2026-11-23 13:10"), {"direction": "outbound"})  # 600 s
    await s.event(six, "message_in", "chat", at("2026-11-23 14:00"))  # never answered
    svc = service(store, now=at("2026-12-20 12:00"))
    fr = (await svc.report(svc.parse_range("2026-11-23", "2026-11-29")))["first_response"]
    assert fr["sms"]["median_seconds"] == 1800
    assert fr["sms"]["p90_seconds"] == 3600
    assert fr["sms"]["answered"] == 3
    assert fr["sms"]["by_owner"]["alice"]["median_seconds"] == 1800
    assert fr["sms"]["by_owner"]["bob"]["median_seconds"] == 1200
    assert fr["voice"]["median_seconds"] == 0
    assert fr["voice"]["p90_seconds"] == 600
    assert fr["chat"] == {
        "answered": 0, "unanswered": 1, "median_seconds": None, "p90_seconds": None, "by_owner": {}
    }  # fmt: skip


async def test_time_zone_decides_business_hours_and_days(store: Store) -> None:
    s = Seeder(store)
    cid = await s.conversation("Seoul caller")
    # Monday 10:00 UTC is 19:00 in Seoul (closed); the text at 00:20 UTC Tuesday is 09:20 in Seoul.
    await s.event(cid, "call_missed", "voice", at("2026-11-23 10:00"))
    await s.event(cid, "message_out", "sms", at("2026-11-24 00:20"), author="alice")
    late_call = await s.conversation("Evening caller")
    await s.event(late_call, "call_abandoned", "voice", at("2026-11-23 20:00"))  # Tuesday 05:00 in Seoul
    utc = service(store)
    rep = await utc.report(utc.parse_range("2026-11-23", "2026-11-24"))
    assert rep["metrics"]["missed_calls_unreturned"]["count"] == 1  # open at 10:00 UTC: due 10:30, too late
    assert rep["daily"]["series"]["calls_abandoned"] == [1, 0]
    seoul = service(store, tz="Asia/Seoul")
    rep = await seoul.report(seoul.parse_range("2026-11-23", "2026-11-24"))
    assert rep["metrics"]["missed_calls_unreturned"]["count"] == 0
    assert rep["metrics"]["recovered"]["count"] == 1
    assert rep["daily"]["series"]["calls_abandoned"] == [0, 1]


async def test_overview_periods_and_change(store: Store) -> None:
    s = Seeder(store)
    cid = await s.conversation("Repeat", owner="bob")
    for day in ("2026-11-20", "2026-11-26", "2026-11-30", "2026-12-01"):
        await s.event(cid, "call_abandoned", "voice", at(f"{day} 10:00"))
    svc = service(store)
    ov = await svc.overview()
    assert ov["today"] == "2026-12-01"
    today = ov["periods"]["today"]["metrics"]["calls_abandoned"]
    week = ov["periods"]["7d"]["metrics"]["calls_abandoned"]
    month = ov["periods"]["30d"]["metrics"]["calls_abandoned"]
    assert (today["count"], today["previous"], today["change"]) == (1, 1, 0)
    assert (week["count"], week["previous"], week["change"]) == (3, 1, 2)  # 11-25..12-01 vs 11-18..11-24
    assert (month["count"], month["previous"]) == (4, 0)
    assert ov["periods"]["7d"]["from"] == "2026-11-25"
    assert len(ov["daily"]["days"]) == 30
    assert ov["daily"]["days"][-1] == "2026-12-01"
    assert sum(ov["daily"]["series"]["calls_abandoned"]) == 4


async def test_roi_is_recovered_times_close_rate_times_job_value(store: Store) -> None:
    h = await seed_week(store)
    await merged(store, h)
    svc = service(store, config=LeakageConfig(close_rate=0.25, average_job_value=400))
    rep = await svc.report(svc.parse_range("2026-11-23", "2026-11-29"))
    assert rep["roi"] == {"recovered": 3, "close_rate": 0.25, "average_job_value": 400, "estimate": 300.0}


async def test_bad_ranges_say_what_to_send(store: Store) -> None:
    svc = service(store)
    with pytest.raises(ValidationError, match="YYYY-MM-DD"):
        svc.parse_range("yesterday", None)
    with pytest.raises(ValidationError, match="swap"):
        svc.parse_range("2026-11-29", "2026-11-23")
    with pytest.raises(ValidationError, match="unknown"):
        await svc.items("nonsense", svc.parse_range(None, None))
    assert svc.parse_range(None, None).days[-1] == dt.date(2026, 12, 1).isoformat()


async def test_a_fact_from_a_merged_conversation_makes_the_question_a_repeat(store: Store) -> None:
    h = await seed_week(store)
    svc = service(store)
    win = svc.parse_range("2026-11-25", "2026-11-25")
    assert [r["conversation_id"] for r in await svc.items("facts_asked_twice", win)] == []
    await merged(store, h)
    rows = await svc.items("facts_asked_twice", win)
    assert [(r["conversation_id"], r["detail"]) for r in rows] == [(h.ids["U"], "asked again for address")]


async def reports(svc: LeakageService, first: str, last: str) -> dict[str, object]:
    rep = await svc.report(svc.parse_range(first, last))
    return {"metrics": rep["metrics"], "first_response": rep["first_response"], "daily": rep["daily"]}


async def test_kept_model_and_fresh_computation_agree(store: Store) -> None:
    h = await seed_week(store)
    await merged(store, h)
    kept = service(store)
    fresh = LeakageService(store, LeakageConfig(), WEEKDAYS, "UTC", clock=lambda: NOW, kept_days=0)
    assert await reports(kept, "2026-11-23", "2026-11-29") == await reports(fresh, "2026-11-23", "2026-11-29")
    assert await reports(kept, "2026-11-25", "2026-11-26") == await reports(fresh, "2026-11-25", "2026-11-26")


async def test_kept_model_catches_up_with_new_rows_and_edits(store: Store) -> None:
    h = await seed_week(store)
    svc = service(store)
    week = ("2026-11-23", "2026-11-29")
    before = await svc.report(svc.parse_range(*week))
    assert before["metrics"]["missed_calls_unreturned"]["count"] == 3  # B, C, S
    s = Seeder(store)
    # A back-dated import: C's missed call was in fact returned at 10:20 (deadline 10:30).
    await s.event(h.ids["C"], "message_out", "sms", at("2026-11-24 10:20"), author="bob")
    # Bob takes over S.
    await store.write(lambda c: q.update_conversation(c, h.ids["S"], {"owner": "bob"}, time.time()))
    after = await svc.report(svc.parse_range(*week))
    assert after["metrics"]["missed_calls_unreturned"]["count"] == 2
    assert after["metrics"]["missed_calls_unreturned"]["by_owner"] == {"bob": 2}
    fresh = LeakageService(store, LeakageConfig(), WEEKDAYS, "UTC", clock=lambda: NOW, kept_days=0)
    assert await reports(svc, *week) == await reports(fresh, *week)
    # A merge rebuilds the whole model.
    await merged(store, h)
    assert await reports(svc, *week) == await reports(fresh, *week)
    assert (await svc.report(svc.parse_range(*week)))["metrics"]["missed_calls_unreturned"]["count"] == 1


async def test_edited_fields_are_looked_for_at_the_set_interval(store: Store) -> None:
    h = await seed_week(store)
    svc = LeakageService(store, LeakageConfig(), WEEKDAYS, "UTC", clock=lambda: NOW, edit_check_seconds=3600)
    week = svc.parse_range("2026-11-23", "2026-11-29")
    assert (await svc.report(week))["metrics"]["missed_calls_unreturned"]["by_owner"] == {"": 2, "bob": 1}
    await store.write(lambda c: q.update_conversation(c, h.ids["S"], {"owner": "dana"}, time.time()))
    # Not looked for yet (an hour between looks) ...
    assert (await svc.report(week))["metrics"]["missed_calls_unreturned"]["by_owner"] == {"": 2, "bob": 1}
    svc.edit_check_seconds = 0.0
    # ... and seen at the next look.
    assert (await svc.report(week))["metrics"]["missed_calls_unreturned"]["by_owner"] == {"": 1, "bob": 1, "dana": 1}


async def test_rows_written_by_the_real_service_paths(store: Store) -> None:
    """The conversation service's own writes: an automated text-back does not return a missed call, a staff text
    does answer the wait; the continuity rules' decisions are read from their timeline entries. Outbound messages
    are stamped with the real clock, so the history is placed relative to it."""
    bus = Bus()
    service_ = ConversationService(store, bus)
    missed = time.time() - 3 * 86400
    got = await service_.ingest(
        Inbound(Channel.VOICE, EventKind.CALL_MISSED, IdentityKind.PHONE, "+12025550111", "c-1", occurred_at=missed)
    )
    cid = got.conversation_id
    await service_.enqueue_outbound(
        cid, Channel.SMS, "+12025550111", "Sorry we missed you", automated=True, event_meta={"rule": "missed_call"}
    )
    await service_.append_event(
        cid, EventKind.AUTOMATED, Channel.SYSTEM, "held back",
        {"rule": "voicemail", "decision": "suppressed", "reason": "the recipient opted out"},
    )  # fmt: skip
    svc = LeakageService(store, LeakageConfig(), {}, "UTC", clock=lambda: time.time() + 60, edit_check_seconds=0.0)
    first = dt.datetime.fromtimestamp(missed, dt.UTC).date().isoformat()
    win = svc.parse_range(first, None)
    rep = await svc.report(win)
    assert rep["metrics"]["missed_calls_unreturned"]["count"] == 1
    assert rep["metrics"]["automated_sent"]["count"] == 1
    assert rep["automated_not_sent_by_reason"] == {"voicemail: the recipient opted out": 1}
    assert "voice" not in rep["first_response"]  # still waiting, within the response horizon
    await service_.enqueue_outbound(cid, Channel.SMS, "+12025550111", "Calling you now", automated=False, author="bob")
    rep = await svc.report(win)
    # The staff text came days after the deadline: still not returned in time, but the wait now has its answer.
    assert rep["metrics"]["missed_calls_unreturned"]["count"] == 1
    assert rep["first_response"]["voice"]["answered"] == 1
    median = rep["first_response"]["voice"]["median_seconds"]
    assert median is not None
    assert median >= 3 * 86400 - 5


async def test_the_read_model_is_rebuilt_just_after_midnight(store: Store) -> None:
    await seed_week(store)
    clock = {"now": at("2026-11-30 23:59:59.5")}
    svc = LeakageService(store, LeakageConfig(), WEEKDAYS, "UTC", clock=lambda: clock["now"], edit_check_seconds=0)
    warm = asyncio.create_task(svc.warm())
    try:
        for _ in range(100):
            if svc._model is not None:
                break
            await asyncio.sleep(0.02)
        assert svc._model is not None
        assert svc._model.day == dt.date(2026, 11, 30)
        clock["now"] = at("2026-12-01 00:00:01")  # the warm task wakes about 1.5 s later (real time)
        for _ in range(200):
            if svc._model.day == dt.date(2026, 12, 1):
                break
            await asyncio.sleep(0.05)
        assert svc._model.day == dt.date(2026, 12, 1)
    finally:
        warm.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warm


async def test_a_kept_leak_starts_to_count_when_its_deadline_passes(store: Store) -> None:
    s = Seeder(store)
    cid = await s.conversation("Late caller")
    await s.event(cid, "call_missed", "voice", at("2026-11-23 22:00"))
    clock = {"now": at("2026-11-24 09:29")}
    svc = LeakageService(store, LeakageConfig(), WEEKDAYS, "UTC", clock=lambda: clock["now"], edit_check_seconds=0)
    win = svc.parse_range("2026-11-23", "2026-11-24")
    assert (await svc.report(win))["metrics"]["missed_calls_unreturned"]["count"] == 0
    clock["now"] = at("2026-11-24 09:31")
    assert (await svc.report(win))["metrics"]["missed_calls_unreturned"]["count"] == 1
    # Staff call back later: still not in time, and the wait has its answer.
    await s.event(cid, "call_ringing", "voice", at("2026-11-24 09:40"), {"direction": "outbound"})
    clock["now"] = at("2026-11-24 09:45")
    rep = await svc.report(win)
    assert rep["metrics"]["missed_calls_unreturned"]["count"] == 1
    assert rep["first_response"]["voice"]["answered"] == 1


async def test_next_step_edits_reach_the_kept_totals(store: Store) -> None:
    h = await seed_week(store)
    svc = service(store)
    week = svc.parse_range("2026-11-23", "2026-11-29")
    assert (await svc.report(week))["metrics"]["next_steps_past_due"]["count"] == 1  # O
    await s_due(store, h.ids["P"], at("2026-11-27 09:00"))  # P's next step now fell due last Friday
    await store.write(lambda c: q.update_conversation(c, h.ids["O"], {"status": "closed"}, time.time()))
    rep = await svc.report(week)
    assert rep["metrics"]["next_steps_past_due"]["count"] == 1
    assert [r["conversation_id"] for r in await svc.items("next_steps_past_due", week)] == [h.ids["P"]]


async def s_due(store: Store, cid: int, due: float) -> None:
    await store.write(
        lambda c: c.execute(
            "UPDATE conversations SET next_step_due = ?, updated_at = ? WHERE id = ?", (due, time.time(), cid)
        )
    )


async def test_a_range_reaching_past_today_counts_the_same_days(store: Store) -> None:
    h = await seed_week(store)
    await merged(store, h)
    svc = service(store)
    upto = await svc.report(svc.parse_range("2026-11-23", "2026-12-01"))
    beyond = await svc.report(svc.parse_range("2026-11-23", "2026-12-04"))
    assert {k: v["count"] for k, v in beyond["metrics"].items()} == {k: v["count"] for k, v in upto["metrics"].items()}
    assert beyond["daily"]["series"]["missed_calls_unreturned"][-3:] == [0, 0, 0]
