"""One seeded week (Mon 2026-11-23 .. Sun 2026-11-29, UTC, open Mon-Fri 09:00-17:00) with hand-computed answers.

Thresholds are the defaults: missed call 30 min, voicemail 60 min, text 4 business hours, chat idle 30 min.
"Now" is Tue 2026-12-01 12:00 UTC. Every conversation below says what it must count as.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.store.db import Store

from .seed import Seeder, at

NOW = at("2026-12-01 12:00")
OUT = {"direction": "outbound"}


@dataclass
class History:
    ids: dict[str, int] = field(default_factory=dict)


async def seed_week(store: Store) -> History:
    s = Seeder(store)
    h = History()
    ids = h.ids

    # A: missed at 22:00 Monday, staff text 09:20 Tuesday (deadline 09:30): returned in time -> recovered.
    ids["A"] = a = await s.conversation("Ana Park", owner="alice")
    await s.event(a, "call_missed", "voice", at("2026-11-23 22:00"))
    await s.event(a, "message_out", "sms", at("2026-11-24 09:20"), author="alice")

    # B: missed at 22:00 Monday; the automated text-back does not count; staff call at 09:45 is late -> unreturned.
    ids["B"] = b = await s.conversation("Ben Cho", owner="bob")
    await s.event(b, "call_missed", "voice", at("2026-11-23 22:00"))
    await s.event(b, "message_out", "sms", at("2026-11-24 09:20"), {"automated": True, "rule": "missed_call"})
    await s.event(b, "call_ringing", "voice", at("2026-11-24 09:45"), OUT)

    # C: missed Tuesday 10:00, never returned -> unreturned; then hung up in the queue -> abandoned.
    ids["C"] = c = await s.conversation("<b>Cho</b>")
    await s.event(c, "call_missed", "voice", at("2026-11-24 10:00"))
    await s.event(c, "call_abandoned", "voice", at("2026-11-24 10:05"))

    # D: voicemail Friday 16:50, returned by an outbound call Monday 09:45 (deadline 09:50) -> recovered.
    ids["D"] = d = await s.conversation("Dee Han", owner="alice")
    await s.event(d, "voicemail", "voice", at("2026-11-27 16:50"))
    await s.event(d, "call_answered", "voice", at("2026-11-30 09:45"), OUT, author="alice")

    # E: voicemail Wednesday 11:00, staff text 12:30 (deadline 12:00) -> voicemail unreturned.
    ids["E"] = e = await s.conversation("Eun Seo", owner="bob")
    await s.event(e, "voicemail", "voice", at("2026-11-25 11:00"))
    await s.event(e, "message_out", "sms", at("2026-11-25 12:30"), author="bob")

    # F: a chat at night, nobody answers, no next step -> chat leak.
    ids["F"] = f = await s.conversation("Web visitor F", owner="alice")
    await s.event(f, "message_in", "chat", at("2026-11-25 20:00"))
    await s.event(f, "message_in", "chat", at("2026-11-25 20:05"))

    # G: a chat handed off to SMS -> not a leak.
    ids["G"] = g = await s.conversation("Web visitor G")
    await s.event(g, "message_in", "chat", at("2026-11-25 20:00"))
    await s.event(g, "handoff", "chat", at("2026-11-25 20:10"), {"handoff": "sms"})

    # H: a chat with a next step recorded -> not a leak.
    ids["H"] = hh = await s.conversation("Web visitor H", next_step="call back Friday")
    await s.event(hh, "message_in", "chat", at("2026-11-26 14:00"))

    # I: answered chat, then a new chat an hour later nobody answers -> one chat leak (the 15:00 one).
    ids["I"] = i = await s.conversation("Web visitor I")
    await s.event(i, "message_in", "chat", at("2026-11-26 14:00"))
    await s.event(i, "message_out", "chat", at("2026-11-26 14:02"), author="alice")
    await s.event(i, "message_in", "chat", at("2026-11-26 15:00"))

    # J: text Monday 16:00 answered Tuesday 11:00: 3 business hours -> fine.
    ids["J"] = j = await s.conversation("Jae Lim", owner="bob")
    await s.event(j, "message_in", "sms", at("2026-11-23 16:00"))
    await s.event(j, "message_out", "sms", at("2026-11-24 11:00"), author="bob")

    # K: texts 09:00 and 10:00 Tuesday, answered 14:30 (deadline 13:00) -> one waiting thread.
    ids["K"] = k = await s.conversation("Kim Woo")
    await s.event(k, "message_in", "sms", at("2026-11-24 09:00"))
    await s.event(k, "message_in", "sms", at("2026-11-24 10:00"))
    await s.event(k, "message_out", "sms", at("2026-11-24 14:30"), author="alice")

    # L: text Saturday 10:00, never answered; deadline Monday 13:00 has passed -> waiting thread.
    ids["L"] = lc = await s.conversation("Lee Bo")
    await s.event(lc, "message_in", "sms", at("2026-11-28 10:00"))

    # M: asked for the name Monday 09:00 (not yet known), the name was captured 10:00, an automated text Tuesday
    # asks for name and address again -> one fact asked twice, one automated message sent.
    ids["M"] = m = await s.conversation("Mina Yoon")
    await s.fact(m, "name", "Mina", at("2026-11-23 10:00"))
    await s.event(m, "message_out", "sms", at("2026-11-23 09:00"), {"asks_for": ["name"]}, author="alice")
    await s.event(
        m, "message_out", "sms", at("2026-11-24 10:00"),
        {"automated": True, "rule": "chat_to_sms", "asks_for": ["name", "address"]},
    )  # fmt: skip

    # N: the continuity rules held two texts back and deferred one (deferred is not "not sent").
    ids["N"] = n = await s.conversation("Nam Gu")
    for when, decision, reason in (
        ("2026-11-24 12:00", "suppressed", "opted out"),
        ("2026-11-25 12:00", "cancelled", "staff called back"),
        ("2026-11-26 12:00", "deferred", "quiet hours"),
    ):
        meta = {"rule": "missed_call", "decision": decision, "reason": reason}
        await s.event(n, "automated", "system", at(when), meta)

    # O, P, Q: next steps. O fell due Wednesday -> past due; P is due next week; Q is closed.
    ids["O"] = await s.conversation("Oh Jin", owner="alice", next_step="send estimate")
    ids["P"] = await s.conversation("Park Su", next_step="confirm", status="waiting")
    ids["Q"] = await s.conversation("Qi Lu", next_step="visit", status="closed")
    await s.sql("UPDATE conversations SET next_step_due = ? WHERE id = ?", (at("2026-11-25 10:00"), ids["O"]))
    await s.sql("UPDATE conversations SET next_step_due = ? WHERE id = ?", (at("2026-12-08 10:00"), ids["P"]))
    await s.sql("UPDATE conversations SET next_step_due = ? WHERE id = ?", (at("2026-11-25 10:00"), ids["Q"]))

    # R and S: the same person called from two numbers; S's missed call was never returned on its own. Staff texted R
    # at 10:25, then the contacts were merged: both missed calls live in R now and both were returned in time.
    ids["R"] = r = await s.conversation("Rho Ra")
    ids["S"] = sc = await s.conversation("Rho Ra (mobile)")
    await s.event(r, "call_missed", "voice", at("2026-11-26 10:00"))
    await s.event(sc, "call_missed", "voice", at("2026-11-26 10:10"))
    await s.event(r, "message_out", "sms", at("2026-11-26 10:25"), author="bob")

    # U and V: V's chat captured the address Monday; staff ask U (the same person, merged in the test) "what is
    # your address?" Wednesday -> asked twice once V is merged into U (the question matches a configured phrase).
    ids["U"] = u = await s.conversation("Uma Ro")
    ids["V"] = v = await s.conversation("Web visitor V")
    await s.fact(v, "address", "12 Elm St", at("2026-11-23 12:00"))
    await s.event(u, "message_out", "sms", at("2026-11-25 10:00"), author="alice", body="Thanks! What is your ADDRESS?")
    await s.event(u, "message_out", "sms", at("2026-11-25 10:05"), author="alice", body="Your name, please.")
    return h
