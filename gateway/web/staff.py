"""Staff live updates and screen-pop (``/staff/ws``), fed by the bus.

Theory of operation: one consumer task reads the bus subscription ``web`` and fans each event out:

* ``TimelineEventAdded`` -> every staff socket (the console updates inbox and open timeline), the chat hub (a staff
  reply reaches the visitor) and the webhook queue.
* ``ConversationUpdated`` -> every staff socket.
* ``CallRinging`` -> only the sockets of staff bound to that extension get a context card. The hub remembers which
  extensions a call rang, so ``CallAnswered`` can tell them: the card stays on the answering extension and goes
  everywhere else. ``CallEnded`` turns the card into the call's timeline entry (the console keeps it, marked ended,
  linked to the conversation) and the hub forgets the call.

The hub subscribes to the classes in :data:`WEB_EVENTS` and dispatches with ``match`` on them (the classes live
in :mod:`gateway.domain.events`, so the web layer does not depend on the voice channel). A socket that cannot keep
up (send buffer full) is closed rather than allowed to slow the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from gateway.domain.bus import Subscription
from gateway.domain.events import (
    CallAnswered,
    CallEnded,
    CallRinging,
    ContactsMerged,
    ConversationUpdated,
    Event,
    LiveTranscript,
    TimelineEventAdded,
    VoicemailRecorded,
)
from gateway.domain.handoff import handoff_card
from gateway.domain.spine import SpineService
from gateway.store import web as sql
from gateway.supervise import cancel_and_wait
from gateway.web import hours
from gateway.web.deps import WebDeps
from gateway.web.jsonable import jsonable
from gateway.web.security import same_origin

log = logging.getLogger(__name__)

EventHook = Callable[[Event], Awaitable[None]]

#: What the hub and its hooks (chat push, webhooks) take from the bus.
WEB_EVENTS: tuple[type[Event], ...] = (
    TimelineEventAdded,
    ConversationUpdated,
    ContactsMerged,
    CallRinging,
    CallAnswered,
    CallEnded,
    VoicemailRecorded,
    LiveTranscript,
)


class _StaffSocket:
    __slots__ = ("extension", "staff", "ws")

    def __init__(self, ws: web.WebSocketResponse, staff: sql.StaffRow) -> None:
        self.ws = ws
        self.staff = staff
        self.extension = staff.extension


class StaffHub:
    """Owns staff websockets and the bus consumer that feeds them."""

    def __init__(self, deps: WebDeps) -> None:
        self.deps = deps
        self._sockets: set[_StaffSocket] = set()
        self._calls: dict[str, set[str]] = {}  # call_id -> extensions that rang
        self._task: asyncio.Task[None] | None = None
        self._hooks: list[EventHook] = []
        self._sub: Subscription | None = None

    @property
    def socket_count(self) -> int:
        """Open staff sockets."""
        return len(self._sockets)

    def add_hook(self, hook: EventHook) -> None:
        """Also hand every bus event to ``hook`` (chat push, webhooks); hooks must not raise."""
        self._hooks.append(hook)

    async def start(self) -> None:
        """Subscribe to the bus and start the consumer task."""
        if self._task is not None:
            return
        self._sub = self.deps.bus.subscribe("web", maxsize=5000, types=WEB_EVENTS)
        self._task = asyncio.create_task(self._consume(self._sub), name="web-bus-consumer")

    async def stop(self) -> None:
        """Stop the consumer and close staff sockets."""
        if self._sub is not None:
            self._sub.close()
        await cancel_and_wait(self._task, owner="web")
        self._task = None
        await self.close_all()

    async def close_all(self) -> None:
        """Close every staff socket (the console reconnects when the gateway is back)."""
        for s in list(self._sockets):
            await s.ws.close(code=1001, message=b"server shutdown")

    async def _consume(self, sub: Subscription) -> None:
        async for event in sub:
            try:
                await self.dispatch(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("web: handling a bus event failed: %s", type(event))

    async def dispatch(self, event: Event) -> None:
        """Route one bus event to sockets and hooks."""
        match event:
            case TimelineEventAdded(event=entry):
                await self._send_all(json.dumps({"type": "event", "event": jsonable(entry)}))
            case ConversationUpdated(conversation_id=conversation_id, fields=fields):
                payload = {"type": "conversation", "conversation_id": conversation_id, "fields": jsonable(fields)}
                await self._send_all(json.dumps(payload))
            case ContactsMerged():
                await self._send_all(json.dumps({"type": "merged", "merge": jsonable(event)}))
            case CallRinging():
                await self._call_ringing(event)
            case CallAnswered(call_id=call_id, extension=extension):
                rang = self._calls.get(call_id, set())
                msg = json.dumps({"type": "call_answered", "call_id": call_id, "extension": extension})
                for ext in rang | ({extension} if extension else set()):
                    await self._send_extension(ext, msg)
            case LiveTranscript(call_id=call_id, extension=extension) if extension:
                # Words on the call go only to the staff member on it (the screen-pop of that extension).
                msg = json.dumps(
                    {
                        "type": "live_transcript",
                        "call_id": call_id,
                        "conversation_id": event.conversation_id,
                        "side": event.side,
                        "text": event.text,
                    }
                )
                await self._send_extension(extension, msg)
            case CallEnded(call_id=call_id, conversation_id=conversation_id, outcome=outcome, call=call):
                msg = json.dumps(
                    {
                        "type": "call_ended",
                        "call_id": call_id,
                        "conversation_id": conversation_id,
                        "outcome": jsonable(outcome),
                        "answered_by": call.answered_by,
                    }
                )
                for ext in self._calls.pop(call_id, set()):
                    await self._send_extension(ext, msg)
        for hook in self._hooks:
            try:
                await hook(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("web: event hook failed on %s", type(event))

    async def _call_ringing(self, event: CallRinging) -> None:
        if not event.extension:
            return
        self._calls.setdefault(event.call_id, set()).add(event.extension)
        headline: str | None = None
        handoff: dict[str, object] | None = None
        if event.conversation_id is not None:
            if self.deps.spine is None:
                self.deps.spine = SpineService(self.deps.store, self.deps.bus, timezone=self.deps.config.timezone)
            try:
                spine = await self.deps.spine.spine(event.conversation_id)
                headline = spine.summary
                recent = await self.deps.service.timeline(event.conversation_id, limit=30)
            except LookupError:
                spine = None
            if spine is not None:
                cfg = self.deps.config
                quiet = hours.in_quiet_hours(cfg.quiet_hours, cfg.timezone, time.time())
                promised = (
                    [] if self.deps.promises is None else await self.deps.promises.promises(spine.conversation_id)
                )
                card_ = handoff_card(
                    spine, recent, quiet_hours=quiet, promises=[p for p in promised if p.status != "dismissed"]
                )
                handoff = jsonable(card_)
        card = {
            "headline": headline,
            "handoff": handoff,
            "type": "call_ringing",
            "call_id": event.call_id,
            "extension": event.extension,
            "caller": event.caller,
            "caller_name": event.caller_name,
            "conversation_id": event.conversation_id,
            "summary": jsonable(event.summary),
            "at": event.occurred_at or time.time(),
        }
        await self._send_extension(event.extension, json.dumps(card))

    async def _send(self, s: _StaffSocket, text: str) -> None:
        if s.ws.closed:
            return
        try:
            await asyncio.wait_for(s.ws.send_str(text), timeout=5.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            log.info("web: dropping a staff socket that cannot keep up")
            self._sockets.discard(s)
            await s.ws.close(code=1013, message=b"too slow")

    async def _send_all(self, text: str) -> None:
        for s in list(self._sockets):
            await self._send(s, text)

    async def _send_extension(self, extension: str, text: str) -> None:
        for s in list(self._sockets):
            if s.extension and s.extension == extension:
                await self._send(s, text)

    async def handle(self, request: web.Request, session: sql.SessionRow) -> web.StreamResponse:
        """``GET /staff/ws`` for a logged-in staff member (Origin must be the gateway itself)."""
        if not same_origin(request, request.headers.get("Origin")):
            raise web.HTTPForbidden(
                text=json.dumps({"error": "cross-origin staff websocket refused"}),
                content_type="application/json",
            )
        ws = web.WebSocketResponse(max_msg_size=4096, compress=False, heartbeat=30.0)
        await ws.prepare(request)
        s = _StaffSocket(ws, session.staff)
        self._sockets.add(s)
        try:
            await ws.send_json({"type": "hello", "username": s.staff.username, "extension": s.extension or None})
            async for msg in ws:
                if msg.type is WSMsgType.TEXT and msg.data == '{"type":"ping"}':
                    await ws.send_str('{"type":"pong"}')
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            self._sockets.discard(s)
        return ws


STAFF_HUB = web.AppKey("staff_hub", StaffHub)
