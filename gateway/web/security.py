"""Security plumbing: password hashing, tokens, rate limits, headers, sessions, CSRF and JSON errors.

Theory of operation: every request passes ``gateway_middleware`` and one response hook.

1. It turns our errors into clear responses (JSON under ``/api``, ``/chat`` and ``/staff``), so
   bad input gets a 4xx that says what is wrong and how to fix it, never a stack trace.
2. Before calling the handler it resolves who is calling: a console session (cookie -> SHA-256 ->
   ``web_sessions`` row) or an API bearer token (hash looked up in ``api_tokens``). For a state-changing
   method it then checks CSRF: a session caller must echo its session's CSRF token in ``X-CSRF-Token`` or
   the ``csrf_token`` form field; a bearer-token caller is exempt (no ambient credential); an anonymous
   caller may only POST the login form, which carries a double-submit token from its pre-login cookie.
3. The ``on_response_prepare`` hook adds the security headers (CSP without inline script, nosniff, no framing).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.errors import PermanentError, TransientError, ValidationError
from gateway.store import web as sql
from gateway.web.keys import AUTH, DEPS

log = logging.getLogger(__name__)

SESSION_COOKIE = "gw_session"
LOGIN_CSRF_COOKIE = "gw_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
STAFF_SCOPES = frozenset({"read", "send"})
ADMIN_SCOPES = frozenset({"read", "send", "admin"})

_hasher = PasswordHasher()
# A real hash of a random password: verifying against it for unknown users keeps login timing uniform.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def hash_password(password: str) -> str:
    """Argon2id hash of a staff password (blocking, ~50 ms: call from a thread in async code)."""
    if len(password) < 8:
        raise ValidationError("password too short: use at least 8 characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if ``password`` matches; a malformed stored hash counts as a mismatch (blocking)."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A fresh unguessable token (cookie, visitor, API, CSRF)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The SHA-256 hex digest stored in place of a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def sign_payload(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 webhook signature over ``timestamp + "." + body`` (hex)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return mac.hexdigest()


class RateLimiter:
    """Token buckets keyed by a string (usually the client address).

    ``rate`` tokens per second refill a bucket of ``burst`` tokens; :meth:`allow` spends one. Idle buckets are
    forgotten so an address scan cannot grow memory without bound.
    """

    def __init__(self, rate: float, burst: float, *, max_keys: int = 50_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        """Spend one token for ``key``; False when the bucket is empty."""
        t = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, t))
        tokens = min(self.burst, tokens + (t - last) * self.rate)
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._prune(t)
        if tokens < 1.0:
            self._buckets[key] = (tokens, t)
            return False
        self._buckets[key] = (tokens - 1.0, t)
        return True

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate if self.rate > 0 else float("inf")
        for k, (_, last) in list(self._buckets.items()):
            if now - last > full_after:
                del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()


@dataclass(frozen=True)
class Auth:
    """Who is calling: a staff session, an API token, or nobody."""

    session: sql.SessionRow | None = None
    session_hash: str | None = None
    api_token: tuple[int, str] | None = None
    scopes: frozenset[str] = frozenset()

    @property
    def staff(self) -> sql.StaffRow | None:
        """The logged-in staff member, if a console session is used."""
        return self.session.staff if self.session else None

    @property
    def actor(self) -> str:
        """Name recorded as author of what this caller does."""
        if self.session:
            return self.session.staff.username
        if self.api_token:
            return f"api:{self.api_token[1]}"
        return "anonymous"


ANONYMOUS = Auth()


def same_origin(request: web.Request, origin: str | None) -> bool:
    """True if a browser's Origin names this gateway.

    Only the host and port are compared, not the scheme: behind a TLS proxy the browser says ``https://`` while
    the request reaching us is plain http, with the Host header passed through.
    """
    if not origin:
        return False
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc == request.host.lower()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = text.strip().strip('"')
    if value.startswith("["):  # Forwarded: for="[2001:db8::1]:4711"
        value = value[1 : value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:  # 192.0.2.1:4711
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _hops(request: web.Request) -> list[str]:
    """Client hops named by the proxy headers, left (first) to right (nearest)."""
    if "Forwarded" in request.headers:
        return [str(f.get("for", "")) for f in request.forwarded]
    return [h for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]


def client_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The rate-limit key of an address: itself for IPv4, its /64 for IPv6 (one subscriber's LAN gets a /64, so
    counting single IPv6 addresses would let one client rotate through billions)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def client_address(request: web.Request) -> str:
    """Who is calling, as a rate-limit key (see :func:`client_key`).

    The TCP peer, unless it is one of ``web.trusted_proxies``: then the ``Forwarded`` (or ``X-Forwarded-For``) hops
    are read from the right, skipping trusted proxies, and the right-most untrusted hop is the client. Hops further
    left were written by the client itself and are never believed. Interned: thousands of sockets from one network
    share one string.
    """
    peer = _parse_ip(request.remote or "")
    if peer is None:
        return "unknown"
    trusted = _networks(tuple(request.app[DEPS].config.trusted_proxies))
    if trusted and any(peer in n for n in trusted):
        for hop in reversed(_hops(request)):
            address = _parse_ip(hop)
            if address is None:
                break  # garbage from the hop beyond: the last trusted proxy is the best we know
            peer = address
            if not any(address in n for n in trusted):
                break
    return sys.intern(client_key(peer))


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error body ``{"error": message, ...}`` with ``status``."""
    return web.json_response({"error": message, **extra}, status=status)


def _wants_json(request: web.Request) -> bool:
    path = request.path
    return (
        path.startswith(("/api/", "/chat/", "/staff/"))
        or path.endswith(".json")
        or "application/json" in request.headers.get("Accept", "")
    )


MAX_JSON_DEPTH = 64


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``text`` nests arrays/objects deeper than ``limit`` (brackets inside strings do not count).

    Checked before ``json.loads``, whose recursion would otherwise end in a ``RecursionError`` deep in C code.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case, at C speed
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """Parse one JSON object from a request body or a websocket frame, or raise a :class:`ValidationError` that
    says what is wrong (bad UTF-8, bad JSON, too deeply nested, not an object)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as err:
        raise ValidationError(f"body is not UTF-8 (byte {err.start}): send UTF-8 encoded JSON") from err
    if json_depth_exceeds(text):
        raise ValidationError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels: send a flat object")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValidationError(
            f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}; "
            "send a JSON object with Content-Type: application/json"
        ) from err
    except RecursionError as err:  # belt and braces: the depth check above should make this unreachable
        raise ValidationError(f"JSON nested too deeply: send a flat object of at most {MAX_JSON_DEPTH} levels") from err
    if not isinstance(data, dict):
        raise ValidationError(f"expected a JSON object, got {type(data).__name__}: wrap fields in {{...}}")
    return data


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole request body, however many TCP segments it came in, or 413 past ``max_bytes``."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await request.content.read(max_bytes + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise web.HTTPRequestEntityTooLarge(
                max_size=max_bytes,
                actual_size=total,
                text=json.dumps({"error": f"body larger than {max_bytes} bytes: send less"}),
                content_type="application/json",
            )
    return b"".join(chunks)


async def read_json(request: web.Request, *, max_bytes: int = 64 * 1024) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says exactly what is wrong."""
    return parse_json_object(await read_body(request, max_bytes))


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the caller, enforce CSRF, and map gateway errors to clear 4xx/5xx responses.

    One middleware rather than two: every open websocket keeps its middleware frames alive, so fewer is leaner.
    """
    try:
        if request.path != "/chat/ws":  # anonymous by design; skipping keeps idle visitor sockets small
            auth = await resolve_auth(request)
            request[AUTH] = auth
            if request.method in UNSAFE_METHODS:
                await _check_csrf(request, auth)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and _wants_json(request) and exc.content_type != "application/json":
            return json_error(exc.status, exc.reason if exc.text is None else exc.text.strip())
        raise
    except asyncio.CancelledError:
        raise
    except ValidationError as err:
        return _error(request, 400, str(err))
    except PermanentError as err:
        return _error(request, 409, str(err))
    except TransientError as err:
        log.warning("web %s %s: temporary failure: %s", request.method, request.path, err)
        return _error(request, 503, f"temporarily unavailable, try again shortly: {err}")


def _error(request: web.Request, status: int, message: str) -> web.Response:
    if _wants_json(request):
        return json_error(status, message)
    return web.Response(status=status, text=message, content_type="text/plain")


async def resolve_auth(request: web.Request) -> Auth:
    """Find the caller's session or API token (does not enforce anything)."""
    deps = request.app[DEPS]
    now = time.time()
    bearer = request.headers.get("Authorization", "")
    if bearer.startswith("Bearer "):
        h = token_hash(bearer[7:].strip())
        found = await deps.store.read(lambda c: sql.find_api_token(c, h, now))
        if found is not None:
            await deps.store.write(lambda c: sql.use_api_token(c, h, now))
            return Auth(api_token=(found.id, found.name), scopes=found.scopes)
        return ANONYMOUS
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        h = token_hash(cookie)
        session = await deps.store.read(lambda c: sql.session_by_hash(c, h, now))
        if session is not None:
            scopes = ADMIN_SCOPES if session.staff.role == "admin" else STAFF_SCOPES
            return Auth(session=session, session_hash=h, scopes=scopes)
    return ANONYMOUS


async def _check_csrf(request: web.Request, auth: Auth) -> None:
    if auth.api_token is not None:
        return
    if auth.session is not None:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            sent = str((await request.post()).get("csrf_token", ""))
        if sent and hmac.compare_digest(sent, auth.session.csrf_token):
            return
        raise _forbidden(request, "missing or wrong CSRF token: reload the page and try again")
    if request.path == "/login":
        return  # the login handler checks its own double-submit token
    if request.path.startswith("/api/"):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "log in or send Authorization: Bearer <api token>"}),
            content_type="application/json",
        )
    raise _forbidden(request, "not logged in or missing CSRF token: log in and try again")


def _forbidden(request: web.Request, message: str) -> web.HTTPForbidden:
    if _wants_json(request):
        return web.HTTPForbidden(text=json.dumps({"error": message}), content_type="application/json")
    return web.HTTPForbidden(text=message)


def require_staff(request: web.Request) -> sql.SessionRow:
    """The console session, or a 401 (JSON) / redirect to the login page (HTML)."""
    auth = request[AUTH]
    if auth.session is None:
        if _wants_json(request):
            raise web.HTTPUnauthorized(text=json.dumps({"error": "log in first"}), content_type="application/json")
        raise web.HTTPFound(f"/login?next={request.path}")
    return auth.session


def require_api(request: web.Request, scope: str | None = None) -> Auth:
    """A session or an API token holding ``scope``, else 401/403.

    Without an explicit scope, reading (GET/HEAD) needs ``read`` and anything that changes state needs ``send``.
    Staff sessions hold read and send; admins also ``admin``. An API token holds the scopes it was created with.
    """
    auth = request[AUTH]
    if auth.session is None and auth.api_token is None:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "log in or send Authorization: Bearer <api token>"}),
            content_type="application/json",
        )
    needed = scope or ("send" if request.method in UNSAFE_METHODS else "read")
    if needed not in auth.scopes:
        who = "this API token" if auth.session is None else "your login"
        raise web.HTTPForbidden(
            text=json.dumps({"error": f"{who} lacks the '{needed}' scope needed here", "scope": needed}),
            content_type="application/json",
        )
    return auth


def is_admin(request: web.Request) -> bool:
    """True for an admin's session or an API token with the ``admin`` scope."""
    return "admin" in request[AUTH].scopes


def content_security_policy(request: web.Request) -> str:
    """CSP for our pages: only our own scripts/styles, no inline script, websockets to ourselves."""
    return _csp_for_host(request.host)


@functools.lru_cache(maxsize=64)
def _csp_for_host(host: str) -> str:
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
        f"connect-src 'self' ws://{host} wss://{host}; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook adding the security headers to every response.

    A websocket upgrade (101) carries no document, so it gets none: that keeps thousands of open sockets lean.
    """
    if isinstance(response, web.WebSocketResponse):
        return
    h = response.headers
    h.setdefault("Content-Security-Policy", content_security_policy(request))
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.path in ("/widget.js", "/widget.css"):
        # Embedded by the business's own site.
        h["Cross-Origin-Resource-Policy"] = "cross-origin"
    else:
        h.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith(("/api/", "/console", "/status", "/login", "/media/", "/leakage")):
        h.setdefault("Cache-Control", "no-store")
