"""Chat widget websocket (``/chat/ws``): the web side of the chat channel (:mod:`gateway.channels.chat`).

This module only serves the websocket: it checks the Origin, the global and per-address socket caps, upgrades the
connection, and hands every text frame to :meth:`ChatChannel.frame`. Sessions, hand-offs, identity claims and what a
visitor may see live in the channel.

Frames above ``chat_max_frame_bytes`` close the socket (1009). When ``chat_max_sockets`` visitor sockets are open,
new ones are refused with 503 before the upgrade (the widget then says the chat is busy), so idle sockets cannot
use up the process's file descriptors that the console, FastAGI and the modem need.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from gateway.channels.chat.channel import ChatChannel, ChatSettings, VisitorSession, visitor_identity
from gateway.web import hours
from gateway.web.deps import WebDeps
from gateway.web.security import RateLimiter, client_address, same_origin

if TYPE_CHECKING:
    from gateway.continuity.engine import ContinuityEngine

log = logging.getLogger(__name__)

__all__ = ["BUSY_MESSAGE", "CHAT_HUB", "ChatHub", "visitor_identity"]

#: What the widget shows when the global socket cap refuses it.
BUSY_MESSAGE = "The chat is very busy right now. Please try again in a few minutes, or call us."


class _WsOutlet:
    """The channel's :class:`~gateway.channels.chat.channel.Outlet` over an aiohttp websocket."""

    __slots__ = ("ws",)

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send_text(self, payload: bytes) -> None:
        await self.ws.send_frame(payload, WSMsgType.TEXT)

    async def close(self, code: int, reason: bytes) -> None:
        await self.ws.close(code=code, message=reason)


class _RulesCallTimes:
    """The chat channel's :class:`~gateway.channels.chat.channel.CallTimes` from the continuity rules (looked up at
    each use: the daemon hands the engine over once it runs)."""

    __slots__ = ("deps",)

    def __init__(self, deps: WebDeps) -> None:
        self.deps = deps

    def _engine(self) -> ContinuityEngine | None:
        engine = self.deps.continuity
        return engine if engine is not None and engine.can_call() else None

    def slots(self) -> list[float]:
        engine = self._engine()
        return [] if engine is None else engine.call_slots()

    def fit(self, at: float) -> tuple[float | None, str, str]:
        engine = self._engine()
        if engine is None:
            return None, "", "we cannot book a call-back time right now; ask without a time and we will call you soon"
        fitted = engine.fit_call_time(at)
        return fitted.at, fitted.moved, fitted.why


class ChatHub:
    """Serves visitor websockets for the chat channel."""

    #: Open visitor sockets one network address may hold at once (a small office site rarely sees more than a few).
    max_sockets_per_address = 50

    def __init__(self, deps: WebDeps) -> None:
        self.deps = deps
        cfg = deps.config
        self.max_sockets = cfg.chat_max_sockets
        self.channel = ChatChannel(
            deps.service,
            deps.store,
            ChatSettings(
                max_message_chars=cfg.chat_max_message_chars,
                business_name=cfg.business_name,
                handoffs_per_day=cfg.chat_handoffs_per_day,
                code_ttl_s=float(cfg.chat_code_ttl_seconds),
                code_attempts=cfg.chat_code_attempts,
                sms_available=deps.sms_available,
                region=deps.region,
            ),
            new_chats=RateLimiter(cfg.chat_new_per_address_per_hour / 3600.0, float(cfg.chat_new_per_address_per_hour)),
            messages=RateLimiter(cfg.chat_messages_per_minute / 60.0, float(cfg.chat_burst)),
            welcome=self._welcome,
            call_times=_RulesCallTimes(deps),
        )
        self._per_address: dict[str, int] = {}
        self.refused_busy = 0

    def _welcome(self, now: float) -> Mapping[str, Any]:
        cfg = self.deps.config
        open_now = hours.is_open(cfg.business_hours, cfg.timezone, now)
        return {
            "business": cfg.business_name,
            "greeting": cfg.greeting,
            "after_hours": not open_now,
            "after_hours_message": cfg.after_hours_message if not open_now else "",
            "timezone": cfg.timezone,  # the widget says so when the visitor's own zone differs
        }

    @property
    def socket_count(self) -> int:
        """Open visitor sockets."""
        return self.channel.socket_count

    @property
    def _all(self) -> set[VisitorSession]:
        return self.channel.sessions

    def origin_allowed(self, request: web.Request) -> bool:
        """True if the websocket's Origin is the gateway itself or a configured site."""
        origin = request.headers.get("Origin")
        if not origin:
            return False
        if same_origin(request, origin):
            return True
        return origin.rstrip("/") in {o.rstrip("/") for o in self.deps.config.allowed_origins}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /chat/ws``: one visitor connection."""
        if not self.origin_allowed(request):
            log.info("chat websocket refused: origin not allowed")
            raise web.HTTPForbidden(
                text=json.dumps(
                    {"error": "origin not allowed: add this site to [web] allowed_origins in the gateway config"}
                ),
                content_type="application/json",
            )
        if self.channel.socket_count >= self.max_sockets:
            self.refused_busy += 1
            log.warning("chat: %d sockets open (web.chat_max_sockets), refusing a new one", self.channel.socket_count)
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": BUSY_MESSAGE, "code": "busy"}),
                content_type="application/json",
                headers={"Retry-After": "60"},
            )
        remote = client_address(request)
        if self._per_address.get(remote, 0) >= self.max_sockets_per_address:
            log.warning("chat: too many open sockets from one address, refusing")
            raise web.HTTPTooManyRequests(
                text=json.dumps({"error": "too many open chats from your network; close some and try again"}),
                content_type="application/json",
            )
        # No per-socket heartbeat timer: the widget pings, and one sweeper closes idle sockets (see sweep()).
        ws = web.WebSocketResponse(max_msg_size=self.deps.config.chat_max_frame_bytes, compress=False)
        await ws.prepare(request)
        session = self.channel.open(_WsOutlet(ws), remote)
        self._per_address[remote] = self._per_address.get(remote, 0) + 1
        try:
            while True:  # inlined rather than a helper: an idle socket should keep as few frames as possible
                msg = await ws.receive()
                session.last_seen = time.monotonic()
                if msg.type is WSMsgType.TEXT:
                    await self.channel.frame(session, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await self.channel.error(session, "binary", "Binary frames are not accepted; send JSON text.")
                elif msg.type is WSMsgType.ERROR:
                    log.info("chat websocket closed on error: %s", ws.exception())
                    break
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                del msg  # an idle socket keeps nothing of its last frame
        finally:
            self.channel.close(session)
            left = self._per_address.get(remote, 1) - 1
            if left > 0:
                self._per_address[remote] = left
            else:
                self._per_address.pop(remote, None)
        return ws

    async def push_event(self, event: dict[str, Any]) -> int:
        """Push a staff chat reply to the visitor it is addressed to."""
        return await self.channel.push_event(event)

    async def fan_out(self, peers: list[VisitorSession], text: str) -> int:
        """Send one frame to many sessions; returns how many got it."""
        return await self.channel.fan_out(peers, text)

    async def broadcast_all(self, text: str) -> int:
        """Send a frame to every visitor socket."""
        return await self.channel.broadcast_all(text)

    async def sweep(self, idle_seconds: float) -> int:
        """Close visitor sockets idle for ``idle_seconds``."""
        return await self.channel.sweep(idle_seconds)

    async def run_sweeper(self) -> None:
        """Forever: sweep idle sockets every third of the idle limit (owned by the app's lifecycle)."""
        idle = float(self.deps.config.chat_idle_seconds)
        while True:
            await asyncio.sleep(max(1.0, idle / 3))
            await self.sweep(idle)

    async def close_all(self) -> None:
        """Close every visitor socket (shutdown)."""
        await self.channel.close_all()


CHAT_HUB = web.AppKey("chat_hub", ChatHub)
