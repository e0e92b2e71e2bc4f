"""Chat widget websocket (``/chat/ws``): visitors talk to the office from any allowed website.

Theory of operation: a visitor's browser opens ``/chat/ws`` and first sends ``hello`` with the token it kept in
localStorage (or none). A known token resumes its conversation (history is sent back); an unknown or missing token
gets a fresh one, which costs one "new chat" from the address's rate budget. The server stores only the token's
SHA-256; the chat identity given to the domain is derived from that hash.

Each ``message`` carries a client id chosen by the browser. It becomes the event's ``external_id``, so a message
re-sent after a dropped network or a reload is recognised by the service as a duplicate and acknowledged again
instead of stored twice. The browser keeps unacknowledged messages and re-sends them on reconnect.

Messages to the visitor (staff replies, the visitor's own messages from another tab) are pushed by
:meth:`ChatHub.push_event`, fed by the bus (``TimelineEventAdded``) and directly by the console after a reply; a
bounded memory of pushed event ids stops a message that arrives both ways from being sent twice.

Frames above ``chat_max_frame_bytes`` close the socket (1009); messages above ``chat_max_message_chars`` are refused
with an error frame; each address has token buckets for new chats and for messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from typing import Any

from aiohttp import WSMsgType, web

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.errors import GatewayError, PermanentError
from gateway.store import web as sql
from gateway.web import hours
from gateway.web.deps import WebDeps
from gateway.web.jsonable import jsonable
from gateway.web.security import RateLimiter, client_address, new_token, same_origin, token_hash

log = logging.getLogger(__name__)

_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_VISIBLE_KINDS = frozenset({"message_in", "message_out"})


def visitor_identity(visitor_hash: str) -> str:
    """The chat identity value the domain sees for a visitor (never the secret token itself)."""
    return f"web-{visitor_hash[:32]}"


def visitor_view(event: dict[str, Any]) -> dict[str, Any] | None:
    """What a visitor may see of a timeline event: chat messages only, never notes or other channels."""
    if event.get("channel") != "chat" or event.get("kind") not in _VISIBLE_KINDS:
        return None
    meta = event.get("meta") or {}
    return {
        "id": event["id"],
        "from": "visitor" if event["kind"] == "message_in" else "staff",
        "body": event.get("body", ""),
        "at": event.get("occurred_at"),
        "client_id": meta.get("client_id") if isinstance(meta, dict) else None,
    }


class _Visitor:
    """One open visitor socket."""

    __slots__ = ("conversation_id", "last_seen", "remote", "visitor_hash", "ws")

    def __init__(self, ws: web.WebSocketResponse, remote: str) -> None:
        self.ws = ws
        self.remote = remote
        self.visitor_hash = ""
        self.conversation_id: int | None = None
        self.last_seen = time.monotonic()


class ChatHub:
    """Owns the visitors' websockets and pushes conversation events to them."""

    #: Open visitor sockets one network address may hold at once (a small office site rarely sees more than a few).
    max_sockets_per_address = 50

    def __init__(self, deps: WebDeps) -> None:
        self.deps = deps
        cfg = deps.config
        self.new_chats = RateLimiter(
            cfg.chat_new_per_address_per_hour / 3600.0, float(cfg.chat_new_per_address_per_hour)
        )
        self.messages = RateLimiter(cfg.chat_messages_per_minute / 60.0, float(cfg.chat_burst))
        self._by_conversation: dict[int, set[_Visitor]] = {}
        self._all: set[_Visitor] = set()
        self._pushed: OrderedDict[int, None] = OrderedDict()
        self._per_address: dict[str, int] = {}

    @property
    def socket_count(self) -> int:
        """Open visitor sockets."""
        return len(self._all)

    # ------------------------------------------------------------------------------------------------ sockets

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
        v = _Visitor(ws, remote)
        self._all.add(v)
        self._per_address[remote] = self._per_address.get(remote, 0) + 1
        try:
            while True:  # inlined rather than a helper: an idle socket should keep as few frames as possible
                msg = await ws.receive()
                v.last_seen = time.monotonic()
                if msg.type is WSMsgType.TEXT:
                    await self._text(v, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await self._error(v, "binary", "Binary frames are not accepted; send JSON text.")
                elif msg.type is WSMsgType.ERROR:
                    log.info("chat websocket closed on error: %s", ws.exception())
                    break
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                del msg  # an idle socket keeps nothing of its last frame
        finally:
            self._forget(v)
            left = self._per_address.get(remote, 1) - 1
            if left > 0:
                self._per_address[remote] = left
            else:
                self._per_address.pop(remote, None)
        return ws

    def _forget(self, v: _Visitor) -> None:
        self._all.discard(v)
        if v.conversation_id is not None:
            peers = self._by_conversation.get(v.conversation_id)
            if peers is not None:
                peers.discard(v)
                if not peers:
                    del self._by_conversation[v.conversation_id]

    def _bind(self, v: _Visitor, conversation_id: int) -> None:
        if v.conversation_id == conversation_id:
            return
        self._forget(v)
        self._all.add(v)
        v.conversation_id = conversation_id
        self._by_conversation.setdefault(conversation_id, set()).add(v)

    async def _text(self, v: _Visitor, raw: str) -> None:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            await self._error(v, "bad_json", "Frames must be JSON objects.")
            return
        if not isinstance(data, dict):
            await self._error(v, "bad_json", "Frames must be JSON objects.")
            return
        try:
            await self._dispatch(v, data)
        except asyncio.CancelledError:
            raise
        except GatewayError as err:
            log.info("chat frame refused: %s", type(err).__name__)
            await self._error(v, "refused", str(err), client_id=data.get("client_id"))
        except Exception:
            log.exception("chat frame %s failed", str(data.get("type"))[:20])
            await self._error(
                v, "internal", "Sorry, that did not work. Please try again.", client_id=data.get("client_id")
            )

    async def sweep(self, idle_seconds: float) -> int:
        """Close visitor sockets that sent nothing (not even a ping) for ``idle_seconds``; returns how many."""
        cutoff = time.monotonic() - idle_seconds
        stale = [v for v in self._all if v.last_seen < cutoff]
        for v in stale:
            await v.ws.close(code=1001, message=b"idle")
        if stale:
            log.info("chat: closed %d idle visitor socket(s)", len(stale))
        return len(stale)

    async def run_sweeper(self) -> None:
        """Forever: sweep idle sockets every third of the idle limit (owned by the app's lifecycle)."""
        idle = float(self.deps.config.chat_idle_seconds)
        while True:
            await asyncio.sleep(max(1.0, idle / 3))
            await self.sweep(idle)

    async def _error(self, v: _Visitor, code: str, message: str, **extra: Any) -> None:
        if not v.ws.closed:
            await v.ws.send_json({"type": "error", "code": code, "message": message, **extra})

    async def _dispatch(self, v: _Visitor, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "hello":
            await self._hello(v, data)
            return
        if not v.visitor_hash:
            await self._error(v, "hello_first", "Send hello first.")
            return
        if kind == "message":
            await self._message(v, data)
        elif kind == "continue_by_text":
            await self._continue_by_text(v, data)
        elif kind == "call_me":
            await self._call_me(v, data)
        elif kind == "ping":
            await v.ws.send_json({"type": "pong"})
        else:
            await self._error(v, "unknown_type", f"Unknown frame type {str(kind)[:40]!r}.")

    # ------------------------------------------------------------------------------------------------ frames

    async def _hello(self, v: _Visitor, data: dict[str, Any]) -> None:
        if v.visitor_hash:
            await self._error(v, "hello_twice", "Already said hello.")
            return
        store = self.deps.store
        now = time.time()
        token = data.get("token")
        row = None
        if isinstance(token, str) and 20 <= len(token) <= 100:
            h = token_hash(token)
            row = await store.read(lambda c: sql.visitor(c, h))
        if row is None:
            if not self.new_chats.allow(v.remote):
                log.warning("chat: too many new chats from one address, refusing")
                await self._error(
                    v,
                    "rate_limited",
                    "Too many new chats from your network. Please try again later.",
                )
                await v.ws.close(code=4429, message=b"rate limited")
                return
            token = new_token()
            h = token_hash(token)
            await store.write(lambda c: sql.upsert_visitor(c, h, now, remote=v.remote))
            history: list[dict[str, Any]] = []
        else:
            await store.write(lambda c: sql.upsert_visitor(c, h, now))
            history = []
            if row.conversation_id is not None:
                conv = row.conversation_id
                try:
                    events = jsonable(await self.deps.service.timeline(conv, limit=200))
                except LookupError:
                    events = []
                history = [x for x in (visitor_view(e) for e in events) if x is not None]
                # After a merge the timeline lives in the kept conversation: follow it for pushes.
                self._bind(v, int(events[-1]["conversation_id"]) if events else conv)
        v.visitor_hash = h
        cfg = self.deps.config
        open_now = hours.is_open(cfg.business_hours, cfg.timezone, now)
        await v.ws.send_json(
            {
                "type": "welcome",
                "token": token,
                "history": history,
                "business": cfg.business_name,
                "greeting": cfg.greeting,
                "after_hours": not open_now,
                "after_hours_message": cfg.after_hours_message if not open_now else "",
                "max_chars": cfg.chat_max_message_chars,
            }
        )

    def _client_id(self, data: dict[str, Any]) -> str:
        cid = data.get("client_id")
        if not isinstance(cid, str) or not _CLIENT_ID.match(cid):
            raise PermanentError("client_id must be 8-64 letters, digits, '-' or '_'.")
        return cid

    async def _ingest(self, v: _Visitor, kind: EventKind, client_id: str, body: str, meta: dict[str, Any]) -> Any:
        item = Inbound(
            channel=Channel.CHAT,
            kind=kind,
            identity_kind=IdentityKind.CHAT,
            identity_value=visitor_identity(v.visitor_hash),
            external_id=f"web:{v.visitor_hash[:24]}:{client_id}",
            body=body,
            meta={"client_id": client_id, **meta},
            occurred_at=time.time(),
            display_name=None,
        )
        result = await self.deps.service.ingest(item)
        if v.conversation_id != result.conversation_id:
            vh, contact, conv = v.visitor_hash, result.contact_id, result.conversation_id
            await self.deps.store.write(
                lambda c: sql.upsert_visitor(c, vh, time.time(), contact_id=contact, conversation_id=conv)
            )
            self._bind(v, conv)
        return result

    async def _message(self, v: _Visitor, data: dict[str, Any]) -> None:
        client_id = self._client_id(data)
        body = data.get("body")
        if not isinstance(body, str) or not body.strip():
            await self._error(v, "empty", "Type a message first.", client_id=client_id)
            return
        limit = self.deps.config.chat_max_message_chars
        if len(body) > limit:
            await self._error(v, "too_long", f"Messages can be at most {limit} characters.", client_id=client_id)
            return
        if not self.messages.allow(v.remote):
            await self._error(
                v,
                "rate_limited",
                "You are sending messages too fast. Please wait a moment.",
                client_id=client_id,
            )
            return
        result = await self._ingest(v, EventKind.MESSAGE_IN, client_id, body, {})
        await v.ws.send_json(
            {
                "type": "ack",
                "client_id": client_id,
                "event_id": result.event_id,
                "duplicate": bool(result.duplicate),
            }
        )
        if not result.duplicate:
            await self.push_event(
                {
                    "id": result.event_id,
                    "conversation_id": result.conversation_id,
                    "kind": "message_in",
                    "channel": "chat",
                    "body": body,
                    "meta": {"client_id": client_id},
                    "occurred_at": time.time(),
                },
                exclude=v,
            )

    async def _continue_by_text(self, v: _Visitor, data: dict[str, Any]) -> None:
        client_id = self._client_id(data)
        phone = data.get("phone")
        if not isinstance(phone, str) or not 3 <= len(phone) <= 32:
            await self._error(v, "bad_phone", "Enter your mobile number.", client_id=client_id)
            return
        from gateway.domain.phone import normalize_phone  # noqa: PLC0415 - domain helper, import cost once

        number = normalize_phone(phone, self.deps.region)
        if not number.valid or not number.e164:
            await self._error(
                v,
                "bad_phone",
                "That does not look like a mobile number. Include the country code, e.g. +1 555 123 4567.",
                client_id=client_id,
            )
            return
        result = await self._ingest(
            v,
            EventKind.HANDOFF,
            client_id,
            "Visitor asked to continue by text message.",
            {"handoff": "sms", "phone": number.e164},
        )
        service = self.deps.service
        conv, _merge = await service.link_identity(
            result.conversation_id, IdentityKind.PHONE, number.e164, author="chat-widget"
        )
        if conv != v.conversation_id:
            vh = v.visitor_hash
            await self.deps.store.write(lambda c: sql.upsert_visitor(c, vh, time.time(), conversation_id=conv))
            self._bind(v, conv)
        await service.update_conversation(conv, preferred_channel=Channel.SMS.value)
        continuity = self.deps.continuity
        if continuity is None or not continuity.config.chat_sms_enabled:
            # Without the continuation rule (which quotes the chat and passes the restraint), a plain first text.
            text = f"{self.deps.config.business_name}: this is where we continue your chat by text. Reply here."
            try:
                await service.enqueue_outbound(
                    conv, Channel.SMS, number.e164, text, automated=True, author="chat-widget"
                )
            except PermanentError as err:
                await self._error(v, "sms_refused", str(err), client_id=client_id)
                return
        await v.ws.send_json({"type": "handoff", "mode": "sms", "client_id": client_id, "ok": True})

    async def _call_me(self, v: _Visitor, data: dict[str, Any]) -> None:
        client_id = self._client_id(data)
        phone = data.get("phone")
        if not isinstance(phone, str) or not 3 <= len(phone) <= 32:
            await self._error(v, "bad_phone", "Enter the number we should call.", client_id=client_id)
            return
        from gateway.domain.phone import normalize_phone  # noqa: PLC0415

        number = normalize_phone(phone, self.deps.region)
        if not number.valid or not number.e164:
            await self._error(
                v,
                "bad_phone",
                "That does not look like a phone number. Include the country code, e.g. +1 555 123 4567.",
                client_id=client_id,
            )
            return
        result = await self._ingest(
            v,
            EventKind.HANDOFF,
            client_id,
            "Visitor asked for a call back.",
            {"handoff": "call_me", "phone": number.e164},
        )
        await self.deps.service.update_conversation(result.conversation_id, next_step="Call back")
        await v.ws.send_json({"type": "handoff", "mode": "call", "client_id": client_id, "ok": True})

    # ------------------------------------------------------------------------------------------------- push

    def _mark_pushed(self, event_id: int) -> bool:
        if event_id in self._pushed:
            return False
        self._pushed[event_id] = None
        while len(self._pushed) > 4096:
            self._pushed.popitem(last=False)
        return True

    async def push_event(self, event: dict[str, Any], *, exclude: _Visitor | None = None) -> int:
        """Send a timeline event to every visitor socket of its conversation (once per event id).

        ``exclude`` is the socket a visitor message came from: it already shows it (and gets an ack).
        """
        view = visitor_view(event)
        if view is None:
            return 0
        peers = self._by_conversation.get(int(event["conversation_id"]))
        if not peers or not self._mark_pushed(int(event["id"])):
            return 0
        targets = [p for p in peers if p is not exclude]
        return await self.fan_out(targets, json.dumps({"type": "message", "message": view}))

    async def fan_out(self, peers: list[_Visitor], text: str) -> int:
        """Send one frame to many sockets; returns how many got it.

        The payload is encoded once and handed to each socket as a ready frame body; a socket whose transport is
        paused (slow client) only delays its own write, never drops the frame for the others.
        """
        payload = text.encode("utf-8")
        sent = 0
        for p in peers:
            if p.ws.closed:
                continue
            try:
                await p.ws.send_frame(payload, WSMsgType.TEXT)
                sent += 1
            except (ConnectionError, RuntimeError):
                log.debug("chat push to a closing socket failed")
        return sent

    async def broadcast_all(self, text: str) -> int:
        """Send a frame to every visitor socket (notices such as "we are closed now")."""
        return await self.fan_out(list(self._all), text)

    async def close_all(self) -> None:
        """Close every visitor socket (shutdown)."""
        for v in list(self._all):
            await v.ws.close(code=1001, message=b"server shutdown")


CHAT_HUB = web.AppKey("chat_hub", ChatHub)
