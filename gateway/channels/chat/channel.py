"""The chat channel: visitor sessions, hand-offs and what a visitor may see.

Theory of operation: the web layer accepts a visitor's websocket and hands every text frame to
:meth:`ChatChannel.frame` together with the visitor's :class:`VisitorSession`; the channel answers through the
session's :class:`Outlet` (the web layer's websocket behind a small adapter). The first frame is ``hello`` with the
token the browser kept (or none). A known token resumes the visitor's own conversation; an unknown or missing token
gets a fresh one, which costs one "new chat" from the address's budget. Only the token's SHA-256 is stored; the chat
identity the domain sees is derived from that hash (*observed*: the widget itself vouches for it).

Each ``message`` carries a client id chosen by the browser; it becomes the event's ``external_id``, so a message
re-sent after a dropped network is acknowledged again instead of stored twice.

Trust (README "Security model"): a number typed into "Continue by text" or "Call me" is a *claim*. It is recorded on
the visitor's own conversation and nothing else happens to identities: no merge, no rebinding of the socket, nothing
revealed. "Continue by text" texts the claimed number from the visitor's own conversation; the text carries a
one-time code. The claim is verified when the number answers by SMS (the domain's ``ingest`` sees to that), when the
visitor types the code (``verify_code``), or when staff confirm it.

What a visitor sees (history on ``hello`` and live pushes): its own chat messages and the chat replies addressed to
it. A visitor that proved the number with the code also gets, in its history, the text messages of the contact that
owns the number; never notes, calls, system entries or a third contact's data.

Limits: hand-offs are idempotent by client id; at most ``handoffs_per_day`` of each kind per visitor and per
conversation in 24 hours, and each also spends a token of the address's message bucket. Whether a number is a known
customer, opted out, or refused by the number policy, the visitor gets the same answer.

Call-back times: ``call_slots`` answers with the moments the office can call (from :class:`CallTimes`, which the
continuity rules provide; none when they or the voice channel are off). ``call_me`` may carry ``at`` (unix seconds):
it is checked again here (a tampered or stale page cannot book a past moment or a closed day: such a moment is moved
to the first time the office can call, and the answer says so), and the hand-off entry carries the booked moment for
the rules to keep.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.domain.claims import CodeCheck, new_code
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound, IngestResult
from gateway.domain.phone import normalize_phone
from gateway.domain.ports import ConversationPort, StorePort
from gateway.errors import GatewayError, PermanentError
from gateway.store import claims as cq
from gateway.store import queries as q
from gateway.store import web as sql

log = logging.getLogger(__name__)

_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_CODE = re.compile(r"^\s*\d{4,8}\s*$")
_DAY = 24 * 3600.0

#: The one answer to "Continue by text", whatever became of the text (sent, opted out, refused by policy).
HANDOFF_SMS_NOTICE = "If we can text that number, a message from us is on its way. You can keep chatting here too."
SMS_UNAVAILABLE = "We cannot send text messages right now. We can call you instead, or you can keep chatting here."


class Outlet(Protocol):
    """One visitor connection as the channel needs it (the web layer adapts its websocket to this)."""

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        ...

    async def send_text(self, payload: bytes) -> None:
        """Send one ready UTF-8 JSON text frame."""
        ...

    async def close(self, code: int, reason: bytes) -> None:
        """Close the connection with a websocket close code."""
        ...


class Limiter(Protocol):
    """A token bucket keyed by client address."""

    def allow(self, key: str, now: float | None = None) -> bool:
        """Spend one token for ``key``; False when the bucket is empty."""
        ...


class CallTimes(Protocol):
    """When the office can call a visitor back (the continuity rules answer this)."""

    def slots(self) -> Sequence[float]:
        """Moments (unix seconds) the visitor may pick; empty when no call-back can be booked."""
        ...

    def fit(self, at: float) -> tuple[float | None, str, str]:
        """(moment booked or None, "" / "past" / "closed" when moved, why it was refused)."""
        ...


@dataclass(frozen=True, slots=True)
class ChatSettings:
    """What the chat channel is configured with (taken from ``[web]``)."""

    max_message_chars: int = 2000
    business_name: str = "Our office"
    handoffs_per_day: int = 1
    code_ttl_s: float = 600.0
    code_attempts: int = 5
    sms_available: bool = True
    region: str = "US"


class VisitorSession:
    """One open visitor connection and what it is allowed to see."""

    __slots__ = ("last_seen", "outlet", "own_conversation_id", "remote", "verified_contact", "visitor_hash")

    def __init__(self, outlet: Outlet, remote: str) -> None:
        self.outlet = outlet
        self.remote = remote
        self.visitor_hash = ""
        self.own_conversation_id: int | None = None
        self.verified_contact: int | None = None
        self.last_seen = time.monotonic()

    @property
    def identity(self) -> str:
        """The chat identity the domain sees for this visitor ("" before hello)."""
        return visitor_identity(self.visitor_hash) if self.visitor_hash else ""


def visitor_identity(visitor_hash: str) -> str:
    """The chat identity value the domain sees for a visitor (never the secret token itself)."""
    return f"web-{visitor_hash[:32]}"


def message_prefix(visitor_hash: str) -> str:
    """The start of the external id of every message a visitor wrote."""
    return f"web:{visitor_hash[:24]}:"


def token_hash(token: str) -> str:
    """SHA-256 hex of a visitor token (what the store keeps)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def visitor_view(event: Mapping[str, Any]) -> dict[str, Any]:
    """The shape a visitor gets for a message it may see."""
    meta = event.get("meta") or {}
    return {
        "id": event["id"],
        "from": "visitor" if event["kind"] == "message_in" else "staff",
        "body": event.get("body", ""),
        "at": event.get("occurred_at"),
        "client_id": meta.get("client_id") if isinstance(meta, Mapping) else None,
        **({"channel": event["channel"]} if event.get("channel") not in (None, "chat") else {}),
    }


def _frame(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


class ChatChannel:
    """Visitor sessions, messages, hand-offs and pushes. Owns no socket: the web layer does."""

    def __init__(
        self,
        service: ConversationPort,
        store: StorePort,
        settings: ChatSettings,
        *,
        new_chats: Limiter,
        messages: Limiter,
        welcome: Callable[[float], Mapping[str, Any]],
        call_times: CallTimes | None = None,
    ) -> None:
        self.service = service
        self.store = store
        self.settings = settings
        self.new_chats = new_chats
        self.messages = messages
        self._welcome = welcome
        self.call_times = call_times
        self.sessions: set[VisitorSession] = set()
        # Open sessions per visitor identity: one session (the usual case, no container), or a list for several tabs.
        self._by_identity: dict[str, VisitorSession | list[VisitorSession]] = {}
        self._pushed: OrderedDict[int, None] = OrderedDict()

    @property
    def socket_count(self) -> int:
        """Open visitor sessions."""
        return len(self.sessions)

    # ------------------------------------------------------------------------------------------------ sessions

    def open(self, outlet: Outlet, remote: str) -> VisitorSession:
        """A new connection (before ``hello``)."""
        session = VisitorSession(outlet, remote)
        self.sessions.add(session)
        return session

    def close(self, session: VisitorSession) -> None:
        """The connection ended."""
        self.sessions.discard(session)
        if session.visitor_hash:
            key = session.identity
            peers = self._by_identity.get(key)
            if peers is session:
                del self._by_identity[key]
            elif isinstance(peers, list):
                if session in peers:
                    peers.remove(session)
                if len(peers) == 1:
                    self._by_identity[key] = peers[0]
                elif not peers:
                    del self._by_identity[key]

    async def frame(self, session: VisitorSession, raw: str) -> None:
        """Handle one text frame from a visitor."""
        session.last_seen = time.monotonic()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            await self.error(session, "bad_json", "Frames must be JSON objects.")
            return
        if not isinstance(data, dict):
            await self.error(session, "bad_json", "Frames must be JSON objects.")
            return
        try:
            await self._dispatch(session, data)
        except asyncio.CancelledError:
            raise
        except GatewayError as err:
            log.info("chat frame refused: %s", type(err).__name__)
            await self.error(session, "refused", str(err), client_id=data.get("client_id"))
        except Exception:
            log.exception("chat frame %s failed", str(data.get("type"))[:20])
            await self.error(
                session, "internal", "Sorry, that did not work. Please try again.", client_id=data.get("client_id")
            )

    async def send(self, session: VisitorSession, data: Mapping[str, Any]) -> None:
        """Send one frame to one session (dropped silently if it is closing)."""
        if not session.outlet.closed:
            await session.outlet.send_text(_frame(data))

    async def error(self, session: VisitorSession, code: str, message: str, **extra: Any) -> None:
        """An error frame the widget shows."""
        await self.send(session, {"type": "error", "code": code, "message": message, **extra})

    async def _dispatch(self, session: VisitorSession, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "hello":
            await self._hello(session, data)
            return
        if not session.visitor_hash:
            await self.error(session, "hello_first", "Send hello first.")
            return
        if kind == "message":
            await self._message(session, data)
        elif kind == "continue_by_text":
            await self._continue_by_text(session, data)
        elif kind == "call_me":
            await self._call_me(session, data)
        elif kind == "call_slots":
            slots = list(self.call_times.slots()) if self.call_times is not None else []
            await self.send(session, {"type": "call_slots", "slots": slots})
        elif kind == "verify_code":
            await self._verify_code(session, data)
        elif kind == "ping":
            await self.send(session, {"type": "pong"})
        else:
            await self.error(session, "unknown_type", f"Unknown frame type {str(kind)[:40]!r}.")

    def _bind(self, session: VisitorSession, visitor_hash: str) -> None:
        session.visitor_hash = visitor_hash
        key = session.identity
        peers = self._by_identity.get(key)
        if peers is None:
            self._by_identity[key] = session
        elif isinstance(peers, list):
            peers.append(session)
        elif peers is not session:
            self._by_identity[key] = [peers, session]

    def _peers(self, identity: str) -> list[VisitorSession]:
        peers = self._by_identity.get(identity)
        if peers is None:
            return []
        return list(peers) if isinstance(peers, list) else [peers]

    # ------------------------------------------------------------------------------------------------ frames

    async def _hello(self, session: VisitorSession, data: dict[str, Any]) -> None:
        if session.visitor_hash:
            await self.error(session, "hello_twice", "Already said hello.")
            return
        now = time.time()
        token = data.get("token")
        row = None
        if isinstance(token, str) and 20 <= len(token) <= 100:
            h = token_hash(token)
            row = await self.store.read(lambda c: sql.visitor(c, h))
        history: list[dict[str, Any]] = []
        if row is None:
            if not self.new_chats.allow(session.remote):
                log.warning("chat: too many new chats from one address, refusing")
                await self.error(
                    session, "rate_limited", "Too many new chats from your network. Please try again later."
                )
                await session.outlet.close(4429, b"rate limited")
                return
            token = secrets.token_urlsafe(32)
            h = token_hash(token)
            remote = session.remote
            await self.store.write(lambda c: sql.upsert_visitor(c, h, now, remote=remote))
        else:
            await self.store.write(lambda c: sql.upsert_visitor(c, h, now))
            session.own_conversation_id = row.conversation_id
            session.verified_contact = await self.store.read(lambda c: cq.visitor_verified_contact(c, h))
            self._bind(session, h)
            history = await self.history(session)
        if not session.visitor_hash:
            self._bind(session, h)
        await self.send(
            session,
            {
                "type": "welcome",
                "token": token,
                "history": history,
                **self._welcome(now),
                "max_chars": self.settings.max_message_chars,
                "sms": self.settings.sms_available,
            },
        )

    async def history(self, session: VisitorSession, limit: int = 200) -> list[dict[str, Any]]:
        """What this visitor may see of its conversation, oldest first."""
        own = session.own_conversation_id
        if own is None:
            return []
        prefix, identity, verified = message_prefix(session.visitor_hash), session.identity, session.verified_contact

        def op(conn: Any) -> list[dict[str, Any]]:
            try:
                live = q.live_conversation(conn, own)
            except LookupError:
                return []
            visible = [own]
            if verified is not None:
                try:
                    visible.append(q.conversation_of(conn, verified))
                except LookupError:
                    visible = []
            else:
                visible = []
            return cq.visitor_history(conn, live, own, prefix, identity, visible, limit)

        events = await self.store.read(op)
        return [visitor_view(e) for e in events]

    @staticmethod
    def _client_id(data: dict[str, Any]) -> str:
        cid = data.get("client_id")
        if not isinstance(cid, str) or not _CLIENT_ID.match(cid):
            raise PermanentError("client_id must be 8-64 letters, digits, '-' or '_'.")
        return cid

    async def _ingest(
        self, session: VisitorSession, kind: EventKind, client_id: str, body: str, meta: dict[str, Any]
    ) -> IngestResult:
        item = Inbound(
            channel=Channel.CHAT,
            kind=kind,
            identity_kind=IdentityKind.CHAT,
            identity_value=session.identity,
            external_id=f"{message_prefix(session.visitor_hash)}{client_id}",
            body=body,
            meta={"client_id": client_id, "visitor": session.identity, **meta},
            occurred_at=time.time(),
            display_name=None,
        )
        result = await self.service.ingest(item)
        if session.own_conversation_id is None:
            vh, contact, conv = session.visitor_hash, result.contact_id, result.conversation_id
            await self.store.write(
                lambda c: sql.upsert_visitor(c, vh, time.time(), contact_id=contact, conversation_id=conv)
            )
            session.own_conversation_id = conv
        return result

    async def _message(self, session: VisitorSession, data: dict[str, Any]) -> None:
        client_id = self._client_id(data)
        body = data.get("body")
        if not isinstance(body, str) or not body.strip():
            await self.error(session, "empty", "Type a message first.", client_id=client_id)
            return
        limit = self.settings.max_message_chars
        if len(body) > limit:
            await self.error(session, "too_long", f"Messages can be at most {limit} characters.", client_id=client_id)
            return
        if not self.messages.allow(session.remote):
            await self.error(
                session, "rate_limited", "You are sending messages too fast. Please wait a moment.", client_id=client_id
            )
            return
        result = await self._ingest(session, EventKind.MESSAGE_IN, client_id, body, {})
        await self.send(
            session,
            {"type": "ack", "client_id": client_id, "event_id": result.event_id, "duplicate": bool(result.duplicate)},
        )
        if not result.duplicate and self._mark_pushed(result.event_id):
            view = visitor_view(
                {
                    "id": result.event_id,
                    "kind": "message_in",
                    "body": body,
                    "meta": {"client_id": client_id},
                    "occurred_at": time.time(),
                }
            )
            others = [p for p in self._peers(session.identity) if p is not session]
            await self.fan_out(others, json.dumps({"type": "message", "message": view}, ensure_ascii=False))

    def _phone(self, data: dict[str, Any]) -> str | None:
        phone = data.get("phone")
        if not isinstance(phone, str) or not 3 <= len(phone) <= 32:
            return None
        number = normalize_phone(phone, self.settings.region)
        return number.e164 if number.valid and number.e164 else None

    async def _handoff_gate(self, session: VisitorSession, data: dict[str, Any], mode: str) -> tuple[str, str] | None:
        """Common checks of a hand-off; (client id, E.164 number) when it may go on, else None (answered)."""
        client_id = self._client_id(data)
        number = self._phone(data)
        if number is None:
            what = "mobile number" if mode == "sms" else "phone number"
            await self.error(
                session,
                "bad_phone",
                f"That does not look like a {what}. Include the country code, e.g. +1 555 123 4567.",
                client_id=client_id,
            )
            return None
        if mode == "sms" and not self.settings.sms_available:
            await self.error(session, "sms_unavailable", SMS_UNAVAILABLE, client_id=client_id)
            return None
        vh = session.visitor_hash
        earlier = await self.store.read(lambda c: cq.handoff_decision(c, vh, client_id))
        if earlier is not None:  # the same request again (reload, retry): same answer, nothing new happens
            at = None
            if mode == "call" and earlier == "sent":
                external = f"{message_prefix(vh)}{client_id}"
                at = await self.store.read(lambda c: cq.handoff_moment(c, external))
            await self._handoff_answer(session, mode, client_id, earlier, at=at)
            return None
        if not self.messages.allow(session.remote):
            await self.error(
                session, "rate_limited", "You are sending messages too fast. Please wait a moment.", client_id=client_id
            )
            return None
        return client_id, number

    async def _handoff_answer(
        self, session: VisitorSession, mode: str, client_id: str, decision: str, **booked: Any
    ) -> None:
        if decision == "limited":
            what = "a text" if mode == "sms" else "a call back"
            await self.error(
                session,
                "handoff_limited",
                f"You already asked for {what} today. We have your request; you can keep chatting here.",
                client_id=client_id,
            )
            return
        frame: dict[str, Any] = {"type": "handoff", "mode": "sms" if mode == "sms" else "call", "client_id": client_id}
        frame["ok"] = True
        frame.update({k: v for k, v in booked.items() if v})
        await self.send(session, frame)

    async def _limited(self, session: VisitorSession, mode: str, client_id: str, number: str) -> bool:
        """True (and answered) when this visitor or its conversation used up today's hand-offs of this kind.

        A refused hand-off leaves no hand-off entry on the timeline (so no rule reacts to it), only the decision.
        """
        conv = session.own_conversation_id
        vh, since = session.visitor_hash, time.time() - _DAY
        used = await self.store.read(lambda c: cq.handoffs_since(c, vh, conv or 0, mode, since))
        if used < self.settings.handoffs_per_day:
            return False
        if conv is not None:
            rule = "chat_handoff" if mode == "sms" else "chat_call_me"
            await self._decision(conv, rule, "suppressed", "daily hand-off limit reached", number)
        await self._record(session, conv or 0, mode, client_id, "limited")
        await self._handoff_answer(session, mode, client_id, "limited")
        return True

    async def _record(self, session: VisitorSession, conversation_id: int, mode: str, cid: str, decision: str) -> None:
        vh, now = session.visitor_hash, time.time()
        await self.store.write(lambda c: cq.record_handoff(c, vh, conversation_id, mode, cid, decision, now))

    async def _continue_by_text(self, session: VisitorSession, data: dict[str, Any]) -> None:
        gate = await self._handoff_gate(session, data, "sms")
        if gate is None:
            return
        client_id, number = gate
        if await self._limited(session, "sms", client_id, number):
            return
        # text_by=chat: this channel sends the one hand-off text (with the code); the continuity rules stand back.
        result = await self._ingest(
            session,
            EventKind.HANDOFF,
            client_id,
            "Visitor asked to continue by text message.",
            {"handoff": "sms", "phone": number, "text_by": "chat"},
        )
        conv = result.conversation_id
        claim = await self.service.claim_identity(
            conv, IdentityKind.PHONE, number, visitor_hash=session.visitor_hash, author="chat-widget"
        )
        code = new_code()
        await self.service.set_claim_code(claim.id, code, self.settings.code_ttl_s)
        minutes = max(1, round(self.settings.code_ttl_s / 60))
        text = (
            f"{self.settings.business_name}: reply to this text to continue your chat here. "
            f"Or type {code} in the chat to confirm your number (valid {minutes} min)."
        )
        try:
            await self.service.enqueue_outbound(
                conv,
                Channel.SMS,
                number,
                text,
                automated=True,
                author="chat-widget",
                event_meta={"rule": "chat_handoff"},
            )
        except PermanentError as err:
            # Opted out, refused by the number policy, budget spent: staff see why, the visitor never does.
            await self._decision(conv, "chat_handoff", "suppressed", str(err), number)
            decision = "suppressed"
        else:
            await self.service.mark_claim_texted(claim.id)
            await self.service.update_conversation(conv, preferred_channel=Channel.SMS.value)
            await self._decision(conv, "chat_handoff", "sent", "the visitor asked to continue by text", number)
            decision = "sent"
        await self._record(session, conv, "sms", client_id, decision)
        await self._handoff_answer(session, "sms", client_id, decision)

    async def _picked_time(
        self, session: VisitorSession, data: dict[str, Any], client_id: str
    ) -> tuple[bool, float | None, str]:
        """(go on, moment booked or None for "as soon as you can", "" / "past" / "closed")."""
        raw = data.get("at")
        if raw is None:
            return True, None, ""
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            await self.error(session, "bad_time", "Pick one of the times offered.", client_id=client_id)
            return False, None, ""
        if self.call_times is None:
            await self.error(
                session,
                "bad_time",
                "We cannot book a time right now. Leave your number without a time and we will call you soon.",
                client_id=client_id,
            )
            return False, None, ""
        at, moved, why = self.call_times.fit(float(raw))
        if at is None:
            await self.error(session, "bad_time", f"Sorry, {why}.", client_id=client_id)
            return False, None, ""
        return True, at, moved

    async def _call_me(self, session: VisitorSession, data: dict[str, Any]) -> None:
        gate = await self._handoff_gate(session, data, "call")
        if gate is None:
            return
        client_id, number = gate
        go_on, at, moved = await self._picked_time(session, data, client_id)
        if not go_on:
            return
        if await self._limited(session, "call", client_id, number):
            return
        refused = ""
        try:
            self.service.check_number(number, purpose="dial")
        except PermanentError as err:
            refused = str(err)
        meta: dict[str, Any] = {"handoff": "call_me", "phone": number}
        if at is not None and not refused:
            meta["at"] = at  # the rules book the call at that moment (owner's phone first)
        result = await self._ingest(
            session,
            EventKind.HANDOFF,
            client_id,
            "Visitor asked for a call back at a time they picked."
            if "at" in meta
            else "Visitor asked for a call back.",
            meta,
        )
        conv = result.conversation_id
        await self.service.claim_identity(
            conv, IdentityKind.PHONE, number, visitor_hash=session.visitor_hash, author="chat-widget"
        )
        if refused:
            # A premium-rate or foreign number: no call-back is offered to staff; the visitor is not told why.
            await self._decision(conv, "chat_call_me", "suppressed", refused, number)
            decision = "suppressed"
        else:
            await self.service.update_conversation(conv, next_step="Call back")
            decision = "sent"
        await self._record(session, conv, "call", client_id, decision)
        await self._handoff_answer(
            session, "call", client_id, decision, at=meta.get("at"), moved=moved if "at" in meta else ""
        )

    async def _decision(self, conv: int, rule: str, decision: str, reason: str, number: str) -> None:
        """An automated decision on the timeline (staff only; never shown to the visitor)."""
        what = "Call back to" if rule == "chat_call_me" else "Text to"
        await self.service.append_event(
            conv,
            EventKind.AUTOMATED,
            Channel.SYSTEM,
            f"{what} the number the visitor typed: {decision} ({reason})",
            meta={"rule": rule, "decision": decision, "reason": reason, "to": number},
            author="chat-widget",
        )

    async def _verify_code(self, session: VisitorSession, data: dict[str, Any]) -> None:
        client_id = self._client_id(data)
        code = data.get("code")
        if not isinstance(code, str) or not _CODE.match(code):
            await self.error(session, "bad_code", "Type the code from our text message.", client_id=client_id)
            return
        if not self.messages.allow(session.remote):
            await self.error(
                session, "rate_limited", "You are sending messages too fast. Please wait a moment.", client_id=client_id
            )
            return
        vh = session.visitor_hash
        claim = await self.store.read(lambda c: cq.latest_pending_claim_of_visitor(c, vh))
        if claim is None:
            await self.error(
                session, "bad_code", "There is no code to check. Ask for a text first.", client_id=client_id
            )
            return
        check, verified = await self.service.verify_claim_code(
            claim.id, code.strip(), max_attempts=self.settings.code_attempts, by="chat-widget"
        )
        if check is CodeCheck.OK and verified is not None:
            contact = verified.contact_id
            await self.store.write(lambda c: cq.set_visitor_verified(c, vh, contact))
            session.verified_contact = contact
            await self.send(
                session,
                {"type": "verified", "client_id": client_id, "ok": True, "history": await self.history(session)},
            )
            return
        messages = {
            CodeCheck.WRONG: "That code is not right. Check our text message and try again.",
            CodeCheck.EXPIRED: "That code has expired. You can keep chatting here, or reply to our text.",
            CodeCheck.EXHAUSTED: "Too many wrong codes. You can keep chatting here, or reply to our text.",
            CodeCheck.NONE: "There is no code to check. Ask for a text first.",
        }
        await self.error(session, "bad_code", messages.get(check, messages[CodeCheck.NONE]), client_id=client_id)

    # ------------------------------------------------------------------------------------------------- push

    def _mark_pushed(self, event_id: int) -> bool:
        if event_id in self._pushed:
            return False
        self._pushed[event_id] = None
        while len(self._pushed) > 4096:
            self._pushed.popitem(last=False)
        return True

    async def push_event(self, event: Mapping[str, Any]) -> int:
        """Push a staff chat reply to the visitor it is addressed to (every open tab, once per event id).

        Only ``message_out`` on the chat channel is pushed, and only to the visitor named in ``meta.to``; a reply
        without an address reaches the sessions whose own conversation it was written in.
        """
        if event.get("channel") != "chat" or event.get("kind") != "message_out":
            return 0
        meta = event.get("meta") or {}
        to = meta.get("to") if isinstance(meta, Mapping) else None
        if isinstance(to, str):
            peers = self._peers(to)
        else:
            conv = int(event["conversation_id"])
            peers = [s for s in self.sessions if s.own_conversation_id == conv]
        if not peers or not self._mark_pushed(int(event["id"])):
            return 0
        return await self.fan_out(peers, json.dumps({"type": "message", "message": visitor_view(event)}))

    async def fan_out(self, peers: list[VisitorSession], text: str) -> int:
        """Send one frame to many sessions; returns how many got it (encoded once)."""
        payload = text.encode("utf-8")
        sent = 0
        for p in peers:
            if p.outlet.closed:
                continue
            try:
                await p.outlet.send_text(payload)
                sent += 1
            except (ConnectionError, RuntimeError):
                log.debug("chat push to a closing socket failed")
        return sent

    async def broadcast_all(self, text: str) -> int:
        """Send a frame to every visitor session (notices such as "we are closed now")."""
        return await self.fan_out(list(self.sessions), text)

    async def sweep(self, idle_seconds: float) -> int:
        """Close sessions that sent nothing (not even a ping) for ``idle_seconds``; returns how many."""
        cutoff = time.monotonic() - idle_seconds
        stale = [s for s in self.sessions if s.last_seen < cutoff]
        for s in stale:
            await s.outlet.close(1001, b"idle")
        if stale:
            log.info("chat: closed %d idle visitor socket(s)", len(stale))
        return len(stale)

    async def close_all(self) -> None:
        """Close every visitor session (shutdown)."""
        for s in list(self.sessions):
            await s.outlet.close(1001, b"server shutdown")
