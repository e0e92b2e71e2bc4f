"""REST API of what happens around a handoff to a person: the handoff card and the promises staff made.

``GET /api/v1/conversations/{id}/handoff``: the card (what they want, what we know, what was promised, the preferred
channel, whether it is quiet hours now). ``GET /api/v1/conversations/{id}/promises``, ``POST
/api/v1/promises/{id}/confirm`` and ``POST /api/v1/promises/{id}/dismiss``: promises heard on calls and in replies,
proposed until staff confirm them. ``GET /api/v1/promises/not-kept``: confirmed promises whose due time passed with
no staff contact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from gateway.continuity.promise_keeper import PromiseKeeper
from gateway.continuity.promises import Hours
from gateway.domain.handoff import HandoffCard, handoff_card
from gateway.store.promises import PromiseRow
from gateway.web import hours
from gateway.web.keys import DEPS
from gateway.web.schema import Operation, Reply, path_id, path_int, respond
from gateway.web.security import require_api
from gateway.web.spine_api import spines


@dataclass(frozen=True, slots=True)
class PromiseList:
    """Promises, newest first."""

    promises: list[PromiseRow]


@dataclass(frozen=True, slots=True)
class PromiseDecided:
    """The promise after staff confirmed or dismissed it."""

    promise: PromiseRow


def keeper(request: web.Request) -> PromiseKeeper:
    """The daemon's promise keeper (or one over the web layer's store, built once)."""
    deps = request.app[DEPS]
    if deps.promises is None:
        cfg = deps.config
        deps.promises = PromiseKeeper(
            deps.store, deps.service, spines(request), deps.bus, Hours(dict(cfg.business_hours), cfg.timezone)
        )
    return deps.promises


async def handoff(request: web.Request) -> web.Response:
    """``GET /api/v1/conversations/{id}/handoff``: the handoff card, built from the spine and the recent timeline."""
    require_api(request)
    deps = request.app[DEPS]
    conv = path_id(request, "conversation_id")
    try:
        spine = await spines(request).spine(conv)
        recent = await deps.service.timeline(conv, limit=30)
    except LookupError as err:
        raise web.HTTPNotFound(text=f"conversation {conv} does not exist") from err
    now = time.time()
    quiet = hours.in_quiet_hours(deps.config.quiet_hours, deps.config.timezone, now)
    proposed = [p for p in await keeper(request).promises(conv) if p.status != "dismissed"]
    return respond(handoff_card(spine, recent, quiet_hours=quiet, promises=proposed))


async def list_promises(request: web.Request) -> web.Response:
    """``GET /api/v1/conversations/{id}/promises``: promises heard in the conversation, newest first."""
    require_api(request)
    rows = await keeper(request).promises(path_id(request, "conversation_id"))
    return respond(PromiseList(rows))


async def _decide(request: web.Request, confirm: bool) -> web.Response:
    auth = require_api(request)
    pid = path_id(request, "promise_id")
    k = keeper(request)
    try:
        row = await (k.confirm(pid, staff=auth.actor) if confirm else k.dismiss(pid, staff=auth.actor))
    except LookupError as err:
        raise web.HTTPNotFound(text=str(err)) from err
    return respond(PromiseDecided(row))


async def confirm_promise(request: web.Request) -> web.Response:
    """``POST /api/v1/promises/{id}/confirm``: it becomes the conversation's next step, due when promised."""
    return await _decide(request, True)


async def dismiss_promise(request: web.Request) -> web.Response:
    """``POST /api/v1/promises/{id}/dismiss``: not a promise after all; it counts nowhere."""
    return await _decide(request, False)


async def promises_not_kept(request: web.Request) -> web.Response:
    """``GET /api/v1/promises/not-kept``: confirmed promises past due with no staff contact in time."""
    require_api(request)
    rows = await keeper(request).not_kept()
    return respond(PromiseList(rows))


def routes() -> list[web.RouteDef]:
    """Handoff and promise routes."""
    return [
        web.get("/api/v1/conversations/{conversation_id}/handoff", handoff),
        web.get("/api/v1/conversations/{conversation_id}/promises", list_promises),
        web.post("/api/v1/promises/{promise_id}/confirm", confirm_promise),
        web.post("/api/v1/promises/{promise_id}/dismiss", dismiss_promise),
        web.get("/api/v1/promises/not-kept", promises_not_kept),
    ]


def openapi_paths() -> dict[str, dict[str, Operation]]:
    """OpenAPI path items of the handoff and promise routes."""
    cid = (path_int("conversation_id"),)
    pid = (path_int("promise_id"),)
    errors = (400, 401, 404)
    return {
        "/api/v1/conversations/{conversation_id}/handoff": {
            "get": Operation(
                "Handoff card: what they want, what we know, what was promised, preferred channel, quiet hours now",
                parameters=cid,
                responses={200: Reply("the card", HandoffCard)},
                errors=errors,
            )
        },
        "/api/v1/conversations/{conversation_id}/promises": {
            "get": Operation(
                "Promises heard on calls and in staff replies",
                parameters=cid,
                responses={200: Reply("promises", PromiseList)},
                errors=errors,
            )
        },
        "/api/v1/promises/{promise_id}/confirm": {
            "post": Operation(
                "Confirm a promise: it becomes the next step",
                parameters=pid,
                responses={200: Reply("confirmed", PromiseDecided)},
                errors=errors,
            )
        },
        "/api/v1/promises/{promise_id}/dismiss": {
            "post": Operation(
                "Dismiss a proposed promise",
                parameters=pid,
                responses={200: Reply("dismissed", PromiseDecided)},
                errors=errors,
            )
        },
        "/api/v1/promises/not-kept": {
            "get": Operation(
                "Confirmed promises past due with no staff contact in time",
                responses={200: Reply("promises not kept", PromiseList)},
            )
        },
    }
