"""Operator status: ``/status`` (page), ``/status.json`` (machines) and ``/metrics`` (Prometheus text format).

Data comes from the ``status_sources`` callables the channels provide (Asterisk link, SIP endpoints, modem,
transcription backlog, backup...), from store queries (size, outbox depth, today's counts, webhook queue) and from a
ring buffer of recent WARNING/ERROR log records kept by :class:`RecentErrors`. A slow or failing source is shown as
such (``{"error": ...}``) instead of breaking the page.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any, NotRequired, TypedDict

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway import health as checks
from gateway.domain.limits import BudgetState
from gateway.store import queries as q
from gateway.store import sms as sms_sql
from gateway.store import web as sql
from gateway.values import HealthState, HealthView, worst
from gateway.web import hours
from gateway.web.deps import WebDeps
from gateway.web.jsonable import jsonable

log = logging.getLogger(__name__)


class StoreStatus(TypedDict):
    """The database file's size and the outbox by state (``outbox_depth``: queued and sending)."""

    size_bytes: int
    outbox_depth: int
    outbox: dict[str, int]


class BudgetView(TypedDict):
    """How many automated texts may still go out, against the hourly and daily limits."""

    ok: bool
    notice: str
    left: int
    used_hour: int
    per_hour: int
    used_day: int
    per_day: int


class ErrorRecord(TypedDict):
    """A WARNING or ERROR log record kept for the status page."""

    at: float
    level: str
    logger: str
    message: str


class StatusPage(TypedDict):
    """``/status.json``: the verdicts, the history for the sparklines, the store, today's counts, the automated-SMS
    budget, the queues; besides these, one object per running part, named by the part (``gateway``, ``backup``,
    ``modem``, ``asterisk``, ``transcription``). ``recent_errors`` only for admins."""

    generated_at: float
    verdict: str
    health: list[HealthView]
    history: dict[str, list[list[float | None]]]
    store: StoreStatus
    today: dict[str, int]
    automated_sms: BudgetView
    sms_inbound: dict[str, int]
    webhooks: dict[str, int]
    web: dict[str, Any]
    bus: dict[str, int]
    recent_errors: NotRequired[list[ErrorRecord]]


class RecentErrors(logging.Handler):
    """Keeps the last ``size`` WARNING+ log records of the gateway for the status page."""

    def __init__(self, size: int = 50) -> None:
        super().__init__(level=logging.WARNING)
        self.records: collections.deque[ErrorRecord] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        """Remember one record (message already formatted; house style keeps bodies/numbers out of it)."""
        try:
            self.records.append(
                {
                    "at": record.created,
                    "level": record.levelname,
                    "logger": record.name,
                    "message": record.getMessage()[:500],
                }
            )
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            self.handleError(record)


async def _source(name: str, fn: Any) -> tuple[str, Any]:
    try:
        return name, jsonable(await asyncio.wait_for(fn(), timeout=2.0))
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        return name, {"error": "no answer within 2 s"}
    except Exception as err:  # noqa: BLE001 - a broken source must not break the status page
        log.warning("status source %s failed: %s", name, err)
        return name, {"error": f"{type(err).__name__}: {err}"}


async def snapshot(deps: WebDeps, errors: RecentErrors, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the status page shows, as one JSON-ready dict."""
    now = time.time()
    # "Today" is the business's day, in its configured time zone.
    local_now = dt.datetime.now(hours.zone(deps.config.timezone))
    midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    sources = dict(await asyncio.gather(*(_source(n, f) for n, f in deps.status_sources.items())))

    def store_facts(conn: Any) -> dict[str, Any]:
        return {
            "database_bytes": sql.database_bytes(conn),
            "outbox": sql.outbox_states(conn),
            "today": q.counts_since(conn, midnight),
            "webhooks": sql.webhook_counts(conn),
            "unreadable_texts": sms_sql.unreadable_count(conn),
        }

    facts = await deps.store.read(store_facts)
    budget = await deps.service.budget_left()
    try:
        size = deps.store.size_bytes()
    except OSError:
        size = facts["database_bytes"]
    outbox = facts["outbox"]
    healths = list(deps.health()) if deps.health is not None else []
    healths.append(checks.check_automated_budget(budget))
    page: StatusPage = {
        "generated_at": now,
        "verdict": worst(healths).value,
        "health": [h.as_dict() for h in healths],
        "history": deps.history.as_dict() if deps.history is not None else {},
        "store": {
            "size_bytes": size,
            "outbox_depth": sum(v for k, v in outbox.items() if k in ("queued", "sending")),
            "outbox": outbox,
        },
        "today": facts["today"],
        "automated_sms": _budget_section(budget),
        "sms_inbound": {"unreadable_texts": facts["unreadable_texts"]},
        "webhooks": facts["webhooks"],
        "web": dict(extra),
        "bus": {"overflow_total": deps.bus.overflow_total},
        "recent_errors": list(reversed(errors.records)),
    }
    out: dict[str, Any] = dict(sources)
    out.update(page)
    return out


def _budget_section(state: BudgetState) -> BudgetView:
    window = state.spent_window
    if window == "day":
        notice = (
            f"Spent: {state.per_day} automated texts in 24 hours (sms.automated_per_day); "
            "further automated texts are not queued."
        )
    elif window == "hour":
        notice = (
            f"Spent: {state.per_hour} automated texts this hour (sms.automated_per_hour); "
            "further automated texts are not queued."
        )
    else:
        notice = f"{state.left} automated texts may still go out now"
    return {
        "ok": window is None,
        "notice": notice,
        "left": state.left,
        "used_hour": state.used_hour,
        "per_hour": state.per_hour,
        "used_day": state.used_day,
        "per_day": state.per_day,
    }


#: Status fields only admins see: SIM identities, file system paths, log lines (they can carry numbers and names).
ADMIN_ONLY = frozenset(
    {"imsi", "iccid", "imei", "path", "paths", "backup_dir", "device", "model_path", "db_path", "recent_errors"}
)
_PATHY = re.compile(r"(^|_)(path|dir|file)s?$")


def redact_details(value: Any) -> Any:
    """The snapshot without :data:`ADMIN_ONLY` fields (and anything named like a path) for non-admin callers."""
    if isinstance(value, Mapping):
        return {
            k: redact_details(v) for k, v in value.items() if str(k) not in ADMIN_ONLY and not _PATHY.search(str(k))
        }
    if isinstance(value, list):
        return [redact_details(v) for v in value]
    return value


_METRIC_NAME = re.compile(r"[^a-zA-Z0-9_]")


def _numbers(prefix: str, value: Any) -> Iterator[tuple[str, float]]:
    if isinstance(value, bool):
        yield prefix, 1.0 if value else 0.0
    elif isinstance(value, (int, float)):
        yield prefix, float(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _numbers(f"{prefix}_{_METRIC_NAME.sub('_', str(k))}", v)


class _SnapshotCollector(Collector):
    """Exposes one precomputed snapshot as gauges."""

    def __init__(self, snap: Mapping[str, Any]) -> None:
        self.snap = snap

    def collect(self) -> Iterator[GaugeMetricFamily]:
        today = GaugeMetricFamily("gateway_events_today", "timeline events since local midnight", labels=["kind"])
        for kind, n in self.snap.get("today", {}).items():
            today.add_metric([str(kind)], float(n))
        yield today
        outbox = GaugeMetricFamily("gateway_outbox_messages", "outbox rows per state", labels=["state"])
        for state, n in self.snap.get("store", {}).get("outbox", {}).items():
            outbox.add_metric([str(state)], float(n))
        yield outbox
        hooks = GaugeMetricFamily("gateway_webhook_deliveries", "webhook rows per state", labels=["state"])
        for state, n in self.snap.get("webhooks", {}).items():
            hooks.add_metric([str(state)], float(n))
        yield hooks
        verdicts = GaugeMetricFamily(
            "gateway_health",
            "verdict per check: 0 ok, 1 degraded, 2 down, -1 off (the status page's cards)",
            labels=["check"],
        )
        since = GaugeMetricFamily("gateway_health_since_seconds", "when each check entered its state", labels=["check"])
        for h in self.snap.get("health", []):
            verdicts.add_metric([str(h["name"])], float(HealthState(h["state"]).metric))
            if h.get("since") is not None:
                since.add_metric([str(h["name"])], float(h["since"]))
        yield verdicts
        yield since
        skip = {"today", "webhooks", "recent_errors", "generated_at", "health", "history", "verdict"}
        seen: set[str] = set()
        for section, value in self.snap.items():
            if section in skip:
                continue
            for name, number in _numbers(f"gateway_{_METRIC_NAME.sub('_', section)}", value):
                if name in seen or name.startswith("gateway_store_outbox_"):
                    continue
                seen.add(name)
                yield GaugeMetricFamily(name, f"{section} status value", value=number)
        yield GaugeMetricFamily(
            "gateway_recent_errors",
            "WARNING+ log records kept",
            value=len(self.snap.get("recent_errors", [])),
        )


def metrics_text(snap: Mapping[str, Any]) -> bytes:
    """The snapshot in Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snap))
    return generate_latest(registry)
