"""HTML pages: login, console, status, demo. Pages are static shells; data arrives as JSON and is rendered as text.

Templates use ``string.Template`` placeholders and every value put in is HTML-escaped here, so no user text can
become markup. Scripts live in ``static/`` (the CSP forbids inline script).
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import sqlite3
import string
import time
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web

from gateway.store import queries as q
from gateway.store import web as sql
from gateway.store.db import Store
from gateway.web.keys import AUTH, DEPS
from gateway.web.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    client_address,
    hash_password,
    new_token,
    require_staff,
    token_hash,
    verify_password,
)

log = logging.getLogger(__name__)

_cache: dict[str, string.Template] = {}


def render(name: str, status: int = 200, **values: str) -> web.Response:
    """Render ``templates/<name>`` with HTML-escaped ``values``."""
    tpl = _cache.get(name)
    if tpl is None:
        text = resources.files("gateway.web").joinpath("templates", name).read_text(encoding="utf-8")
        tpl = _cache[name] = string.Template(text)
    body = tpl.safe_substitute({k: html.escape(v, quote=True) for k, v in values.items()})
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths are allowed as redirect targets after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/console"
    parts = urlsplit(target)
    return "/console" if parts.scheme or parts.netloc else target


def _login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    cfg = request.app[DEPS].config
    token = new_token()
    resp = render(
        "login.html",
        status=status,
        csrf=token,
        error=error,
        error_hidden="" if error else "hidden",
        next=_safe_next(request.query.get("next")),
        business=cfg.business_name,
    )
    resp.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=cfg.secure_cookies,
        path="/login",
        max_age=3600,
    )
    return resp


async def login_get(request: web.Request) -> web.StreamResponse:
    """``GET /login``."""
    if request[AUTH].session is not None:
        raise web.HTTPFound("/console")
    return _login_page(request)


async def login_post(request: web.Request) -> web.StreamResponse:
    """``POST /login``: check CSRF double-submit, lockout, then the argon2 hash."""
    deps = request.app[DEPS]
    cfg = deps.config
    form = await request.post()
    sent = str(form.get("csrf_token", ""))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not sent or not cookie or sent != cookie:
        return _login_page(request, "Your login form expired. Please try again.", status=403)
    username = str(form.get("username", "")).strip()[:100]
    password = str(form.get("password", ""))[:1000]
    addr = client_address(request)
    user_key, addr_key = f"user:{username.lower()}|{addr}", f"addr:{addr}"
    keys = [(user_key, cfg.login_free_failures), (addr_key, cfg.login_address_free_failures)]
    now = time.time()
    wait = await deps.store.write(
        lambda c: sql.reserve_login_attempt(
            c,
            keys,
            now,
            window=cfg.login_window_seconds,
            base_delay=cfg.login_delay_seconds,
            max_delay=cfg.login_max_delay_seconds,
        )
    )
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        log.warning("web login refused: attempts from one address are being spaced out after repeated failures")
        page = _login_page(
            request,
            f"Too many wrong passwords from here. Wait {seconds} second(s), then try again.",
            status=429,
        )
        page.headers["Retry-After"] = str(seconds)
        return page
    staff = await deps.store.read(lambda c: q.staff_by_username(c, username))
    stored = staff.password_hash if staff is not None and staff.password_hash else ""
    ok = await asyncio.to_thread(verify_password, stored, password)
    if not ok or staff is None:
        # The failure was counted when the attempt was reserved.
        log.info("web login failed")
        return _login_page(request, "Wrong username or password.", status=401)
    session = new_token()
    csrf = new_token()
    h = token_hash(session)
    sid = staff.id

    def ok_op(c: sqlite3.Connection) -> None:
        sql.login_succeeded(c, user_key, addr_key)
        sql.create_session(c, h, sid, csrf, now, cfg.session_ttl_seconds, addr)

    await deps.store.write(ok_op)
    log.info("web login: staff %s", staff.username)
    resp = web.HTTPFound(_safe_next(str(form.get("next", ""))))
    resp.set_cookie(
        SESSION_COOKIE,
        session,
        httponly=True,
        samesite="Strict",
        secure=cfg.secure_cookies,
        path="/",
        max_age=cfg.session_ttl_seconds,
    )
    resp.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    """``POST /logout`` (CSRF checked by the middleware)."""
    auth = request[AUTH]
    if auth.session_hash:
        h = auth.session_hash
        await request.app[DEPS].store.write(lambda c: sql.delete_session(c, h))
    resp = web.HTTPFound("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


async def logout_everywhere(request: web.Request) -> web.StreamResponse:
    """``POST /logout/all``: end every session of the logged-in staff member (a lost laptop, a shared PC)."""
    session = require_staff(request)
    staff_id = session.staff.id
    ended = await request.app[DEPS].store.write(lambda c: sql.delete_staff_sessions(c, staff_id))
    log.info("web: staff %s signed out everywhere (%d session(s))", session.staff.username, ended)
    resp = web.HTTPFound("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


async def console(request: web.Request) -> web.StreamResponse:
    """``GET /console``: the staff console shell."""
    session = require_staff(request)
    cfg = request.app[DEPS].config
    return render(
        "console.html",
        csrf=session.csrf_token,
        user=session.staff.display_name,
        username=session.staff.username,
        extension=session.staff.extension or "",
        business=cfg.business_name,
    )


async def status_page(request: web.Request) -> web.StreamResponse:
    """``GET /status``: the operator status page shell."""
    session = require_staff(request)
    return render(
        "status.html",
        csrf=session.csrf_token,
        user=session.staff.display_name,
        business=request.app[DEPS].config.business_name,
    )


async def demo(request: web.Request) -> web.StreamResponse:
    """``GET /demo``: a sample business page embedding the widget with one script tag."""
    return render("demo.html", business=request.app[DEPS].config.business_name)


async def index(request: web.Request) -> web.StreamResponse:
    """``GET /``."""
    raise web.HTTPFound("/console")


async def create_staff_user(
    store: Store,
    username: str,
    password: str,
    *,
    display_name: str = "",
    extension: str = "",
    role: str = "staff",
) -> int:
    """Create or update a staff login with an argon2 hash (used by tests, the CLI and the demo)."""
    pw_hash = await asyncio.to_thread(hash_password, password)
    now = time.time()

    def op(c: sqlite3.Connection) -> int:
        sid = q.upsert_staff(c, username, display_name or username, extension or None, role, now)
        q.set_password_hash(c, username, pw_hash)
        return sid

    return await store.write(op)
