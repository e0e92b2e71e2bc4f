"""The web application: chat widget, staff console with screen-pop, operator status page and REST API.

``build_app(deps)`` returns the aiohttp application; :class:`WebServer` is the supervised part that runs it on
``[web] host:port``. The app owns three long-lived helpers, started and stopped with it (aiohttp cleanup context):
the chat hub (visitor sockets), the staff hub (bus consumer, staff sockets, screen-pop) and the webhook sender.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from aiohttp import web

from gateway.domain.events import Event, TimelineEventAdded
from gateway.leakage.service import LeakageService
from gateway.store import limits as limits_sql
from gateway.supervise import cancel_and_wait
from gateway.web import api, call_api, leakage, pages, spine_api
from gateway.web import rules as rules_views
from gateway.web.chat import CHAT_HUB, ChatHub
from gateway.web.deps import WebDeps
from gateway.web.jsonable import jsonable
from gateway.web.keys import DEPS
from gateway.web.security import (
    gateway_middleware,
    is_admin,
    require_api,
    require_staff,
    security_headers,
)
from gateway.web.staff import STAFF_HUB, StaffHub
from gateway.web.status import RecentErrors, metrics_text, redact_details, snapshot
from gateway.web.webhooks import WebhookSender

log = logging.getLogger(__name__)

WEBHOOKS = web.AppKey("webhooks", WebhookSender)
RECENT_ERRORS = web.AppKey("recent_errors", RecentErrors)
STARTED_AT = web.AppKey("started_at", float)
DIGEST = web.AppKey("leakage_digest", leakage.WeeklyDigest)

_STATIC = Path(str(resources.files("gateway.web").joinpath("static")))


async def _status_data(request: web.Request) -> dict[str, object]:
    app = request.app
    extra = {
        "chat_sockets": app[CHAT_HUB].socket_count,
        "chat_sockets_max": app[CHAT_HUB].max_sockets,
        "chat_refused_busy": app[CHAT_HUB].refused_busy,
        "staff_sockets": app[STAFF_HUB].socket_count,
        "uptime_seconds": round(time.time() - app[STARTED_AT], 1),
        "webhooks_delivered": app[WEBHOOKS].delivered,
        "webhook_failed_attempts": app[WEBHOOKS].failed_attempts,
    }
    return await snapshot(app[DEPS], app[RECENT_ERRORS], extra)


async def status_json(request: web.Request) -> web.Response:
    """``GET /status.json`` (staff session or API token)."""
    require_api(request)
    data = jsonable(await _status_data(request))
    if not is_admin(request):
        data = redact_details(data)
    return web.json_response(data)


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics`` in Prometheus text format (staff session or API token)."""
    require_api(request)
    data = await _status_data(request)
    data["leakage"] = await request.app[leakage.LEAKAGE].gauges()
    body = metrics_text(data)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def staff_ws(request: web.Request) -> web.StreamResponse:
    """``GET /staff/ws``: live updates and screen-pop for a logged-in staff member."""
    session = require_staff(request)
    return await request.app[STAFF_HUB].handle(request, session)


def _static(name: str, content_type: str) -> web.RouteDef:
    path = _STATIC / name

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "public, max-age=300"})

    return web.get(f"/{name}", handler)


PRUNE_INTERVAL_S = 3600.0


async def prune_once(deps: WebDeps) -> dict[str, int]:
    """Delete what only grows and is no longer needed (old visitors, finished webhooks, stale login counts)."""
    cfg = deps.config
    now = time.time()
    keep = cfg.retention_days * 86400.0
    login_keep = float(max(cfg.login_window_seconds, cfg.login_max_delay_seconds))
    deleted = await deps.store.write(
        lambda c: limits_sql.prune(c, now, keep_seconds=keep, login_keep_seconds=login_keep)
    )
    if any(deleted.values()):
        log.info("pruned %s", ", ".join(f"{n} {table}" for table, n in deleted.items() if n))
    return deleted


async def _prune_forever(deps: WebDeps) -> None:
    while True:
        try:
            await prune_once(deps)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - pruning is housekeeping; the next round tries again
            log.warning("pruning old rows failed: %s", err)
        await asyncio.sleep(PRUNE_INTERVAL_S)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    handler = app[RECENT_ERRORS]
    logging.getLogger("gateway").addHandler(handler)
    hub = app[STAFF_HUB]
    await hub.start()
    await app[WEBHOOKS].start()
    digest = app.get(DIGEST)
    if digest is not None:
        await digest.start()
    sweeper = asyncio.create_task(app[CHAT_HUB].run_sweeper(), name="web-chat-sweeper")
    pruner = asyncio.create_task(_prune_forever(app[DEPS]), name="web-pruner")
    # The leakage read model is built once at start, off the request path, so the first look at the page is quick.
    warm = asyncio.create_task(app[leakage.LEAKAGE].warm(), name="leakage-warm") if app[DEPS].leakage_warm else None
    try:
        yield
    finally:
        await cancel_and_wait(sweeper, pruner, warm, owner="web")
        if digest is not None:
            await digest.stop()
        await app[WEBHOOKS].stop()
        await hub.stop()
        await app[CHAT_HUB].close_all()
        logging.getLogger("gateway").removeHandler(handler)


async def _close_sockets(app: web.Application) -> None:
    """``on_shutdown``: close open websockets first, so stopping does not wait for their handlers to time out."""
    await app[CHAT_HUB].close_all()
    await app[STAFF_HUB].close_all()


def build_app(deps: WebDeps) -> web.Application:
    """The aiohttp application for ``deps`` (not yet running)."""
    app = web.Application(middlewares=[gateway_middleware], client_max_size=256 * 1024)
    app[DEPS] = deps
    app[STARTED_AT] = time.time()
    app[RECENT_ERRORS] = RecentErrors()
    chat = ChatHub(deps)
    staff = StaffHub(deps)
    webhooks = WebhookSender(deps)
    app[CHAT_HUB] = chat
    app[STAFF_HUB] = staff
    app[WEBHOOKS] = webhooks
    leak = deps.leakage or LeakageService(
        deps.store, deps.leakage_config, dict(deps.config.business_hours), deps.config.timezone
    )
    app[leakage.LEAKAGE] = leak
    lc = deps.leakage_config
    if lc.digest_enabled and deps.config.webhook_urls:
        app[DIGEST] = leakage.WeeklyDigest(
            leak, list(deps.config.webhook_urls), lc.digest_weekday, lc.digest_hour, webhooks.wake
        )

    async def chat_hook(event: Event) -> None:
        match event:
            # Visitor messages are pushed by the chat channel itself (to the visitor's other tabs only); staff
            # replies go to the visitor named in meta.to.
            case TimelineEventAdded(event=entry) if entry.channel == "chat" and entry.kind == "message_out":
                await chat.push_event(jsonable(entry))

    staff.add_hook(chat_hook)
    staff.add_hook(webhooks.on_event)
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_sockets)
    app.add_routes(
        [
            web.get("/", pages.index),
            web.get("/login", pages.login_get),
            web.post("/login", pages.login_post),
            web.post("/logout", pages.logout),
            web.post("/logout/all", pages.logout_everywhere),
            web.get("/console", pages.console),
            web.get("/status", pages.status_page),
            web.get("/status.json", status_json),
            web.get("/metrics", metrics),
            web.get("/demo", pages.demo),
            web.get("/chat/ws", chat.handle),
            web.get("/staff/ws", staff_ws),
            _static("widget.js", "text/javascript; charset=utf-8"),
            _static("widget.css", "text/css; charset=utf-8"),
            *api.routes(),
            *spine_api.routes(),
            *call_api.routes(),
            *rules_views.routes(),
            *leakage.routes(),
        ]
    )
    app.router.add_static("/static/", _STATIC, show_index=False, append_version=False)
    return app


class WebServer:
    """Supervised part running the web app on ``[web] host:port`` (127.0.0.1:8080 by default)."""

    def __init__(self, deps: WebDeps) -> None:
        self.deps = deps
        self.app = build_app(deps)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL the server listens on."""
        return f"http://{self.deps.config.host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the OS chose for port 0)."""
        if self._runner is not None:
            for addr in self._runner.addresses:
                if isinstance(addr, tuple):
                    return int(addr[1])
        return self.deps.config.port

    async def start(self) -> None:
        """Bind and serve."""
        cfg = self.deps.config
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, cfg.host, cfg.port, backlog=1024)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            from gateway.errors import ConfigError  # noqa: PLC0415

            raise ConfigError(
                f"[web] cannot listen on {cfg.host}:{cfg.port}: {err.strerror}; pick a free port"
            ) from err
        self._runner = runner
        log.info("web listening on %s", self.url)

    async def stop(self) -> None:
        """Close sockets and stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
