"""REST API of the conversation spine, and staff starting a thread with a number that has no conversation yet.

``GET/PATCH /api/v1/conversations/{id}/spine``, ``PUT/DELETE /api/v1/conversations/{id}/facts/{name}`` and
``POST /api/v1/conversations``. Every change goes through :class:`~gateway.domain.spine.SpineService`, so it lands on
the timeline with the caller's name (source ``staff`` for a console session, ``api`` for a token).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from aiohttp import web

from gateway.domain.limits import NumberNeedsConfirmationError
from gateway.domain.models import Channel, EventKind, IdentityKind
from gateway.domain.spine import CHANNEL_PREFERENCES, Spine, SpineService
from gateway.errors import ValidationError
from gateway.web.keys import DEPS
from gateway.web.schema import CONFIRM_FIX, NumberConflict, Operation, Reply, parse, path_id, path_int, respond
from gateway.web.security import Auth, read_json, require_api, require_staff

log = logging.getLogger(__name__)

_STRING_FIELDS = ("intent", "next_step", "next_step_owner", "owner", "channel_preference", "preference_why")


def spines(request: web.Request) -> SpineService:
    """The daemon's spine service (or one over the web layer's store and bus, built once)."""
    deps = request.app[DEPS]
    if deps.spine is None:
        deps.spine = SpineService(deps.store, deps.bus, timezone=deps.config.timezone)
    return deps.spine


def _source(auth: Auth) -> str:
    return "staff" if auth.session is not None else "api"


@dataclass(frozen=True, slots=True)
class SpineView:
    """The spine as the API and the console show it: the summary line, the fields, and the choices for the editor."""

    summary: str
    spine: Spine
    intents: list[str]
    channel_preferences: list[str]


@dataclass(frozen=True, slots=True)
class SpineChange:
    """The spine after a change, and what changed (``changed``: the fields, or whether a fact changed)."""

    changed: list[str] | bool
    summary: str
    spine: Spine
    intents: list[str]
    channel_preferences: list[str]


class SpinePatch(TypedDict, total=False):
    """``PATCH .../spine``: only the fields given change; null or "" clears one."""

    intent: str | None
    urgent: bool
    next_step: str | None
    next_step_due: float | str | None
    next_step_owner: str | None
    owner: str | None
    channel_preference: str | None
    preference_why: str | None


@dataclass(frozen=True, slots=True)
class FactValue:
    """``PUT .../facts/{name}``: the fact's value."""

    value: str | int | float


@dataclass(frozen=True, slots=True)
class StartRequest:
    """``POST /api/v1/conversations``: text the number (``body``), call it (``call``), or both."""

    phone: str
    body: str | None = None
    call: bool = False
    name: str | None = None
    confirm_number: bool = False


class Started(TypedDict):
    """The conversation the number landed in; ``outbox_id`` when a text was queued, ``calling`` when a call began."""

    conversation_id: int
    created: bool
    outbox_id: NotRequired[int]
    calling: NotRequired[bool]


def spine_json(spine: Spine, service: SpineService) -> SpineView:
    """The spine as the API and the console show it: summary line first, then the fields."""
    return SpineView(spine.summary, spine, list(service.intents), list(CHANNEL_PREFERENCES))


def _changed(changed: list[str] | bool, spine: Spine, service: SpineService) -> SpineChange:
    view = spine_json(spine, service)
    return SpineChange(changed, view.summary, view.spine, view.intents, view.channel_preferences)


async def _spine_or_404(service: SpineService, conversation_id: int) -> Spine:
    try:
        return await service.spine(conversation_id)
    except LookupError as err:
        raise web.HTTPNotFound(text=f"conversation {conversation_id} does not exist") from err


async def get_spine(request: web.Request) -> web.Response:
    """``GET /api/v1/conversations/{id}/spine``: the one-line summary and the spine."""
    require_api(request)
    service = spines(request)
    return respond(spine_json(await _spine_or_404(service, path_id(request, "conversation_id")), service))


def _due(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError("next_step_due must be unix seconds or an ISO 8601 time such as 2026-12-05T09:00-05:00")
    if isinstance(value, str):
        import datetime as dt  # noqa: PLC0415

        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError as err:
            raise ValidationError(
                f"next_step_due {value[:40]!r} is not an ISO 8601 time; write e.g. 2026-12-05T09:00-05:00"
            ) from err
        if moment.tzinfo is None:
            raise ValidationError("next_step_due needs a time zone offset, e.g. 2026-12-05T09:00-05:00")
        return moment.timestamp()
    return float(value)


def _checked_patch(data: dict[str, Any]) -> dict[str, Any]:
    allowed = {*_STRING_FIELDS, "urgent", "next_step_due"}
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ValidationError(
            f"field {unknown[0][:40]!r} cannot be changed here; editable: {', '.join(sorted(allowed))}"
        )
    if not data:
        raise ValidationError("nothing to change: send at least one field")
    for key in _STRING_FIELDS:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"field {key!r} must be a string or null")
        if isinstance(value, str) and len(value) > 500:
            raise ValidationError(f"field {key!r} is longer than 500 characters")
    if "urgent" in data and not isinstance(data["urgent"], bool):
        raise ValidationError("field 'urgent' must be true or false")
    parse(data, SpinePatch)  # the remaining types (next_step_due: a number, a text or null)
    return data


def _text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return (value.strip() or None) if isinstance(value, str) else None


async def _apply(service: SpineService, current: Spine, data: dict[str, Any], who: dict[str, str]) -> list[str]:
    conv = current.conversation_id
    changed: list[str] = []
    if "intent" in data or "urgent" in data:
        intent = _text(data, "intent") if "intent" in data else current.intent
        if await service.set_intent(conv, intent, urgent=data.get("urgent"), **who):
            changed.append("intent")
    if {"next_step", "next_step_due", "next_step_owner"} & data.keys():
        step = _text(data, "next_step") if "next_step" in data else current.next_step
        due = _due(data.get("next_step_due")) if "next_step_due" in data else current.next_step_due
        step_owner = _text(data, "next_step_owner") if "next_step_owner" in data else current.next_step_owner
        if await service.set_next_step(conv, step, due=due, owner=step_owner, **who):
            changed.append("next_step")
    if "owner" in data and await service.set_owner(conv, _text(data, "owner"), **who):
        changed.append("owner")
    return changed


async def patch_spine(request: web.Request) -> web.Response:
    """``PATCH /api/v1/conversations/{id}/spine``: intent, urgent, next step (due, owner), owner, preference."""
    auth = require_api(request)
    data = _checked_patch(await read_json(request))
    service = spines(request)
    current = await _spine_or_404(service, path_id(request, "conversation_id"))
    conv = current.conversation_id
    who = {"source": _source(auth), "set_by": auth.actor}

    changed = await _apply(service, current, data, who)
    if ("channel_preference" in data or "preference_why" in data) and await service.set_channel_preference(
        conv,
        _text(data, "channel_preference") if "channel_preference" in data else current.channel_preference,
        _text(data, "preference_why") or f"set by {auth.actor}",
        **who,
    ):
        changed.append("channel_preference")
    spine = await service.spine(conv)
    return respond(_changed(changed, spine, service))


async def put_fact(request: web.Request) -> web.Response:
    """``PUT /api/v1/conversations/{id}/facts/{name}``: set or correct a fact (``{"value": ...}``)."""
    auth = require_api(request)
    data = await read_json(request)
    if isinstance(data.get("value"), bool) or not isinstance(data.get("value"), str | int | float):
        raise ValidationError("field 'value' must be a string or a number")
    value: str | int | float | dict[str, str] = parse(data, FactValue).value
    if isinstance(value, str) and len(value) > 500:
        raise ValidationError("field 'value' is longer than 500 characters")
    name = request.match_info["name"]
    service = spines(request)
    current = await _spine_or_404(service, path_id(request, "conversation_id"))
    if name == "availability" and isinstance(value, str):
        value = {"text": value.strip()}
    changed = await service.set_fact(
        current.conversation_id, name, value, source=_source(auth), set_by=auth.actor, confidence=1.0
    )
    spine = await service.spine(current.conversation_id)
    return respond(_changed(changed, spine, service))


async def delete_fact(request: web.Request) -> web.Response:
    """``DELETE /api/v1/conversations/{id}/facts/{name}``: forget a wrong fact."""
    auth = require_api(request)
    service = spines(request)
    current = await _spine_or_404(service, path_id(request, "conversation_id"))
    name = request.match_info["name"]
    changed = await service.clear_fact(current.conversation_id, name, set_by=auth.actor, source=_source(auth))
    if not changed:
        raise web.HTTPNotFound(text=f"conversation {current.conversation_id} has no fact {name[:40]!r}")
    spine = await service.spine(current.conversation_id)
    return respond(_changed(True, spine, service))


def _start_request(data: dict[str, Any]) -> StartRequest:
    phone = data.get("phone")
    if not isinstance(phone, str) or not phone.strip():
        raise ValidationError("field 'phone' is missing: give the customer's number, e.g. +1 415 555 2671")
    body = data.get("body")
    if body is not None and (not isinstance(body, str) or not body.strip()):
        raise ValidationError("field 'body' must be the text to send (or leave it out to only call)")
    call = data.get("call", False)
    if not isinstance(call, bool):
        raise ValidationError("field 'call' must be true or false")
    if body is None and not call:
        raise ValidationError("say what to do: give 'body' to text the number, or 'call': true to call it")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise ValidationError("field 'name' must be a string")
    return parse(data, StartRequest)


async def start_conversation(request: web.Request) -> web.Response:
    """``POST /api/v1/conversations``: staff start a thread with a phone number (a text, a call, or both).

    ``{"phone": "...", "body": "..."}`` texts the number; ``{"phone": "...", "call": true}`` rings the staff member's
    phone, then the number (console sessions only). Either lands in the conversation that owns the number, created
    when there is none; the answer says which and whether it is new.
    """
    auth = require_api(request)
    deps = request.app[DEPS]
    data = await read_json(request)
    start = _start_request(data)
    phone, body, call, name = start.phone, start.body, start.call, start.name
    extension: str | None = None
    if call:
        session = require_staff(request)
        if deps.click_to_call is None:
            raise ValidationError("click-to-call is not available: the voice channel is not running")
        extension = session.staff.extension
        if not extension:
            raise ValidationError("your login has no SIP extension: ask the operator to bind one")
    ident = deps.service.normalize(IdentityKind.PHONE, phone)
    if not ident.valid:
        raise ValidationError(f"{phone[:40]!r} is not a complete phone number: include the area code")
    confirmed = start.confirm_number
    try:
        # The number policy before anything is created: a refused number leaves no empty conversation behind.
        for purpose, wanted in (("sms", body is not None), ("dial", call)):
            if wanted:
                deps.service.check_number(ident.value, purpose=purpose, staff=True, confirmed=confirmed)
    except NumberNeedsConfirmationError as err:
        return respond(NumberConflict(error=str(err), needs_confirmation=True, fix=CONFIRM_FIX), status=409)
    opened = await deps.service.open_conversation(IdentityKind.PHONE, phone, display_name=name)
    conv = opened.conversation_id
    what = " and ".join(w for w, on in (("a text", body is not None), ("a call", call)) if on)
    await deps.service.append_event(
        conv,
        EventKind.HANDOFF,
        Channel.SYSTEM,
        f"Conversation started by {auth.actor} with {what}" if opened.created else f"{auth.actor} reached out: {what}",
        meta={"agent_initiated": True, "new_conversation": opened.created},
        author=auth.actor,
    )
    result = Started(conversation_id=conv, created=opened.created)
    if body is not None:
        result["outbox_id"] = await deps.service.enqueue_outbound(
            conv, Channel.SMS, phone, body, automated=False, author=auth.actor, confirm_number=confirmed
        )
    if call and extension is not None and deps.click_to_call is not None:
        await deps.click_to_call(extension, ident.value)
        await deps.service.append_event(
            conv,
            EventKind.HANDOFF,
            Channel.VOICE,
            f"Call started by {auth.actor}",
            meta={"click_to_call": True, "extension": extension, "agent_initiated": True},
            author=auth.actor,
        )
        result["calling"] = True
    log.info("conversation %d: started by %s at %.0f", conv, auth.actor, time.time())
    return respond(result, status=201 if opened.created else 200)


def routes() -> list[web.RouteDef]:
    """Spine routes."""
    return [
        web.post("/api/v1/conversations", start_conversation),
        web.get("/api/v1/conversations/{conversation_id}/spine", get_spine),
        web.patch("/api/v1/conversations/{conversation_id}/spine", patch_spine),
        web.put("/api/v1/conversations/{conversation_id}/facts/{name}", put_fact),
        web.delete("/api/v1/conversations/{conversation_id}/facts/{name}", delete_fact),
    ]


def openapi_paths() -> dict[str, dict[str, Operation]]:
    """OpenAPI path items of the spine routes."""
    cid = path_int("conversation_id")
    name = {"type": "string", "pattern": "^[a-z0-9_]{1,40}$"}
    fact = {"name": "name", "in": "path", "required": True, "schema": name}
    changed = {200: Reply("the spine after the change", SpineChange)}
    errors = (400, 401, 404)
    return {
        "/api/v1/conversations": {
            "post": Operation(
                "Start a thread with a number (text and/or click-to-call); lands in that number's conversation, "
                "created when there is none",
                request=StartRequest,
                responses={
                    200: Reply("existing conversation", Started),
                    201: Reply("created", Started),
                    409: Reply("the number needs confirming first", NumberConflict),
                },
            )
        },
        "/api/v1/conversations/{conversation_id}/spine": {
            "get": Operation(
                "One-line summary and spine",
                parameters=(cid,),
                responses={200: Reply("the spine", SpineView)},
                errors=errors,
            ),
            "patch": Operation(
                "Change intent, urgent, next step (due, owner), owner or channel preference "
                f"(one of {', '.join(CHANNEL_PREFERENCES)})",
                parameters=(cid,),
                request=SpinePatch,
                responses=changed,
                errors=errors,
            ),
        },
        "/api/v1/conversations/{conversation_id}/facts/{name}": {
            "put": Operation(
                "Set or correct a captured fact",
                parameters=(cid, fact),
                request=FactValue,
                responses=changed,
                errors=errors,
            ),
            "delete": Operation("Forget a fact", parameters=(cid, fact), responses=changed, errors=errors),
        },
    }
