"""Logins through real HTTP: throttling per (user, address) and per address, no race, client addresses behind a
proxy, sessions that end on a password or role change, and "sign out everywhere"."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.store import web as sql
from gateway.web.pages import create_staff_user

from .conftest import PASSWORD, WebEnv, csrf_from, make_env

PROXY = {"trusted_proxies": ["127.0.0.1/32"]}
SLOW = {"login_delay_seconds": 60.0}  # a first wait long enough that a busy test machine never outlasts it


async def _form(env: WebEnv) -> str:
    page = await env.client.get("/login")
    return csrf_from(await page.text(), 'name="csrf_token" value="')


async def _post_login(env: WebEnv, token: str, user: str, password: str, **headers: str) -> tuple[int, str]:
    resp = await env.client.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": token, "next": "/console"},
        headers=headers,
        allow_redirects=False,
    )
    return resp.status, await resp.text()


async def _attempt(env: WebEnv, user: str, password: str, **headers: str) -> int:
    """One login through a freshly loaded form (each answer renews the form's token)."""
    return (await _post_login(env, await _form(env), user, password, **headers))[0]


async def test_sixty_concurrent_guesses_get_at_most_the_free_attempts_checked(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, **SLOW)
    try:
        token = await _form(env)
        passwords = [f"guess-{i}" for i in range(60)]
        passwords[55] = PASSWORD  # the 56th guess is right
        results = await asyncio.gather(*(_post_login(env, token, "alice", pw) for pw in passwords))
        statuses = Counter(status for status, _ in results)
        checked = statuses[401] + statuses[302]
        assert checked <= 5, statuses  # web.login_free_failures: only that many passwords were ever checked
        assert statuses[429] >= 55, statuses
        assert set(statuses) <= {401, 302, 429}
        if statuses[302]:  # the right guess only counts if it was among the first five reserved
            assert results[55][0] == 302
        else:
            assert results[55][0] == 429
    finally:
        await env.client.close()
        await store.stop()


async def test_strangers_elsewhere_cannot_lock_staff_out(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, **PROXY, **SLOW)
    try:
        for i in range(12):
            status = await _attempt(env, "alice", f"nope-{i}", **{"X-Forwarded-For": "198.51.100.7"})
            assert status in (401, 429)
        status = await _attempt(env, "alice", PASSWORD, **{"X-Forwarded-For": "198.51.100.7"})
        assert status == 429  # the guesser waits
        status = await _attempt(env, "alice", PASSWORD, **{"X-Forwarded-For": "203.0.113.5"})
        assert status == 302  # alice at her own desk logs in at once
    finally:
        await env.client.close()
        await store.stop()


async def _login_remote(env: WebEnv, **headers: str) -> str:
    env.client.session.cookie_jar.clear()  # a fresh browser each time
    assert await _attempt(env, "bob", PASSWORD, **headers) == 302

    def last(c: sqlite3.Connection) -> Any:
        return c.execute("SELECT remote FROM web_sessions ORDER BY created_at DESC LIMIT 1").fetchone()[0]

    return str(await env.store.read(last))


async def test_client_address_behind_a_trusted_proxy(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, **PROXY)
    try:
        # The right-most hop that is not a trusted proxy is the client; what the client wrote further left is not
        # believed.
        assert await _login_remote(env, **{"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}) == "198.51.100.7"
        assert await _login_remote(env, **{"X-Forwarded-For": "198.51.100.8, 127.0.0.1"}) == "198.51.100.8"
        assert await _login_remote(env, Forwarded='for="[2001:db8:1:2::99]:4711";proto=https') == "2001:db8:1:2::/64"
        assert await _login_remote(env, Forwarded="for=192.0.2.60, for=198.51.100.9") == "198.51.100.9"
        assert await _login_remote(env, **{"X-Forwarded-For": "not-an-address"}) == "127.0.0.1"
        assert await _login_remote(env) == "127.0.0.1"
    finally:
        await env.client.close()
        await store.stop()


async def test_forwarded_headers_are_ignored_without_trusted_proxies(web_env: WebEnv) -> None:
    assert await _login_remote(web_env, **{"X-Forwarded-For": "198.51.100.7"}) == "127.0.0.1"


async def test_ipv6_clients_are_keyed_by_their_64(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, **PROXY, **SLOW)
    try:
        # Rotating through addresses of one /64 does not buy fresh attempts.
        statuses = [
            await _attempt(env, "alice", "wrong", **{"X-Forwarded-For": f"2001:db8:5:6::{i:x}"}) for i in range(1, 8)
        ]
        assert statuses[:5] == [401] * 5
        assert statuses[5:] == [429, 429]
    finally:
        await env.client.close()
        await store.stop()


async def test_failures_per_address_space_out_every_user_from_there(tmp_path: Path) -> None:
    env, store = await make_env(tmp_path, login_address_free_failures=8, **SLOW)
    try:
        statuses = [await _attempt(env, f"user{i}", "wrong") for i in range(10)]
        assert statuses[:8] == [401] * 8
        assert statuses[8:] == [429, 429]
    finally:
        await env.client.close()
        await store.stop()


def test_the_wait_doubles_and_is_capped(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db")
    conn.execute(
        "CREATE TABLE web_login_failures (key TEXT PRIMARY KEY, failures INTEGER NOT NULL DEFAULT 0,"
        " last_failure REAL NOT NULL, locked_until REAL NOT NULL DEFAULT 0)"
    )
    keys = [("user:alice|10.0.0.1", 3)]
    now = 1000.0
    waits = []
    for _ in range(12):
        wait = sql.reserve_login_attempt(conn, keys, now, window=900, base_delay=1.0, max_delay=30.0)
        assert wait == 0.0  # we always come back exactly when allowed
        until = conn.execute("SELECT locked_until FROM web_login_failures").fetchone()[0]
        waits.append(max(0.0, until - now))
        if waits[-1]:  # an attempt before the wait is over is refused, and costs nothing
            assert sql.reserve_login_attempt(conn, keys, now, window=900, base_delay=1.0, max_delay=30.0) == waits[-1]
        now += waits[-1]
    assert waits == [0, 0, 1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    # A quiet window later everything is forgotten.
    assert sql.reserve_login_attempt(conn, keys, now + 901, window=900, base_delay=1.0, max_delay=30.0) == 0.0
    assert conn.execute("SELECT failures FROM web_login_failures").fetchone()[0] == 1


async def test_sign_out_everywhere_ends_every_session(web_env: WebEnv) -> None:
    # Two browsers: the test client's own cookie jar, and one login whose cookie we keep by hand.
    token = await _form(web_env)
    resp = await web_env.client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
    )
    assert resp.status == 302
    other_cookie = resp.cookies["gw_session"].value
    web_env.client.session.cookie_jar.clear()
    assert (await web_env.login()).status == 302
    sessions = await web_env.store.read(lambda c: c.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0])
    assert sessions == 2
    console = await web_env.client.get("/console")
    page = await console.text()
    assert "Sign out everywhere" in page
    csrf = csrf_from(page, '<meta name="csrf-token" content="')
    resp = await web_env.client.post("/logout/all", data={"csrf_token": csrf}, allow_redirects=False)
    assert resp.status == 302
    sessions = await web_env.store.read(lambda c: c.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0])
    assert sessions == 0
    assert (await web_env.client.get("/api/v1/me")).status == 401
    web_env.client.session.cookie_jar.clear()
    resp = await web_env.client.get("/api/v1/me", headers={"Cookie": f"gw_session={other_cookie}"})
    assert resp.status == 401


async def test_changing_password_or_role_ends_sessions(web_env: WebEnv) -> None:
    assert (await web_env.login()).status == 302
    assert (await web_env.client.get("/api/v1/me")).status == 200
    await create_staff_user(web_env.store, "alice", "a new password 1", display_name="Alice Kim", role="admin")
    assert (await web_env.client.get("/api/v1/me")).status == 401
    assert (await web_env.login(password="a new password 1")).status == 302
    assert (await web_env.client.get("/api/v1/me")).status == 200
    # A role change (admin -> staff) ends the sessions too, also when done straight in the database.
    await web_env.store.write(lambda c: c.execute("UPDATE staff SET role = 'staff' WHERE username = 'alice'"))
    assert (await web_env.client.get("/api/v1/me")).status == 401
    # Unrelated changes do not.
    assert (await web_env.login("bob")).status == 302
    await web_env.store.write(lambda c: c.execute("UPDATE staff SET display_name = 'Robert' WHERE username = 'bob'"))
    assert (await web_env.client.get("/api/v1/me")).status == 200
