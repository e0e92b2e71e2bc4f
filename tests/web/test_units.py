"""Small pure parts of the web layer: hours, rate limits, signatures, JSON conversion, sessions and give-up."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import time
from pathlib import Path

import pytest

import gateway.web.webhooks as wh
from gateway.config import Secret
from gateway.domain.calls import CallOutcome
from gateway.domain.models import TimelineEvent
from gateway.errors import ConfigError
from gateway.store import web as sql
from gateway.web import hours
from gateway.web.app import WEBHOOKS
from gateway.web.jsonable import jsonable
from gateway.web.security import RateLimiter, sign_payload, token_hash

from .conftest import PASSWORD, WebEnv, csrf_from, make_env


def at(day: str, hhmm: str, tz: str = "Europe/Berlin") -> float:
    """Unix time of a weekday (2026-11-23 is a Monday) and local time in ``tz``."""
    base = dt.date(2026, 11, 23) + dt.timedelta(days=hours.DAYS.index(day))
    h, m = (int(x) for x in hhmm.split(":"))
    return dt.datetime(base.year, base.month, base.day, h, m, tzinfo=hours.zone(tz)).timestamp()


def test_business_hours() -> None:
    week = {"mon": "09:00-17:00", "sat": "10:00-12:00"}
    assert hours.is_open(week, "Europe/Berlin", at("mon", "09:00"))
    assert not hours.is_open(week, "Europe/Berlin", at("mon", "17:00"))
    assert not hours.is_open(week, "Europe/Berlin", at("tue", "11:00"))  # no hours: closed
    assert hours.is_open(week, "Europe/Berlin", at("sat", "11:59"))
    # The same instant seen from another zone.
    assert not hours.is_open(week, "Asia/Seoul", at("mon", "09:30"))


def test_quiet_hours_cross_midnight() -> None:
    assert hours.in_quiet_hours("21:00-08:00", "Europe/Berlin", at("wed", "23:30"))
    assert hours.in_quiet_hours("21:00-08:00", "Europe/Berlin", at("thu", "07:59"))
    assert not hours.in_quiet_hours("21:00-08:00", "Europe/Berlin", at("thu", "08:00"))
    assert not hours.in_quiet_hours("", "Europe/Berlin", at("thu", "03:00"))


@pytest.mark.parametrize(("span", "zone"), [("9-17", "UTC"), ("09:00-17:00", "Mars/Olympus")])
def test_bad_hours_config_says_how_to_fix(span: str, zone: str) -> None:
    with pytest.raises(ConfigError, match=r"HH:MM-HH:MM|IANA"):
        hours.is_open({"mon": span, "tue": span, "wed": span, "thu": span, "fri": span}, zone, time.time())


def test_rate_limiter_refills() -> None:
    rl = RateLimiter(rate=1.0, burst=3)
    assert [rl.allow("a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert rl.allow("b", now=0.0)  # other addresses are not affected
    assert not rl.allow("a", now=0.5)
    assert rl.allow("a", now=2.0)


def test_rate_limiter_memory_is_bounded() -> None:
    rl = RateLimiter(rate=1.0, burst=1, max_keys=100)
    for i in range(1000):
        rl.allow(f"10.0.{i // 256}.{i % 256}", now=float(i))
    assert len(rl._buckets) <= 100


def test_signature_matches_a_receiver_check() -> None:
    body = b'{"type":"message.received"}'
    sig = sign_payload("k3y", "1700000000", body)
    assert sig == hmac.new(b"k3y", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()


def test_jsonable_turns_records_into_plain_json() -> None:
    ev = TimelineEvent(1, 2, "note", "note", "<b>x</b>", {"k": (1, 2)}, None, "alice", 3.5)
    assert jsonable(ev)["meta"] == {"k": [1, 2]}
    assert jsonable(CallOutcome.MISSED) == "missed"
    assert jsonable({"p": Path("/x")}) == {"p": "/x"}


async def test_logout_ends_the_session(web_env: WebEnv) -> None:
    await web_env.login()
    assert (await web_env.client.get("/api/v1/me")).status == 200
    resp = await web_env.client.post("/logout", data={"csrf_token": web_env.csrf}, allow_redirects=False)
    assert resp.status == 302
    rows = await web_env.store.read(lambda c: c.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0])
    assert rows == 0
    assert (await web_env.client.get("/api/v1/me")).status == 401


async def test_expired_session_is_refused(web_env: WebEnv) -> None:
    await web_env.login()
    await web_env.store.write(lambda c: c.execute("UPDATE web_sessions SET expires_at = 0"))
    resp = await web_env.client.get("/console", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"].startswith("/login")


async def test_login_redirect_stays_on_this_site(web_env: WebEnv) -> None:
    page = await web_env.client.get("/login")
    token = csrf_from(await page.text(), 'name="csrf_token" value="')
    resp = await web_env.client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "//evil.example/x"},
        allow_redirects=False,
    )
    assert resp.status == 302
    assert resp.headers["Location"] == "/console"


async def test_webhook_is_given_up_after_max_attempts(tmp_path: Path) -> None:
    env, store = await make_env(
        tmp_path, webhook_urls=["http://127.0.0.1:9/hook"], webhook_secret=Secret("k"), webhook_max_attempts=2
    )
    try:
        original = wh.retry_delay
        wh.retry_delay = lambda attempts, **_: 0.05
        try:
            now = time.time()
            await store.write(lambda c: sql.enqueue_webhooks(c, ["http://127.0.0.1:9/hook"], "call.missed", "{}", now))
            env.client.app[WEBHOOKS]._wake.set()
            for _ in range(100):
                rows = await store.read(
                    lambda c: c.execute("SELECT state, attempts FROM webhook_deliveries").fetchall()
                )
                if rows and rows[0][0] == "failed":
                    break
                await asyncio.sleep(0.05)
        finally:
            wh.retry_delay = original
        assert rows == [("failed", 2)]
        last_error = await store.read(lambda c: c.execute("SELECT last_error FROM webhook_deliveries").fetchone()[0])
        assert last_error
    finally:
        await env.client.close()
        await store.stop()
