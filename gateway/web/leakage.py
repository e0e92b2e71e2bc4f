"""The Leakage page, its JSON/CSV API, the Prometheus gauges and the optional weekly digest webhook.

Routes: ``GET /leakage`` (staff page), ``GET /api/v1/leakage?from=&to=`` (every metric over a range; ``format=csv``
gives the daily series), ``GET /api/v1/leakage/overview`` (what the page shows), ``GET /api/v1/leakage/items``
(the conversations behind a count; ``format=csv`` too). Dates are the office's local days (``[web] timezone``).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypedDict

from aiohttp import web

from gateway.leakage.metrics import METRICS
from gateway.leakage.service import LeakageService, LeakRow, Overview, Report
from gateway.store import web as sql
from gateway.supervise import cancel_and_wait
from gateway.web.hours import DAYS, zone
from gateway.web.keys import DEPS
from gateway.web.pages import render
from gateway.web.schema import JSON, Operation, Reply, respond
from gateway.web.security import require_api, require_staff

#: ``GET /api/v1/leakage/items``: the conversations behind one metric's count over a range of local days (``from``
#: is a keyword in Python, hence the functional form).
LeakItems = TypedDict("LeakItems", {"metric": str, "from": str, "to": str, "count": int, "items": list[LeakRow]})

log = logging.getLogger(__name__)

LEAKAGE = web.AppKey("leakage", LeakageService)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (names and details can be typed by anyone)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv(name: str, header: list[str], rows: list[list[Any]]) -> web.Response:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    for r in rows:
        w.writerow([_cell(v) for v in r])
    return web.Response(
        text=buf.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _wants_csv(request: web.Request) -> bool:
    return request.query.get("format", "json").lower() == "csv"


async def page(request: web.Request) -> web.StreamResponse:
    """``GET /leakage``: the page shell (data comes from the overview API, rendered as text)."""
    session = require_staff(request)
    cfg = request.app[DEPS].config
    return render("leakage.html", csrf=session.csrf_token, user=session.staff.display_name, business=cfg.business_name)


async def report(request: web.Request) -> web.Response:
    """``GET /api/v1/leakage?from=YYYY-MM-DD&to=YYYY-MM-DD``: every metric, per owner, ROI and the daily series."""
    require_api(request)
    svc = request.app[LEAKAGE]
    win = svc.parse_range(request.query.get("from"), request.query.get("to"))
    data = await svc.report(win)
    if _wants_csv(request):
        daily = data["daily"]
        keys = list(METRICS)
        header = ["day", *keys, "first_response_median_seconds"]
        rows = [
            [day, *(daily["series"][k][i] for k in keys), daily["first_response_median_seconds"][i]]
            for i, day in enumerate(daily["days"])
        ]
        return _csv(f"leakage-daily-{data['from']}-{data['to']}.csv", header, rows)
    return respond(data)


async def overview(request: web.Request) -> web.Response:
    """``GET /api/v1/leakage/overview``: today, 7 and 30 days with the previous periods, 30 daily counts."""
    require_api(request)
    return respond(await request.app[LEAKAGE].overview())


async def items(request: web.Request) -> web.Response:
    """``GET /api/v1/leakage/items?metric=&from=&to=[&owner=][&channel=][&format=csv]``: the list behind a count."""
    require_api(request)
    svc = request.app[LEAKAGE]
    metric = request.query.get("metric", "")
    win = svc.parse_range(request.query.get("from"), request.query.get("to"))
    owner = request.query.get("owner")
    channel = request.query.get("channel") or None
    rows = await svc.items(metric, win, owner=owner, channel=channel)
    if _wants_csv(request):
        header = ["conversation_id", "name", "local_time", "owner", "detail", "console_url"]
        body = [
            [r["conversation_id"], r["name"], r["local_time"], r["owner"], r["detail"],
             f"/console#conversation={r['conversation_id']}"]
            for r in rows
        ]  # fmt: skip
        return _csv(f"leakage-{metric}-{win.days[0]}-{win.days[-1]}.csv", header, body)
    answer: LeakItems = {"metric": metric, "from": win.days[0], "to": win.days[-1], "count": len(rows), "items": rows}
    return respond(answer)


def routes() -> list[web.RouteDef]:
    """Routes of the leakage page and API."""
    return [
        web.get("/leakage", page),
        web.get("/api/v1/leakage", report),
        web.get("/api/v1/leakage/overview", overview),
        web.get("/api/v1/leakage/items", items),
    ]


def _range_params() -> tuple[dict[str, Any], ...]:
    date = {"type": "string", "format": "date"}
    return (
        {"name": "from", "in": "query", "schema": date, "description": "first local day (default: 6 days before to)"},
        {"name": "to", "in": "query", "schema": date, "description": "last local day, included (default: today)"},
        {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv"]}},
    )


def openapi_paths() -> dict[str, dict[str, Operation]]:
    """The OpenAPI path items of the leakage API."""
    csv_too = (JSON, "text/csv")
    return {
        "/api/v1/leakage": {
            "get": Operation(
                "Leakage metrics over a range of local days: counts, per owner, first response times, "
                "automated messages sent and not sent by reason, ROI estimate, daily series (CSV: the daily series)",
                parameters=_range_params(),
                responses={200: Reply("the report", Report, media=csv_too)},
            )
        },
        "/api/v1/leakage/overview": {
            "get": Operation(
                "Each leakage metric for today, 7 and 30 days with the change against the previous period",
                responses={200: Reply("the overview", Overview)},
            )
        },
        "/api/v1/leakage/items": {
            "get": Operation(
                "The conversations behind a leakage count (CSV with format=csv)",
                parameters=(
                    {
                        "name": "metric",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "enum": [*METRICS, "first_response"]},
                    },
                    *_range_params(),
                    {"name": "owner", "in": "query", "schema": {"type": "string"}},
                    {"name": "channel", "in": "query", "schema": {"type": "string"}},
                ),
                responses={200: Reply("the conversations", LeakItems, media=csv_too)},
            )
        },
    }


# ------------------------------------------------------------------------------------------------- weekly digest


def next_digest_at(now: float, weekday: str, hour: int, tz: str) -> float:
    """The next moment (after ``now``) that is ``weekday`` at ``hour``:00 in ``tz``."""
    zi = zone(tz)
    local = dt.datetime.fromtimestamp(now, zi)
    target = DAYS.index(weekday)
    day = local.date() + dt.timedelta(days=(target - local.weekday()) % 7)
    for _ in range(3):
        at = dt.datetime.combine(day, dt.time(hour), tzinfo=zi).timestamp()
        if at > now:
            return at
        day += dt.timedelta(days=7)
    raise AssertionError("unreachable: a week ahead is always after now")


class WeeklyDigest:
    """Posts ``leakage.weekly`` (the last 7 full local days) through the signed webhook queue, once a week.

    Off unless ``[leakage] digest_enabled`` and ``[web] webhook_urls`` are set. The post goes through the same
    durable, signed, retried queue as every other webhook.
    """

    def __init__(
        self, service: LeakageService, urls: list[str], weekday: str, hour: int, wake: Callable[[], None]
    ) -> None:
        self.service = service
        self.urls = urls
        self.weekday = weekday
        self.hour = hour
        self._wake = wake
        self._task: asyncio.Task[None] | None = None

    async def post(self) -> dict[str, Any]:
        """Queue the digest of the last 7 full days now; returns the payload."""
        svc = self.service
        last = svc.today() - dt.timedelta(days=1)
        win = svc.day_window(last - dt.timedelta(days=6), last)
        data = await svc.report(win)
        payload = {
            "from": data["from"],
            "to": data["to"],
            "timezone": data["timezone"],
            "leaks_total": data["leaks_total"],
            "metrics": {
                k: {"count": v["count"], "conversations": v["conversations"]} for k, v in data["metrics"].items()
            },
            "automated_not_sent_by_reason": data["automated_not_sent_by_reason"],
            "first_response": {
                ch: {"median_seconds": v["median_seconds"], "p90_seconds": v["p90_seconds"]}
                for ch, v in data["first_response"].items()
            },
            "roi": data["roi"],
        }
        now = time.time()
        body = json.dumps({"type": "leakage.weekly", "created_at": now, "data": payload}, separators=(",", ":"))
        urls = list(self.urls)
        await svc.store.write(lambda c: sql.enqueue_webhooks(c, urls, "leakage.weekly", body, now))
        self._wake()
        log.info("leakage weekly digest queued for %s..%s", data["from"], data["to"])
        return payload

    async def _run(self) -> None:
        while True:
            now = self.service.clock()
            at = next_digest_at(now, self.weekday, self.hour, self.service.tz)
            await asyncio.sleep(max(1.0, at - now))
            try:
                await self.post()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leakage weekly digest failed; next week's will be tried")

    async def start(self) -> None:
        """Start the weekly timer."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="leakage-digest")

    async def stop(self) -> None:
        """Stop the timer."""
        await cancel_and_wait(self._task, owner="leakage-digest")
        self._task = None
