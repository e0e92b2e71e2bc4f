"""The rules in the console: a read-only settings view, a conversation's scheduled sends, the one-click call recap.

``GET /rules`` is the page (rendered by ``static/rules.js`` from ``GET /api/v1/continuity/settings``);
``GET /api/v1/conversations/{id}/continuity`` lists scheduled and finished automated sends with their reasons;
``POST /api/v1/conversations/{id}/recap`` texts the customer a summary of what was agreed;
``POST /api/v1/conversations/{id}/callback`` books a call-back at the moment the customer picked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.errors import PermanentError, ValidationError
from gateway.web import pages
from gateway.web.keys import DEPS
from gateway.web.schema import ErrorBody, Operation, Reply, parse, path_id, path_int, respond
from gateway.web.security import read_json, require_api, require_staff

if TYPE_CHECKING:
    from gateway.continuity.engine import ContinuityEngine


@dataclass(frozen=True, slots=True)
class ContinuityJob:
    """A scheduled or finished automated send: its rule, when it is due, its state and why."""

    id: int
    rule: str
    due_at: float
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class JobList:
    """``GET .../continuity``: the conversation's automated sends, newest first."""

    jobs: list[ContinuityJob]


@dataclass(frozen=True, slots=True)
class RecapQueued:
    """The recap text, queued in the outbox."""

    outbox_id: int


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """``POST .../callback``: when to call back (unix seconds, or ISO 8601 with an offset)."""

    at: float | str


@dataclass(frozen=True, slots=True)
class CallbackBooked:
    """The call-back job."""

    job_id: int


def _engine(request: web.Request) -> ContinuityEngine:
    engine = request.app[DEPS].continuity
    if engine is None:
        raise web.HTTPConflict(
            text='{"error": "the continuity rules are switched off ([continuity] enabled = false)"}',
            content_type="application/json",
        )
    return engine


async def rules_page(request: web.Request) -> web.StreamResponse:
    """``GET /rules``: the active rules, restraint and templates, read-only."""
    session = require_staff(request)
    return pages.render(
        "rules.html",
        csrf=session.csrf_token,
        user=session.staff.display_name,
        business=request.app[DEPS].config.business_name,
    )


async def settings(request: web.Request) -> web.Response:
    """``GET /api/v1/continuity/settings``: what the rules do as configured."""
    require_api(request)
    engine = request.app[DEPS].continuity
    if engine is None:
        return web.json_response({"enabled": False, "rules": [], "templates": {}, "restraint": {}})
    return web.json_response(engine.settings())


async def conversation_jobs(request: web.Request) -> web.Response:
    """``GET /api/v1/conversations/{id}/continuity``: scheduled and finished automated sends."""
    require_api(request)
    engine = _engine(request)
    return respond(JobList([ContinuityJob(**job) for job in await engine.jobs(path_id(request, "conversation_id"))]))


async def recap(request: web.Request) -> web.Response:
    """``POST /api/v1/conversations/{id}/recap``: text the customer what was agreed (intent, next step, time)."""
    auth = require_api(request)
    engine = _engine(request)
    try:
        outbox_id = await engine.recap(path_id(request, "conversation_id"), author=auth.actor)
    except LookupError as err:
        raise web.HTTPNotFound(text='{"error": "no such conversation"}', content_type="application/json") from err
    except PermanentError as err:
        return respond(ErrorBody(str(err)), status=409)
    return respond(RecapQueued(outbox_id), status=201)


async def callback(request: web.Request) -> web.Response:
    """``POST /api/v1/conversations/{id}/callback`` with ``{"at": unix seconds or ISO 8601 with offset}``."""
    auth = require_api(request)
    engine = _engine(request)
    data = await read_json(request)
    raw = data.get("at")
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValidationError("'at' must be unix seconds or an ISO 8601 time with an offset")
    at = parse(data, CallbackRequest).at
    if isinstance(at, str):
        try:
            moment = dt.datetime.fromisoformat(at)
        except ValueError as err:
            raise ValidationError(f"'at' = {at[:40]!r} is not ISO 8601 (e.g. 2026-12-05T09:00:00-05:00)") from err
        if moment.tzinfo is None:
            raise ValidationError("'at' needs a time zone offset, e.g. 2026-12-05T09:00:00-05:00")
        at = moment.timestamp()
    try:
        job_id = await engine.schedule_call(path_id(request, "conversation_id"), at, author=auth.actor)
    except PermanentError as err:
        return respond(ErrorBody(str(err)), status=409)
    return respond(CallbackBooked(job_id), status=201)


def routes() -> list[web.RouteDef]:
    """Routes of the rules views."""
    return [
        web.get("/rules", rules_page),
        web.get("/api/v1/continuity/settings", settings),
        web.get("/api/v1/conversations/{conversation_id}/continuity", conversation_jobs),
        web.post("/api/v1/conversations/{conversation_id}/recap", recap),
        web.post("/api/v1/conversations/{conversation_id}/callback", callback),
    ]


def openapi_paths() -> dict[str, dict[str, Operation]]:
    """OpenAPI path items of the continuity routes."""
    cid = (path_int("conversation_id"),)
    errors = (400, 401, 404, 409)
    return {
        "/api/v1/continuity/settings": {
            "get": Operation(
                "What the continuity rules do as configured",
                responses={200: Reply("rules, restraint and templates", dict[str, Any])},
            )
        },
        "/api/v1/conversations/{conversation_id}/continuity": {
            "get": Operation(
                "Scheduled and finished automated sends",
                parameters=cid,
                responses={200: Reply("the sends", JobList)},
                errors=errors,
            )
        },
        "/api/v1/conversations/{conversation_id}/recap": {
            "post": Operation(
                "Text the customer what was agreed (intent, next step, time)",
                parameters=cid,
                responses={201: Reply("queued", RecapQueued)},
                errors=errors,
            )
        },
        "/api/v1/conversations/{conversation_id}/callback": {
            "post": Operation(
                "Schedule a call-back reminder at a time (unix seconds or ISO 8601 with offset)",
                parameters=cid,
                request=CallbackRequest,
                responses={201: Reply("booked", CallbackBooked)},
                errors=errors,
            )
        },
    }
