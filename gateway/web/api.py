"""REST API (``/api/v1``) used by the console and by integrations (bearer tokens), plus its OpenAPI document.

Every handler answers JSON; bad input gets a 400 whose ``error`` says what is wrong and how to fix it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from aiohttp import web

from gateway.domain.limits import NumberNeedsConfirmationError
from gateway.domain.models import Channel, ContactView, ConversationSummary, EventKind, InboxRow, TimelineEvent
from gateway.errors import NoRouteError, OptedOutError, PermanentError, ValidationError
from gateway.protocols.pdu import segment_count
from gateway.store import transcribe as tq
from gateway.store import web as sql
from gateway.web import call_api, hours, openapi, spine_api
from gateway.web.chat import CHAT_HUB
from gateway.web.jsonable import jsonable
from gateway.web.keys import AUTH, DEPS
from gateway.web.leakage import openapi_paths as leakage_openapi_paths
from gateway.web.rules import openapi_paths as rules_openapi_paths
from gateway.web.schema import (
    CONFIRM_FIX,
    NumberConflict,
    Ok,
    Operation,
    Reply,
    parse,
    path_id,
    path_int,
    respond,
)
from gateway.web.security import is_admin, new_token, read_json, require_api, require_staff, token_hash
from gateway.web.spine_api import SpineView
from gateway.web.status import StatusPage

log = logging.getLogger(__name__)

ReplyChannel = Literal["sms", "chat"]
ConversationStatus = Literal["open", "waiting", "closed"]


# ---------------------------------------------------------------------------------------- request and response bodies


@dataclass(frozen=True, slots=True)
class InboxPage:
    """``GET /api/v1/inbox``: open conversations, longest-waiting customer first, and the server's clock."""

    inbox: list[InboxRow]
    now: float


@dataclass(frozen=True, slots=True)
class ReplyHints:
    """How staff can answer now: the channel to preselect, the reachable ones, why the others are not."""

    default_channel: str
    channels: list[str]
    unavailable: dict[str, str]
    phone: str | None
    opted_out: bool
    quiet_hours: bool
    quiet_hours_span: str


@dataclass(frozen=True, slots=True)
class SuggestedContact:
    """The known contact a pending claim's number belongs to."""

    id: int
    display_name: str | None
    conversation_id: int | None


@dataclass(frozen=True, slots=True)
class ClaimView:
    """A number or address a customer said is theirs, as the console shows it."""

    id: int
    kind: str
    value: str
    state: str
    verified: bool
    method: str | None
    label: str
    texted: bool
    merge_id: int | None
    suggested_contact: SuggestedContact | None


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """``GET /api/v1/conversations/{id}``: everything the console's conversation view shows."""

    headline: str
    spine: SpineView
    summary: ConversationSummary
    contact: ContactView | None
    timeline: list[TimelineEvent]
    reply: ReplyHints
    can_call: bool
    claims: list[ClaimView]


@dataclass(frozen=True, slots=True)
class ClaimConfirmed:
    """The claim is verified: the conversation it now belongs to, and the merge to undo if it was wrong."""

    ok: bool
    conversation_id: int
    contact_id: int
    merge_id: int | None


@dataclass(frozen=True, slots=True)
class SendMessage:
    """``POST .../messages``: the reply, its channel, and the confirmations a refused send asks for."""

    body: str
    channel: ReplyChannel = "sms"
    override_optout: bool = False
    confirm_number: bool = False
    to: str | None = None


class Sent(TypedDict):
    """A reply accepted: a chat message (``event_id``) or an SMS queued in the outbox (the other fields)."""

    channel: ReplyChannel
    event_id: NotRequired[int]
    outbox_id: NotRequired[int | None]
    segments: NotRequired[int]
    encoding: NotRequired[str]
    to: NotRequired[str]


class SendRefused(TypedDict):
    """409: why the reply was not sent (no route, opted out, or a number to confirm) and what to do."""

    error: str
    needs_confirmation: NotRequired[bool]
    no_route: NotRequired[bool]
    opted_out: NotRequired[bool]
    fix: NotRequired[str]


@dataclass(frozen=True, slots=True)
class NoteRequest:
    """``POST .../notes``: the note's text."""

    body: str


@dataclass(frozen=True, slots=True)
class EventCreated:
    """The timeline event that was added."""

    event_id: int


class ConversationChanges(TypedDict, total=False):
    """``PATCH /api/v1/conversations/{id}``: only the fields given change."""

    intent: str
    next_step: str
    owner: str
    urgent: bool
    preferred_channel: str
    status: ConversationStatus


@dataclass(frozen=True, slots=True)
class Updated:
    """What was changed."""

    ok: bool
    fields: ConversationChanges


@dataclass(frozen=True, slots=True)
class Unmerged:
    """Both conversations after an undone merge."""

    ok: bool
    kept_conversation_id: int
    restored_conversation_id: int


@dataclass(frozen=True, slots=True)
class RetryQueued:
    """The transcription job queued again."""

    ok: bool
    job_id: int
    status: str


@dataclass(frozen=True, slots=True)
class SearchResults:
    """``GET /api/v1/search``: hits, newest first."""

    results: list[sql.SearchHitRow]


@dataclass(frozen=True, slots=True)
class SegmentsRequest:
    """``POST /api/v1/sms/segments``: the text to count (empty: nothing to send)."""

    body: str = ""


@dataclass(frozen=True, slots=True)
class Segments:
    """How the text travels as SMS: its parts, their encoding (gsm7 or ucs2) and its length."""

    segments: int
    encoding: str
    chars: int


@dataclass(frozen=True, slots=True)
class StaffEntry:
    """A staff member who can own a conversation."""

    username: str
    display_name: str
    extension: str | None


@dataclass(frozen=True, slots=True)
class StaffList:
    """``GET /api/v1/staff``."""

    staff: list[StaffEntry]


@dataclass(frozen=True, slots=True)
class TokenList:
    """``GET /api/v1/tokens``: every token, never its secret."""

    tokens: list[sql.ApiTokenInfo]


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """``POST /api/v1/tokens``: a name, the scopes, and optionally a lifetime in days."""

    name: str
    scopes: list[str] | None = None
    expires_in_days: float | None = None


@dataclass(frozen=True, slots=True)
class TokenCreated:
    """The new token; ``token`` is shown this once."""

    id: int
    name: str
    token: str
    scopes: list[str]
    expires_at: float | None


class Me(TypedDict, total=False):
    """Who is calling: a staff member (username, display name, extension, role) or a token (``api_token``)."""

    username: str
    display_name: str
    extension: str | None
    role: str
    api_token: str


_EDITABLE = {
    "intent": str,
    "next_step": str,
    "owner": str,
    "urgent": bool,
    "preferred_channel": str,
    "status": str,
}
_STATUSES = ("open", "waiting", "closed")
_REPLY_CHANNELS = ("sms", "chat")


def _text(key: str, value: str, *, required: bool = True, limit: int = 10_000) -> str:
    if required and not value.strip():
        raise ValidationError(f"field {key!r} is empty: write something first")
    if len(value) > limit:
        raise ValidationError(f"field {key!r} is {len(value)} characters; the limit is {limit}")
    return value


async def _summary(request: web.Request, conversation_id: int) -> ConversationSummary:
    try:
        summary = await request.app[DEPS].service.summary(conversation_id)
    except LookupError as err:
        raise web.HTTPNotFound(text=f"conversation {conversation_id} does not exist") from err
    if summary is None:
        raise web.HTTPNotFound(text=f"conversation {conversation_id} does not exist")
    return summary


async def inbox(request: web.Request) -> web.Response:
    """``GET /api/v1/inbox``: open conversations, longest-waiting customer first."""
    require_api(request)
    owner = request.query.get("owner") or None
    rows = await request.app[DEPS].service.inbox(limit=200, owner=owner)
    return respond(InboxPage(rows, time.time()))


async def conversation(request: web.Request) -> web.Response:
    """``GET /api/v1/conversations/{id}``: summary, timeline and reply hints."""
    require_api(request)
    deps = request.app[DEPS]
    cid = path_id(request, "conversation_id")
    summary = await _summary(request, cid)
    live = summary.conversation_id
    timeline = await deps.service.timeline(live, limit=200)
    contact = await deps.service.contact(summary.contact_id)
    phone = summary.phone
    opted_out = await deps.service.is_suppressed(phone) if phone else False
    cfg = deps.config
    routes = await deps.service.routes(live)
    claims = await _claims_payload(request, live)
    default = summary.preferred_channel
    if default not in _REPLY_CHANNELS:
        last = max(
            (ev for ev in timeline if ev.channel in _REPLY_CHANNELS and ev.kind in ("message_in", "message_out")),
            key=lambda ev: ev.id,
            default=None,
        )
        default = last.channel if last is not None else ("sms" if phone else "chat")
    if default == "sms" and not phone:
        default = "chat"
    if default not in routes.channels and routes.channels:
        default = routes.channels[0]
    service = spine_api.spines(request)
    spine = await service.spine(live)
    hints = ReplyHints(
        default_channel=default,
        channels=list(routes.channels),
        unavailable=dict(routes.unavailable),
        phone=phone,
        opted_out=opted_out,
        quiet_hours=hours.in_quiet_hours(cfg.quiet_hours, cfg.timezone, time.time()),
        quiet_hours_span=cfg.quiet_hours,
    )
    return respond(
        ConversationPage(
            headline=spine.summary,
            spine=spine_api.spine_json(spine, service),
            summary=summary,
            contact=contact,
            timeline=timeline,
            reply=hints,
            can_call=deps.click_to_call is not None and bool(phone),
            claims=claims,
        )
    )


async def _claims_payload(request: web.Request, conversation_id: int) -> list[ClaimView]:
    """Claims in a conversation as the console shows them, with the known contact each one matches."""
    service = request.app[DEPS].service
    out: list[ClaimView] = []
    for claim in await service.claims(conversation_id):
        match = await service.find_contact(claim.kind, claim.value) if claim.state == "pending" else None
        verified = claim.state == "verified"
        out.append(
            ClaimView(
                id=claim.id,
                kind=claim.kind,
                value=claim.value,
                state=claim.state,
                verified=verified,
                method=claim.method,
                label=f"says they are {claim.value}, " + ("verified" if verified else "not verified"),
                texted=claim.texted_at is not None,
                merge_id=claim.merge_id,
                suggested_contact=(
                    SuggestedContact(match.id, match.display_name, match.conversation_id) if match is not None else None
                ),
            )
        )
    return out


async def confirm_claim(request: web.Request) -> web.Response:
    """``POST /api/v1/claims/{claim_id}/confirm``: staff vouch for a claimed number (one click; undoable merge)."""
    auth = require_api(request)
    claim_id = path_id(request, "claim_id")
    try:
        result = await request.app[DEPS].service.confirm_claim(claim_id, author=auth.actor)
    except LookupError as err:
        raise web.HTTPNotFound(text=str(err)) from err
    except ValueError as err:
        raise web.HTTPConflict(text=str(err)) from err
    return respond(ClaimConfirmed(True, result.conversation_id, result.contact_id, result.merge_id))


async def send_message(request: web.Request) -> web.Response:
    """``POST /api/v1/conversations/{id}/messages``: reply by SMS (outbox) or chat."""
    auth = require_api(request)
    deps = request.app[DEPS]
    data = await read_json(request)
    cid = path_id(request, "conversation_id")
    channel = data.get("channel", "sms")
    if channel not in _REPLY_CHANNELS:
        raise ValidationError(f"channel {str(channel)[:20]!r} cannot be used to reply: use one of {_REPLY_CHANNELS}")
    ask = parse(data, SendMessage)
    body = _text("body", ask.body, limit=deps.config.chat_max_message_chars * 2)
    override = ask.override_optout
    if override and not is_admin(request):
        raise web.HTTPForbidden(
            text=json.dumps({"error": "only an admin may send to a number that opted out (STOP); ask one"}),
            content_type="application/json",
        )
    summary = await _summary(request, cid)
    try:
        result = await deps.service.reply(
            summary.conversation_id,
            ask.channel,
            body,
            auth.actor,
            to=ask.to or None,
            override_optout=override,
            confirm_number=ask.confirm_number,
        )
    except NumberNeedsConfirmationError as err:
        return respond(NumberConflict(error=str(err), needs_confirmation=True, fix=CONFIRM_FIX), status=409)
    except NoRouteError as err:
        return respond(SendRefused(error=str(err), no_route=True), status=409)
    except OptedOutError as err:
        return respond(
            SendRefused(error=str(err), opted_out=True, fix="tick 'send anyway' to override"),
            status=409,
        )
    if result.channel == "chat":
        event_id = result.event_id
        ev = await deps.store.read(lambda c: _event(c, event_id))
        if ev is not None:
            await request.app[CHAT_HUB].push_event(ev)
        return respond(Sent(channel="chat", event_id=result.event_id), status=201)
    encoding, parts = segment_count(body)
    return respond(
        Sent(channel="sms", outbox_id=result.outbox_id, segments=parts, encoding=encoding, to=result.to), status=201
    )


def _event(conn: Any, event_id: int) -> dict[str, Any] | None:
    from gateway.store import queries as q  # noqa: PLC0415

    ev = q.get_event(conn, event_id)
    if ev is None:
        return None
    out: dict[str, Any] = jsonable(ev)
    return out


async def add_note(request: web.Request) -> web.Response:
    """``POST /api/v1/conversations/{id}/notes``: an internal note on the timeline."""
    auth = require_api(request)
    note = parse(await read_json(request), NoteRequest)
    body = _text("body", note.body)
    summary = await _summary(request, path_id(request, "conversation_id"))
    event_id = await request.app[DEPS].service.append_event(
        summary.conversation_id, EventKind.NOTE, Channel.NOTE, body, author=auth.actor
    )
    return respond(EventCreated(event_id), status=201)


async def update(request: web.Request) -> web.Response:
    """``PATCH /api/v1/conversations/{id}``: intent, next step, owner, urgent, preferred channel, status."""
    auth = require_api(request)
    data = await read_json(request)
    for key, value in data.items():
        want = _EDITABLE.get(key)
        if want is None:
            raise ValidationError(f"field {key!r} cannot be changed here; editable: {', '.join(_EDITABLE)}")
        if not isinstance(value, want):
            raise ValidationError(f"field {key!r} must be a {want.__name__}")
        if isinstance(value, str) and len(value) > 500:
            raise ValidationError(f"field {key!r} is longer than 500 characters")
    if "status" in data and data["status"] not in _STATUSES:
        raise ValidationError(f"status must be one of {_STATUSES}")
    if not data:
        raise ValidationError("nothing to change: send at least one field")
    fields = parse(data, ConversationChanges)
    summary = await _summary(request, path_id(request, "conversation_id"))
    conv = summary.conversation_id
    # Spine fields go through the spine service so each change is on the timeline with who made it.
    spines = spine_api.spines(request)
    who = {"source": "staff" if auth.session is not None else "api", "set_by": auth.actor}
    if "intent" in fields or "urgent" in fields:
        await spines.set_intent(conv, fields.get("intent", summary.intent) or None, urgent=fields.get("urgent"), **who)
    if "next_step" in fields:
        await spines.set_next_step(conv, fields["next_step"] or None, source=who["source"], set_by=auth.actor)
    if "owner" in fields:
        await spines.set_owner(conv, fields["owner"] or None, **who)
    if "preferred_channel" in fields:
        await spines.set_channel_preference(conv, fields["preferred_channel"] or None, f"set by {auth.actor}", **who)
    if "status" in fields:
        await request.app[DEPS].service.update_conversation(conv, author=auth.actor, status=fields["status"])
    return respond(Updated(True, fields))


async def undo_merge(request: web.Request) -> web.Response:
    """``POST /api/v1/merges/{merge_id}/undo``: split two contacts that were merged (by a typed number or by hand)."""
    auth = require_api(request)
    merge_id = path_id(request, "merge_id")
    try:
        result = await request.app[DEPS].service.unmerge(merge_id, author=auth.actor)
    except LookupError as err:
        raise web.HTTPNotFound(text=str(err)) from err
    except ValueError as err:
        raise web.HTTPConflict(text=str(err)) from err
    return respond(Unmerged(True, result.kept_conversation_id, result.merged_conversation_id))


async def retry_transcription(request: web.Request) -> web.Response:
    """``POST /api/v1/voicemails/{event_id}/transcription/retry``: transcribe a failed voicemail again."""
    require_api(request)
    event_id = path_id(request, "event_id")
    deps = request.app[DEPS]
    if deps.transcription is not None:
        job = await deps.transcription.retry_voicemail(event_id)
    else:
        job = await deps.store.write(lambda c: tq.requeue_failed_voicemail(c, event_id, now=time.time()))
        if job is not None:
            await deps.service.update_event_meta(event_id, {"transcription": "pending", "transcription_error": None})
    if job is None:
        existing = await deps.store.read(lambda c: tq.job_for_voicemail(c, event_id))
        state = existing.status if existing is not None else "no transcription job"
        raise web.HTTPConflict(
            text=f"voicemail {event_id} has no failed transcription to retry (its state: {state})",
        )
    return respond(RetryQueued(True, job.id, job.status))


async def call(request: web.Request) -> web.Response:
    """``POST /api/v1/conversations/{id}/call``: ring the staff member's phone, then the customer."""
    session = require_staff(request)
    deps = request.app[DEPS]
    if deps.click_to_call is None:
        raise PermanentError("click-to-call is not available: the voice channel is not running")
    if not session.staff.extension:
        raise ValidationError("your login has no SIP extension: ask the operator to bind one")
    summary = await _summary(request, path_id(request, "conversation_id"))
    if not summary.phone:
        raise ValidationError("this customer has no phone number to call")
    deps.service.check_number(summary.phone, purpose="dial")
    await deps.click_to_call(session.staff.extension, summary.phone)
    await deps.service.append_event(
        summary.conversation_id,
        EventKind.HANDOFF,
        Channel.VOICE,
        f"Call back started by {session.staff.display_name}",
        meta={"click_to_call": True, "extension": session.staff.extension},
        author=session.staff.username,
    )
    return respond(Ok())


async def search(request: web.Request) -> web.Response:
    """``GET /api/v1/search?q=``: full-text search over messages, notes and transcripts."""
    require_api(request)
    text = request.query.get("q", "")
    if len(text) > 200:
        raise ValidationError("search text longer than 200 characters")
    from gateway.store import queries as q  # noqa: PLC0415

    match = q.fts_query(text)
    hits = await request.app[DEPS].store.read(lambda c: sql.search(c, match, 50)) if match else []
    return respond(SearchResults(hits))


async def segments(request: web.Request) -> web.Response:
    """``POST /api/v1/sms/segments``: how many SMS parts a text needs (reply box counter)."""
    require_api(request)
    body = _text("body", parse(await read_json(request), SegmentsRequest).body, required=False, limit=10_000)
    encoding, parts = segment_count(body) if body else ("gsm7", 0)
    return respond(Segments(parts, encoding, len(body)))


async def staff_list(request: web.Request) -> web.Response:
    """``GET /api/v1/staff``: who can own a conversation."""
    require_api(request)
    from gateway.store import queries as q  # noqa: PLC0415

    rows = await request.app[DEPS].store.read(q.all_staff)
    return respond(StaffList([StaffEntry(s.username, s.display_name, s.extension) for s in rows]))


async def tokens_list(request: web.Request) -> web.Response:
    """``GET /api/v1/tokens`` (console admins)."""
    _admin(request)
    rows = await request.app[DEPS].store.read(sql.list_api_tokens)
    return respond(TokenList(rows))


async def tokens_create(request: web.Request) -> web.Response:
    """``POST /api/v1/tokens`` ``{"name": ...}``: the token is shown once."""
    _admin(request)
    data = await read_json(request)
    scopes = data.get("scopes", ["read"])
    if not isinstance(scopes, list) or not scopes or any(x not in sql.SCOPES for x in scopes):
        raise ValidationError(f'scopes must be a non-empty list of {", ".join(sql.SCOPES)} (e.g. ["read"])')
    days = data.get("expires_in_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= 3650):
        raise ValidationError("expires_in_days must be a number of days between 0 and 3650, or left out")
    ask = parse(data, TokenRequest)
    name = _text("name", ask.name, limit=100)
    days = ask.expires_in_days
    token = new_token()
    h = token_hash(token)
    now = time.time()
    expires = None if days is None else now + float(days) * 86400
    picked = tuple(x for x in sql.SCOPES if x in scopes)
    tid = await request.app[DEPS].store.write(
        lambda c: sql.create_api_token(c, name, h, now, scopes=picked, expires_at=expires)
    )
    log.info("api token %d created (scopes %s)", tid, ",".join(picked))
    return respond(TokenCreated(tid, name, token, list(picked), expires), status=201)


async def tokens_revoke(request: web.Request) -> web.Response:
    """``DELETE /api/v1/tokens/{id}``."""
    _admin(request)
    tid = path_id(request, "token_id")
    now = time.time()
    done = await request.app[DEPS].store.write(lambda c: sql.revoke_api_token(c, tid, now))
    if not done:
        raise web.HTTPNotFound(text=f"no live token {tid}")
    return respond(Ok())


def _admin(request: web.Request) -> None:
    session = require_staff(request)
    if session.staff.role != "admin":
        raise web.HTTPForbidden(text="only admins manage API tokens")


async def voicemail_audio(request: web.Request) -> web.StreamResponse:
    """``GET /media/voicemail/{event_id}``: the voicemail recording of a timeline event (staff only)."""
    require_staff(request)
    deps = request.app[DEPS]
    try:
        event_id = int(request.match_info["event_id"])
    except ValueError as err:
        raise web.HTTPNotFound from err
    ev = await deps.store.read(lambda c: _event(c, event_id))
    if ev is None or ev["kind"] != "voicemail":
        raise web.HTTPNotFound(text="no such voicemail")
    meta = ev.get("meta") or {}
    raw = meta.get("path") or meta.get("voicemail_path") or meta.get("file")
    if not isinstance(raw, str):
        raise web.HTTPNotFound(text="this voicemail has no recording")
    root = await asyncio.to_thread(Path(deps.config.voicemail_dir).resolve)
    path = await asyncio.to_thread(lambda: Path(raw).resolve())
    if not path.is_relative_to(root) or not await asyncio.to_thread(path.is_file):
        log.warning("voicemail %d: recording outside voicemail_dir or missing", event_id)
        raise web.HTTPNotFound(text="recording not available")
    return web.FileResponse(path, headers={"Content-Disposition": "inline", "Cache-Control": "private, no-store"})


async def me(request: web.Request) -> web.Response:
    """``GET /api/v1/me``: who is logged in."""
    auth = request[AUTH]
    if auth.session is None:
        require_api(request)
        return respond(Me(api_token=auth.actor))
    s = auth.session.staff
    return respond(Me(username=s.username, display_name=s.display_name, extension=s.extension, role=s.role))


def openapi_paths() -> dict[str, dict[str, Operation]]:
    """OpenAPI path items of the core API routes (the document is assembled in ``gateway.web.openapi``)."""
    cid = (path_int("conversation_id"),)
    conflict = (400, 401, 404, 409)
    return {
        "/api/v1/inbox": {
            "get": Operation(
                "Open conversations, longest waiting first",
                parameters=({"name": "owner", "in": "query", "schema": {"type": "string"}},),
                responses={200: Reply("the inbox", InboxPage)},
            )
        },
        "/api/v1/conversations/{conversation_id}": {
            "get": Operation(
                "Summary, timeline and reply hints",
                parameters=cid,
                responses={200: Reply("the conversation", ConversationPage)},
                errors=(400, 401, 404),
            ),
            "patch": Operation(
                "Change intent, next step, owner, urgent, preferred channel or status",
                parameters=cid,
                request=ConversationChanges,
                responses={200: Reply("changed", Updated)},
                errors=(400, 401, 404),
            ),
        },
        "/api/v1/conversations/{conversation_id}/messages": {
            "post": Operation(
                "Reply by SMS (queued in the outbox) or chat",
                parameters=cid,
                request=SendMessage,
                responses={201: Reply("sent or queued", Sent), 409: Reply("not sent, and why", SendRefused)},
                errors=(400, 401, 403, 404),
            )
        },
        "/api/v1/voicemails/{event_id}/transcription/retry": {
            "post": Operation(
                "Transcribe a voicemail whose transcription failed again (fresh attempts)",
                parameters=(path_int("event_id"),),
                responses={200: Reply("queued", RetryQueued)},
                errors=(400, 401, 409),
            )
        },
        "/api/v1/merges/{merge_id}/undo": {
            "post": Operation(
                "Undo a merge of two contacts: each gets its own timeline back",
                parameters=(path_int("merge_id"),),
                responses={200: Reply("undone", Unmerged)},
                errors=conflict,
            )
        },
        "/api/v1/claims/{claim_id}/confirm": {
            "post": Operation(
                "Confirm a number a customer typed (claimed): attach it, or merge with its known owner",
                parameters=(path_int("claim_id"),),
                responses={200: Reply("verified", ClaimConfirmed)},
                errors=conflict,
            )
        },
        "/api/v1/conversations/{conversation_id}/notes": {
            "post": Operation(
                "Add an internal note",
                parameters=cid,
                request=NoteRequest,
                responses={201: Reply("added", EventCreated)},
                errors=(400, 401, 404),
            )
        },
        "/api/v1/search": {
            "get": Operation(
                "Full-text search",
                parameters=({"name": "q", "in": "query", "required": True, "schema": {"type": "string"}},),
                responses={200: Reply("hits, newest first", SearchResults)},
            )
        },
        "/api/v1/sms/segments": {
            "post": Operation(
                "SMS parts needed for a text",
                request=SegmentsRequest,
                responses={200: Reply("the count", Segments)},
            )
        },
        "/api/v1/staff": {"get": Operation("Staff members", responses={200: Reply("staff", StaffList)})},
        "/status.json": {
            "get": Operation(
                "Operator status: each part's health, queues and counters",
                responses={200: Reply("status", StatusPage)},
            )
        },
        "/metrics": {
            "get": Operation(
                "Prometheus metrics (text exposition format)",
                responses={200: Reply("metrics", media=("text/plain",))},
            )
        },
        "/api/v1/me": {
            "get": Operation("Who is authenticated (staff member or token)", responses={200: Reply("caller", Me)})
        },
        "/api/v1/conversations/{conversation_id}/call": {
            "post": Operation(
                "Ring the staff member's phone, then the customer (click to call)",
                parameters=cid,
                responses={200: Reply("dialling", Ok)},
                errors=conflict,
            )
        },
        "/api/v1/tokens": {
            "get": Operation(
                "API tokens (admins)", responses={200: Reply("tokens", TokenList)}, errors=(400, 401, 403)
            ),
            "post": Operation(
                "Create an API token (shown once)",
                request=TokenRequest,
                responses={201: Reply("created", TokenCreated)},
                errors=(400, 401, 403),
            ),
        },
        "/api/v1/tokens/{token_id}": {
            "delete": Operation(
                "Revoke an API token",
                parameters=(path_int("token_id"),),
                responses={200: Reply("revoked", Ok)},
                errors=(400, 401, 403, 404),
            )
        },
        "/media/voicemail/{event_id}": {
            "get": Operation(
                "The voicemail recording of a timeline event (audio/wav)",
                parameters=(path_int("event_id"),),
                responses={200: Reply("the recording", media=("audio/wav",))},
                errors=(401, 404),
            )
        },
        "/api/openapi.json": {
            "get": Operation(
                "This document", responses={200: Reply("OpenAPI 3.1", dict[str, Any])}, errors=(), public=True
            )
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    """``GET /api/openapi.json``: generated from this application's route table."""
    return web.json_response(openapi.document(request.app, api_docs()))


def api_docs() -> dict[str, dict[str, Operation]]:
    """The documentation of every API module, joined (see ``gateway.web.openapi``)."""
    return openapi.merge_docs(
        [openapi_paths, spine_api.openapi_paths, call_api.openapi_paths, leakage_openapi_paths, rules_openapi_paths]
    )


def routes() -> list[web.RouteDef]:
    """API routes."""
    return [
        web.get("/api/openapi.json", openapi_json),
        web.get("/api/v1/me", me),
        web.get("/api/v1/inbox", inbox),
        web.get("/api/v1/search", search),
        web.post("/api/v1/voicemails/{event_id}/transcription/retry", retry_transcription),
        web.get("/api/v1/staff", staff_list),
        web.post("/api/v1/sms/segments", segments),
        web.get("/api/v1/conversations/{conversation_id}", conversation),
        web.patch("/api/v1/conversations/{conversation_id}", update),
        web.post("/api/v1/conversations/{conversation_id}/messages", send_message),
        web.post("/api/v1/conversations/{conversation_id}/notes", add_note),
        web.post("/api/v1/conversations/{conversation_id}/call", call),
        web.post("/api/v1/merges/{merge_id}/undo", undo_merge),
        web.post("/api/v1/claims/{claim_id}/confirm", confirm_claim),
        web.get("/api/v1/tokens", tokens_list),
        web.post("/api/v1/tokens", tokens_create),
        web.delete("/api/v1/tokens/{token_id}", tokens_revoke),
        web.get("/media/voicemail/{event_id}", voicemail_audio),
    ]
