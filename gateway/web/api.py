"""REST API (``/api/v1``) used by the console and by integrations (bearer tokens), plus its OpenAPI document.

Every handler answers JSON; bad input gets a 400 whose ``error`` says what is wrong and how to fix it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.domain.limits import NumberNeedsConfirmationError
from gateway.domain.models import Channel, EventKind
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
from gateway.web.security import is_admin, new_token, read_json, require_api, require_staff, token_hash

log = logging.getLogger(__name__)

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


def _conv_id(request: web.Request) -> int:
    raw = request.match_info["conversation_id"]
    try:
        return int(raw)
    except ValueError as err:
        raise ValidationError(f"conversation id {raw[:20]!r} is not a number") from err


def _text(data: dict[str, Any], key: str, *, required: bool = True, limit: int = 10_000) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"field {key!r} must be a string")
    if required and not value.strip():
        raise ValidationError(f"field {key!r} is empty: write something first")
    if len(value) > limit:
        raise ValidationError(f"field {key!r} is {len(value)} characters; the limit is {limit}")
    return value


async def _summary(request: web.Request, conversation_id: int) -> Any:
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
    return web.json_response({"inbox": jsonable(rows), "now": time.time()})


async def conversation(request: web.Request) -> web.Response:
    """``GET /api/v1/conversations/{id}``: summary, timeline and reply hints."""
    require_api(request)
    deps = request.app[DEPS]
    cid = _conv_id(request)
    summary = await _summary(request, cid)
    live = summary.conversation_id
    timeline = await deps.service.timeline(live, limit=200)
    contact = await deps.service.contact(summary.contact_id)
    phone = summary.phone
    opted_out = bool(phone) and await deps.service.is_suppressed(phone)
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
    return web.json_response(
        {
            "headline": spine.summary,
            "spine": spine_api.spine_json(spine, service),
            "summary": jsonable(summary),
            "contact": jsonable(contact),
            "timeline": jsonable(timeline),
            "reply": {
                "default_channel": default,
                "channels": list(routes.channels),
                "unavailable": dict(routes.unavailable),
                "phone": phone,
                "opted_out": opted_out,
                "quiet_hours": hours.in_quiet_hours(cfg.quiet_hours, cfg.timezone, time.time()),
                "quiet_hours_span": cfg.quiet_hours,
            },
            "can_call": deps.click_to_call is not None and bool(phone),
            "claims": claims,
        }
    )


async def _claims_payload(request: web.Request, conversation_id: int) -> list[dict[str, Any]]:
    """Claims in a conversation as the console shows them, with the known contact each one matches."""
    service = request.app[DEPS].service
    out: list[dict[str, Any]] = []
    for claim in await service.claims(conversation_id):
        match = await service.find_contact(claim.kind, claim.value) if claim.state == "pending" else None
        verified = claim.state == "verified"
        out.append(
            {
                "id": claim.id,
                "kind": claim.kind,
                "value": claim.value,
                "state": claim.state,
                "verified": verified,
                "method": claim.method,
                "label": f"says they are {claim.value}, " + ("verified" if verified else "not verified"),
                "texted": claim.texted_at is not None,
                "merge_id": claim.merge_id,
                "suggested_contact": (
                    {"id": match.id, "display_name": match.display_name, "conversation_id": match.conversation_id}
                    if match is not None
                    else None
                ),
            }
        )
    return out


async def confirm_claim(request: web.Request) -> web.Response:
    """``POST /api/v1/claims/{claim_id}/confirm``: staff vouch for a claimed number (one click; undoable merge)."""
    auth = require_api(request)
    try:
        claim_id = int(request.match_info["claim_id"])
    except ValueError as err:
        raise ValidationError("claim id must be a number") from err
    try:
        result = await request.app[DEPS].service.confirm_claim(claim_id, author=auth.actor)
    except LookupError as err:
        raise web.HTTPNotFound(text=str(err)) from err
    except ValueError as err:
        raise web.HTTPConflict(text=str(err)) from err
    return web.json_response(
        {
            "ok": True,
            "conversation_id": result.conversation_id,
            "contact_id": result.contact_id,
            "merge_id": result.merge_id,
        }
    )


async def send_message(request: web.Request) -> web.Response:
    """``POST /api/v1/conversations/{id}/messages``: reply by SMS (outbox) or chat."""
    auth = require_api(request)
    deps = request.app[DEPS]
    data = await read_json(request)
    cid = _conv_id(request)
    body = _text(data, "body", limit=deps.config.chat_max_message_chars * 2)
    channel = data.get("channel", "sms")
    if channel not in _REPLY_CHANNELS:
        raise ValidationError(f"channel {str(channel)[:20]!r} cannot be used to reply: use one of {_REPLY_CHANNELS}")
    override = bool(data.get("override_optout", False))
    if override and not is_admin(request):
        raise web.HTTPForbidden(
            text=json.dumps({"error": "only an admin may send to a number that opted out (STOP); ask one"}),
            content_type="application/json",
        )
    summary = await _summary(request, cid)
    to = data.get("to")
    if to is not None and not isinstance(to, str):
        raise ValidationError("field 'to' must be a string (a phone number)")
    try:
        result = await deps.service.reply(
            summary.conversation_id,
            channel,
            body,
            auth.actor,
            to=to or None,
            override_optout=override,
            confirm_number=data.get("confirm_number") is True,
        )
    except NumberNeedsConfirmationError as err:
        return web.json_response(
            {"error": str(err), "needs_confirmation": True, "fix": 'send again with "confirm_number": true'},
            status=409,
        )
    except NoRouteError as err:
        return web.json_response({"error": str(err), "no_route": True}, status=409)
    except OptedOutError as err:
        return web.json_response(
            {"error": str(err), "opted_out": True, "fix": "tick 'send anyway' to override"},
            status=409,
        )
    if result.channel == "chat":
        event_id = result.event_id
        ev = await deps.store.read(lambda c: _event(c, event_id))
        if ev is not None:
            await request.app[CHAT_HUB].push_event(ev)
        return web.json_response({"event_id": result.event_id, "channel": "chat"}, status=201)
    encoding, parts = segment_count(body)
    return web.json_response(
        {"outbox_id": result.outbox_id, "channel": "sms", "segments": parts, "encoding": encoding, "to": result.to},
        status=201,
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
    data = await read_json(request)
    body = _text(data, "body")
    summary = await _summary(request, _conv_id(request))
    event_id = await request.app[DEPS].service.append_event(
        summary.conversation_id, EventKind.NOTE, Channel.NOTE, body, author=auth.actor
    )
    return web.json_response({"event_id": event_id}, status=201)


async def update(request: web.Request) -> web.Response:
    """``PATCH /api/v1/conversations/{id}``: intent, next step, owner, urgent, preferred channel, status."""
    auth = require_api(request)
    data = await read_json(request)
    fields: dict[str, Any] = {}
    for key, value in data.items():
        want = _EDITABLE.get(key)
        if want is None:
            raise ValidationError(f"field {key!r} cannot be changed here; editable: {', '.join(_EDITABLE)}")
        if not isinstance(value, want):
            raise ValidationError(f"field {key!r} must be a {want.__name__}")
        if isinstance(value, str) and len(value) > 500:
            raise ValidationError(f"field {key!r} is longer than 500 characters")
        fields[key] = value
    if "status" in fields and fields["status"] not in _STATUSES:
        raise ValidationError(f"status must be one of {_STATUSES}")
    if not fields:
        raise ValidationError("nothing to change: send at least one field")
    summary = await _summary(request, _conv_id(request))
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
    return web.json_response({"ok": True, "fields": fields})


async def undo_merge(request: web.Request) -> web.Response:
    """``POST /api/v1/merges/{merge_id}/undo``: split two contacts that were merged (by a typed number or by hand)."""
    auth = require_api(request)
    try:
        merge_id = int(request.match_info["merge_id"])
    except ValueError as err:
        raise ValidationError("merge id must be a number") from err
    try:
        result = await request.app[DEPS].service.unmerge(merge_id, author=auth.actor)
    except LookupError as err:
        raise web.HTTPNotFound(text=str(err)) from err
    except ValueError as err:
        raise web.HTTPConflict(text=str(err)) from err
    return web.json_response(
        {
            "ok": True,
            "kept_conversation_id": result.kept_conversation_id,
            "restored_conversation_id": result.merged_conversation_id,
        }
    )


async def retry_transcription(request: web.Request) -> web.Response:
    """``POST /api/v1/voicemails/{event_id}/transcription/retry``: transcribe a failed voicemail again."""
    require_api(request)
    try:
        event_id = int(request.match_info["event_id"])
    except ValueError as err:
        raise ValidationError("voicemail event id must be a number") from err
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
    return web.json_response({"ok": True, "job_id": job.id, "status": job.status})


async def call(request: web.Request) -> web.Response:
    """``POST /api/v1/conversations/{id}/call``: ring the staff member's phone, then the customer."""
    session = require_staff(request)
    deps = request.app[DEPS]
    if deps.click_to_call is None:
        raise PermanentError("click-to-call is not available: the voice channel is not running")
    if not session.staff.extension:
        raise ValidationError("your login has no SIP extension: ask the operator to bind one")
    summary = await _summary(request, _conv_id(request))
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
    return web.json_response({"ok": True})


async def search(request: web.Request) -> web.Response:
    """``GET /api/v1/search?q=``: full-text search over messages, notes and transcripts."""
    require_api(request)
    text = request.query.get("q", "")
    if len(text) > 200:
        raise ValidationError("search text longer than 200 characters")
    from gateway.store import queries as q  # noqa: PLC0415

    match = q.fts_query(text)
    hits = await request.app[DEPS].store.read(lambda c: sql.search(c, match, 50)) if match else []
    return web.json_response({"results": hits})


async def segments(request: web.Request) -> web.Response:
    """``POST /api/v1/sms/segments``: how many SMS parts a text needs (reply box counter)."""
    require_api(request)
    data = await read_json(request)
    body = _text(data, "body", required=False, limit=10_000)
    encoding, parts = segment_count(body) if body else ("gsm7", 0)
    return web.json_response({"segments": parts, "encoding": encoding, "chars": len(body)})


async def staff_list(request: web.Request) -> web.Response:
    """``GET /api/v1/staff``: who can own a conversation."""
    require_api(request)
    from gateway.store import queries as q  # noqa: PLC0415

    rows = await request.app[DEPS].store.read(q.all_staff)
    return web.json_response(
        {"staff": [{"username": s.username, "display_name": s.display_name, "extension": s.extension} for s in rows]}
    )


async def tokens_list(request: web.Request) -> web.Response:
    """``GET /api/v1/tokens`` (console admins)."""
    _admin(request)
    rows = await request.app[DEPS].store.read(sql.list_api_tokens)
    return web.json_response({"tokens": rows})


async def tokens_create(request: web.Request) -> web.Response:
    """``POST /api/v1/tokens`` ``{"name": ...}``: the token is shown once."""
    _admin(request)
    data = await read_json(request)
    name = _text(data, "name", limit=100)
    scopes = data.get("scopes", ["read"])
    if not isinstance(scopes, list) or not scopes or any(x not in sql.SCOPES for x in scopes):
        raise ValidationError(f'scopes must be a non-empty list of {", ".join(sql.SCOPES)} (e.g. ["read"])')
    days = data.get("expires_in_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= 3650):
        raise ValidationError("expires_in_days must be a number of days between 0 and 3650, or left out")
    token = new_token()
    h = token_hash(token)
    now = time.time()
    expires = None if days is None else now + float(days) * 86400
    picked = tuple(x for x in sql.SCOPES if x in scopes)
    tid = await request.app[DEPS].store.write(
        lambda c: sql.create_api_token(c, name, h, now, scopes=picked, expires_at=expires)
    )
    log.info("api token %d created (scopes %s)", tid, ",".join(picked))
    return web.json_response(
        {"id": tid, "name": name, "token": token, "scopes": list(picked), "expires_at": expires}, status=201
    )


async def tokens_revoke(request: web.Request) -> web.Response:
    """``DELETE /api/v1/tokens/{id}``."""
    _admin(request)
    try:
        tid = int(request.match_info["token_id"])
    except ValueError as err:
        raise ValidationError("token id must be a number") from err
    now = time.time()
    done = await request.app[DEPS].store.write(lambda c: sql.revoke_api_token(c, tid, now))
    if not done:
        raise web.HTTPNotFound(text=f"no live token {tid}")
    return web.json_response({"ok": True})


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
        return web.json_response({"api_token": auth.actor})
    s = auth.session.staff
    return web.json_response(
        {
            "username": s.username,
            "display_name": s.display_name,
            "extension": s.extension,
            "role": s.role,
        }
    )


def openapi_paths() -> dict[str, Any]:
    """OpenAPI path items of the core API routes (the document is assembled in ``gateway.web.openapi``)."""
    ref = {"$ref": "#/components/schemas/Error"}
    err = {"description": "error", "content": {"application/json": {"schema": ref}}}
    cid = {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "integer"}}

    def body(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "properties": props, "required": required}}},
        }

    ok = {"200": {"description": "ok"}, "400": err, "401": err}
    return {
        "/api/v1/inbox": {"get": {"summary": "Open conversations, longest waiting first", "responses": ok}},
        "/api/v1/conversations/{conversation_id}": {
            "get": {
                "summary": "Summary, timeline and reply hints",
                "parameters": [cid],
                "responses": ok,
            },
            "patch": {
                "summary": "Change intent, next step, owner, urgent, preferred channel or status",
                "parameters": [cid],
                "requestBody": body(
                    {
                        "intent": {"type": "string"},
                        "next_step": {"type": "string"},
                        "owner": {"type": "string"},
                        "urgent": {"type": "boolean"},
                        "preferred_channel": {"type": "string"},
                        "status": {"type": "string", "enum": list(_STATUSES)},
                    },
                    [],
                ),
                "responses": ok,
            },
        },
        "/api/v1/conversations/{conversation_id}/messages": {
            "post": {
                "summary": "Reply by SMS (queued in the outbox) or chat",
                "parameters": [cid],
                "requestBody": body(
                    {
                        "body": {"type": "string"},
                        "channel": {"type": "string", "enum": list(_REPLY_CHANNELS)},
                        "override_optout": {"type": "boolean"},
                        "confirm_number": {"type": "boolean"},
                        "to": {"type": "string"},
                    },
                    ["body"],
                ),
                "responses": {
                    "201": {"description": "queued"},
                    "400": err,
                    "401": err,
                    "409": err,
                },
            }
        },
        "/api/v1/voicemails/{event_id}/transcription/retry": {
            "post": {
                "summary": "Transcribe a voicemail whose transcription failed again (fresh attempts)",
                "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "queued"}, "401": err, "409": err},
            }
        },
        "/api/v1/merges/{merge_id}/undo": {
            "post": {
                "summary": "Undo a merge of two contacts: each gets its own timeline back",
                "parameters": [{"name": "merge_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "undone"}, "401": err, "404": err, "409": err},
            }
        },
        "/api/v1/claims/{claim_id}/confirm": {
            "post": {
                "summary": "Confirm a number a customer typed (claimed): attach it, or merge with its known owner",
                "parameters": [{"name": "claim_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "verified"}, "401": err, "404": err, "409": err},
            }
        },
        "/api/v1/conversations/{conversation_id}/notes": {
            "post": {
                "summary": "Add an internal note",
                "parameters": [cid],
                "requestBody": body({"body": {"type": "string"}}, ["body"]),
                "responses": {"201": {"description": "added"}, "400": err, "401": err},
            }
        },
        "/api/v1/search": {
            "get": {
                "summary": "Full-text search",
                "parameters": [{"name": "q", "in": "query", "required": True, "schema": {"type": "string"}}],
                "responses": ok,
            }
        },
        "/api/v1/sms/segments": {
            "post": {
                "summary": "SMS parts needed for a text",
                "requestBody": body({"body": {"type": "string"}}, ["body"]),
                "responses": ok,
            }
        },
        "/api/v1/staff": {"get": {"summary": "Staff members", "responses": ok}},
        "/status.json": {"get": {"summary": "Operator status", "responses": ok}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)", "responses": ok}},
        "/api/v1/me": {"get": {"summary": "Who is authenticated (staff member or token)", "responses": ok}},
        "/api/v1/conversations/{conversation_id}/call": {
            "post": {
                "summary": "Ring the staff member's phone, then the customer (click to call)",
                "parameters": [cid],
                "responses": {"200": {"description": "dialling"}, "400": err, "401": err, "409": err},
            }
        },
        "/api/v1/tokens": {
            "get": {"summary": "API tokens (admins)", "responses": ok},
            "post": {
                "summary": "Create an API token (shown once)",
                "requestBody": body(
                    {
                        "name": {"type": "string"},
                        "scopes": {"type": "array", "items": {"type": "string"}},
                        "expires_in_days": {"type": "integer"},
                    },
                    ["name"],
                ),
                "responses": {"201": {"description": "created"}, "400": err, "401": err, "403": err},
            },
        },
        "/api/v1/tokens/{token_id}": {
            "delete": {
                "summary": "Revoke an API token",
                "parameters": [{"name": "token_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "revoked"}, "401": err, "403": err, "404": err},
            }
        },
        "/media/voicemail/{event_id}": {
            "get": {
                "summary": "The voicemail recording of a timeline event (audio/wav)",
                "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "audio/wav"}, "401": err, "404": err},
            }
        },
        "/api/openapi.json": {"get": {"summary": "This document", "security": [], "responses": ok}},
    }


async def openapi_json(request: web.Request) -> web.Response:
    """``GET /api/openapi.json``: generated from this application's route table."""
    return web.json_response(openapi.document(request.app, api_docs()))


def api_docs() -> dict[str, dict[str, Any]]:
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
