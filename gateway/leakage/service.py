"""The leakage read model: reads a window of the timeline from the store and answers reports, lists and series.

One :meth:`LeakageService.collect` call reads the window once (plus a day of history before it and the answers after
it) and runs :func:`gateway.leakage.metrics.collect`; every view (cards, daily series, lists, CSV, API, gauges) is a
filter over that one result. Results are kept per (window, minute of the clock, the store's data version): a second
look at the same page costs nothing until something is written or the minute changes.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import functools
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from gateway.errors import ValidationError
from gateway.leakage.config import LeakageConfig
from gateway.leakage.metrics import (
    LEAKS,
    METRICS,
    Collected,
    ConversationInfo,
    DayTotals,
    FirstResponse,
    Item,
    MetricCount,
    Roi,
    Row,
    RunningTotals,
    Sample,
    TotalsView,
    collect,
    next_step_items,
    roi,
    visible,
)
from gateway.store import leakage as sql
from gateway.store.db import Store
from gateway.web.hours import BusinessCalendar, ClosedDates, zone

log = logging.getLogger(__name__)


class Daily(TypedDict):
    """Counts per local day for every metric, and the median first response of each day."""

    days: list[str]
    series: dict[str, list[int]]
    first_response_median_seconds: list[float | None]


#: ``GET /api/v1/leakage``: every metric over a range of local days (``from`` and ``to`` included), per owner, the
#: reasons automated messages were not sent, first responses, the ROI estimate and the daily series.
Report = TypedDict(
    "Report",
    {
        "metrics": dict[str, MetricCount],
        "automated_not_sent_by_reason": dict[str, int],
        "first_response": dict[str, FirstResponse],
        "from": str,
        "to": str,
        "timezone": str,
        "roi": Roi,
        "daily": Daily,
        "leaks_total": int,
    },
)


class PeriodMetric(TypedDict):
    """One metric over a period and the period before it."""

    count: int
    previous: int
    change: int
    conversations: int
    by_owner: dict[str, int]


#: One period of the overview (today, 7 or 30 days) against the period of the same length before it.
Period = TypedDict(
    "Period",
    {
        "from": str,
        "to": str,
        "previous_from": str,
        "previous_to": str,
        "metrics": dict[str, PeriodMetric],
        "automated_not_sent_by_reason": dict[str, int],
        "first_response": dict[str, FirstResponse],
        "previous_first_response": dict[str, FirstResponse],
        "roi": Roi,
    },
)


class Thresholds(TypedDict):
    """The configured times after which a contact counts as leaked."""

    missed_call_minutes: int
    voicemail_minutes: int
    sms_wait_hours: float
    chat_idle_minutes: int


class Overview(TypedDict):
    """``GET /api/v1/leakage/overview``: each metric for today, 7 and 30 days, and 30 days of daily counts."""

    today: str
    timezone: str
    titles: dict[str, str]
    leaks: list[str]
    thresholds: Thresholds
    currency: str
    periods: dict[str, Period]
    daily: Daily


class LeakRow(TypedDict):
    """One leak (or first-response sample) behind a count, with the customer's name once looked up."""

    conversation_id: int
    at: float
    local_time: str
    owner: str
    detail: str
    name: NotRequired[str]


#: The periods the page shows, in days ending today.
PERIODS = {"today": 1, "7d": 7, "30d": 30}

_HISTORY_S = 86400.0  # a day of history before a window: was the customer already waiting?
_EDIT_SLACK_S = 5.0  # conversation edits are found by updated_at; allow for writes that were in flight
#: Days the kept read model covers (the page compares 30 days with the 30 before).
KEPT_DAYS = 60


@dataclass
class _Kept:
    """The kept read model: items and samples per conversation from ``start`` on, as judged at the last look, and
    the running day totals of the kept days."""

    day: dt.date
    start: float
    per_conversation: dict[int, tuple[list[Item], list[Sample]]]
    running: RunningTotals
    steps: list[Item] = field(default_factory=list)
    last_event_id: int = 0
    merges: tuple[int, int] = (0, 0)
    wall: float = 0.0
    flat: Collected | None = None
    version: int = 0
    edits_checked: float = 0.0


def _by_conversation(got: Collected) -> dict[int, tuple[list[Item], list[Sample]]]:
    out: dict[int, tuple[list[Item], list[Sample]]] = {}
    for it in got.items:
        out.setdefault(it.conversation_id, ([], []))[0].append(it)
    for smp in got.samples:
        out.setdefault(smp.conversation_id, ([], []))[1].append(smp)
    return out


@dataclass(frozen=True)
class Window:
    """A half-open range of unix time, with the local days it covers."""

    start: float
    end: float
    days: tuple[str, ...]
    day_starts: tuple[float, ...]


class LeakageService:
    """Leakage reports over the store. ``hours``/``tz`` are the office's business hours (``[web]``)."""

    def __init__(
        self,
        store: Store,
        config: LeakageConfig,
        hours: dict[str, str],
        tz: str,
        clock: Callable[[], float] = time.time,
        cache_size: int = 16,
        closed: ClosedDates | None = None,
        kept_days: int = KEPT_DAYS,
        edit_check_seconds: float = 2.0,
    ) -> None:
        self.store = store
        self.config = config
        self.hours = dict(hours)
        self.tz = tz
        self.clock = clock
        self.closed = closed
        self._zone = zone(tz)
        self._cache: OrderedDict[tuple[Any, ...], Collected] = OrderedDict()
        self._cache_size = cache_size
        self._lock = asyncio.Lock()
        self._model: _Kept | None = None
        self._totals: dict[tuple[Any, ...], DayTotals] = {}
        self._seen: dict[int, int] = {}
        self.kept_days = kept_days
        #: Edited conversation fields (owner, next step, status) are looked for at most this often; new timeline
        #: rows are seen at once. A look costs a scan of the conversations.
        self.edit_check_seconds = edit_check_seconds

    # -- windows -------------------------------------------------------------------------------------------------

    def day_window(self, first: dt.date, last: dt.date) -> Window:
        """Local days ``first``..``last`` (inclusive) as a window."""
        if last < first:
            raise ValidationError(f"the range ends ({last}) before it starts ({first}): swap from and to")
        if (last - first).days > 400:
            raise ValidationError("the range is longer than 400 days: ask for a shorter one")
        days, starts = [], []
        d = first
        while d <= last + dt.timedelta(days=1):
            days.append(d.isoformat())
            starts.append(dt.datetime.combine(d, dt.time(), tzinfo=self._zone).timestamp())
            d += dt.timedelta(days=1)
        return Window(starts[0], starts[-1], tuple(days[:-1]), tuple(starts[:-1]))

    def today(self) -> dt.date:
        """The office's local date now."""
        return dt.datetime.fromtimestamp(self.clock(), self._zone).date()

    def parse_range(self, start: str | None, end: str | None) -> Window:
        """``from``/``to`` as YYYY-MM-DD local dates, both included; default the last 7 days."""

        def parse(value: str, name: str) -> dt.date:
            try:
                return dt.date.fromisoformat(value.strip())
            except ValueError as err:
                raise ValidationError(f"{name}={value[:30]!r} is not a date: use YYYY-MM-DD, e.g. 2026-11-30") from err

        last = parse(end, "to") if end else self.today()
        first = parse(start, "from") if start else last - dt.timedelta(days=6)
        return self.day_window(first, last)

    # -- the one read ----------------------------------------------------------------------------------------------

    async def collect(self, win: Window) -> Collected:
        """Items and samples of ``win`` (or more) as they count now.

        Windows inside the last 60 days are answered from the kept read model (:meth:`_kept`), refreshed for what
        changed since the last look; older windows are computed afresh (cached per data version and minute).
        """
        got, _ = await self._source(win)
        return visible(got, self.clock())

    async def _source(self, win: Window) -> tuple[Collected, tuple[Any, ...]]:
        """Everything judged for ``win`` (not yet filtered by the clock) and a key naming that state."""
        today = self.today()
        if self._keeps(win, today):
            kept = await self._kept(today)
            return self._flat(kept), ("kept", today, kept.version)
        got = await self._direct(win, self.clock())
        return got, ("direct", id(got))

    def _keeps(self, win: Window, today: dt.date) -> bool:
        kept_from = today - dt.timedelta(days=self.kept_days - 1)
        return self.kept_days > 0 and win.start >= self.day_window(kept_from, today).start

    async def totals(self, win: Window) -> DayTotals | TotalsView:
        """Per-day totals of ``win`` as they count now.

        Inside the kept days these are the kept model's running totals (brought up to the clock); other windows are
        added up from the items (kept while nothing changes, for the minute).
        """
        today = self.today()
        if self._keeps(win, today):
            kept = await self._kept(today)
            running = kept.running
            if running.day_starts and win.day_starts[-1] <= running.day_starts[-1]:
                running.advance(self.clock())
                return TotalsView(running, bisect.bisect_left(running.day_starts, win.day_starts[0]))
        got, key = await self._source(win)
        now = self.clock()
        full = (win.start, win.end, int(now // 60), key)
        hit = self._totals.get(full)
        if hit is not None:
            return hit
        t = DayTotals(win.day_starts, win.end)
        t.add(got, now)
        self._totals = {**dict(list(self._totals.items())[-7:]), full: t}
        return t

    @staticmethod
    def _flat(kept: _Kept) -> Collected:
        """All of the kept model's items and samples (built when asked for, once per change)."""
        if kept.flat is None:
            kept.flat = Collected(
                [it for its, _ in kept.per_conversation.values() for it in its] + kept.steps,
                [s for _, ss in kept.per_conversation.values() for s in ss],
            )
        return kept.flat

    def _calendar(self, start: float, now: float, end: float) -> BusinessCalendar:
        extra = (self.config.response_horizon_days + 14) * 86400.0
        return BusinessCalendar(self.hours, self.tz, start, max(now, end) + extra, self.closed)

    async def _direct(self, win: Window, now: float) -> Collected:
        minute = int(now // 60)
        cfg = self.config
        load_start = win.start - _HISTORY_S
        load_end = min(win.end + cfg.response_horizon_days * 86400.0, now + 1.0)

        def read(conn: sqlite3.Connection) -> tuple[tuple[Any, ...], Collected | None, Any]:
            version = (id(conn), *sql.data_version(conn))
            key = (win.start, win.end, minute, version)
            hit = self._cache.get(key)
            if hit is not None:
                return key, hit, None
            rows = sql.timeline_rows(conn, load_start, load_end)
            return key, None, (rows, sql.conversation_infos(conn, list(rows), win.start, win.end, sql.askers(rows)))

        key, hit, loaded = await self.store.read(read)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        rows, infos = loaded
        cal = self._calendar(load_start, now, win.end)
        result = await asyncio.to_thread(collect, rows, infos, cal, cfg, win.start, win.end)
        self._cache[key] = result
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    async def _kept(self, today: dt.date) -> _Kept:
        """The read model of the last :data:`KEPT_DAYS` days, refreshed for the conversations that changed.

        Changed since the last look: a conversation with a new timeline row (by row id, so back-dated imports are
        seen too) or with its fields edited (``updated_at``: owner, next step, status, looked for at most every
        ``edit_check_seconds``); a merge or an undone merge rebuilds everything. Only those conversations' rows are
        read and judged again, and only their share of the running day totals is taken away and added back.
        """
        async with self._lock:
            kept = self._model
            window = self.day_window(today - dt.timedelta(days=self.kept_days - 1), today)
            start = window.start
            rebuild = kept is None or kept.day != today
            since = None if rebuild or kept is None else (kept.last_event_id, kept.merges, kept.wall - _EDIT_SLACK_S)
            load_start = start - _HISTORY_S
            if rebuild:
                self._seen.clear()
            edits = kept is None or time.monotonic() - kept.edits_checked >= self.edit_check_seconds
            read = functools.partial(
                sql.kept_changes, load_start=load_start, start=start, since=since, seen=self._seen, edits=edits
            )
            changes = await self.store.read(read)
            if changes.unchanged and kept is not None:
                return kept
            if kept is not None and not rebuild and changes.rebuild:
                rebuild = True
                changes = await self.store.read(functools.partial(read, since=None, edits=True))
            now = self.clock()
            cal = self._calendar(load_start, now, start)
            cfg = self.config
            rows, infos = changes.rows, changes.infos
            if rebuild or kept is None:
                version = 0 if kept is None else kept.version + 1
                kept = await asyncio.to_thread(self._build, today, window, rows, infos, cal, now)
                kept.version = version
            elif rows or changes.changed:
                got = collect(rows, infos, cal, cfg, start, float("inf"), next_steps=False)
                fresh = _by_conversation(got)
                for cid in changes.changed | set(fresh):
                    items, samples = fresh.get(cid, ([], []))
                    kept.running.replace(cid, items, samples)
                    if cid in fresh:
                        kept.per_conversation[cid] = fresh[cid]
                    else:
                        kept.per_conversation.pop(cid, None)
                kept.flat = None
                kept.version += 1
            kept.last_event_id, kept.merges = changes.last_event_id, changes.merges
            if changes.due_infos is not None:
                kept.wall = changes.wall
                kept.edits_checked = time.monotonic()
                self._set_steps(kept, next_step_items(changes.due_infos, start, float("inf")))
            self._model = kept
            return kept

    def _build(
        self,
        today: dt.date,
        window: Window,
        rows: dict[int, list[Row]],
        infos: dict[int, ConversationInfo],
        cal: BusinessCalendar,
        now: float,
    ) -> _Kept:
        """The whole kept model from the rows of its days (runs in a worker thread: it takes seconds at 1M rows)."""
        got = collect(rows, infos, cal, self.config, window.start, float("inf"), next_steps=False)
        per = _by_conversation(got)
        running = RunningTotals(window.day_starts, window.end)
        running.advance(now)
        for cid, (items, samples) in per.items():
            running.replace(cid, items, samples)
        return _Kept(today, window.start, per, running)

    @staticmethod
    def _set_steps(kept: _Kept, steps: list[Item]) -> None:
        """Next steps are counted under the negated conversation id, apart from the conversation's own items."""
        old = {it.conversation_id for it in kept.steps}
        new: dict[int, list[Item]] = {}
        for it in steps:
            new.setdefault(it.conversation_id, []).append(it)
        if sorted(kept.steps) == sorted(steps):
            return
        for cid in old | set(new):
            kept.running.replace(-cid, new.get(cid, []), [])
        kept.steps = steps
        kept.flat = None
        kept.version += 1

    async def warm(self) -> None:
        """Build the read model now (at start) and again just after each local midnight, when the days it covers
        move on, so no look at the page waits for a rebuild. Logs instead of raising; runs until cancelled."""
        while True:
            started = time.monotonic()
            try:
                await self.overview()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leakage read model could not be built; the page will try again")
            else:
                log.info("leakage read model built in %.1f s", time.monotonic() - started)
            now = self.clock()
            tomorrow = dt.datetime.combine(self.today() + dt.timedelta(days=1), dt.time(), tzinfo=self._zone)
            await asyncio.sleep(max(1.0, tomorrow.timestamp() - now + 1.0))

    # -- views -----------------------------------------------------------------------------------------------------

    def _roi(self, recovered: int) -> Roi:
        return roi(recovered, self.config.close_rate, self.config.average_job_value)

    async def report(self, win: Window) -> Report:
        """Every metric over ``win``, per owner, the ROI estimate and the daily series."""
        t = await self.totals(win)
        n = len(win.days)
        s = t.summary(0, n)
        return {
            "metrics": s["metrics"],
            "automated_not_sent_by_reason": s["automated_not_sent_by_reason"],
            "first_response": s["first_response"],
            "from": win.days[0],
            "to": win.days[-1],
            "timezone": self.tz,
            "roi": self._roi(s["metrics"]["recovered"]["conversations"]),
            "daily": self._daily(t, win, 0, n),
            "leaks_total": sum(s["metrics"][k]["count"] for k in LEAKS),
        }

    @staticmethod
    def _daily(t: DayTotals | TotalsView, win: Window, i: int, j: int) -> Daily:
        series, medians = t.daily(i, j)
        return {"days": list(win.days[i:j]), "series": series, "first_response_median_seconds": medians}

    async def _last_60_days(self) -> tuple[dt.date, Window, DayTotals | TotalsView]:
        today = self.today()
        big = self.day_window(today - dt.timedelta(days=59), today)
        return today, big, await self.totals(big)

    async def overview(self) -> Overview:
        """The page: each metric for today, 7 and 30 days with the previous period, and 30 days of daily counts."""
        today, big, t = await self._last_60_days()
        n = len(big.days)
        periods: dict[str, Period] = {}
        for name, days in PERIODS.items():
            now_s = t.summary(n - days, n)
            prev_s = t.summary(n - 2 * days, n - days)
            periods[name] = {
                "from": big.days[n - days],
                "to": big.days[-1],
                "previous_from": big.days[n - 2 * days],
                "previous_to": big.days[n - days - 1],
                "metrics": {
                    k: {
                        "count": now_s["metrics"][k]["count"],
                        "previous": prev_s["metrics"][k]["count"],
                        "change": now_s["metrics"][k]["count"] - prev_s["metrics"][k]["count"],
                        "conversations": now_s["metrics"][k]["conversations"],
                        "by_owner": now_s["metrics"][k]["by_owner"],
                    }
                    for k in METRICS
                },
                "automated_not_sent_by_reason": now_s["automated_not_sent_by_reason"],
                "first_response": now_s["first_response"],
                "previous_first_response": prev_s["first_response"],
                "roi": self._roi(now_s["metrics"]["recovered"]["conversations"]),
            }
        return {
            "today": today.isoformat(),
            "timezone": self.tz,
            "titles": METRICS,
            "leaks": list(LEAKS),
            "thresholds": {
                "missed_call_minutes": self.config.missed_call_minutes,
                "voicemail_minutes": self.config.voicemail_minutes,
                "sms_wait_hours": self.config.sms_wait_hours,
                "chat_idle_minutes": self.config.chat_idle_minutes,
            },
            "currency": self.config.currency,
            "periods": periods,
            "daily": self._daily(t, big, n - 30, n),
        }

    async def items(
        self, metric: str, win: Window, owner: str | None = None, channel: str | None = None
    ) -> list[LeakRow]:
        """The leaks (or samples, for ``first_response``) behind a count, newest first, with conversation labels."""
        if metric not in METRICS and metric != "first_response":
            raise ValidationError(
                f"metric={metric[:40]!r} is unknown; use one of {', '.join([*METRICS, 'first_response'])}"
            )
        got = await self.collect(win)
        rows: list[LeakRow] = []
        if metric == "first_response":
            for s in got.samples:
                if (
                    win.start <= s.at < win.end
                    and (channel is None or s.channel == channel)
                    and (owner is None or s.owner == owner)
                ):
                    detail = "no answer" if s.seconds is None else f"{round(s.seconds)} s"
                    rows.append(self._row(s.conversation_id, s.at, s.owner, f"{s.channel}: {detail}"))
        else:
            for it in got.items:
                if it.metric == metric and win.start <= it.at < win.end and (owner is None or it.owner == owner):
                    rows.append(self._row(it.conversation_id, it.at, it.owner, it.detail))
        rows.sort(key=lambda r: (-r["at"], r["conversation_id"]))
        ids = sorted({r["conversation_id"] for r in rows})
        labels = await self.store.read(lambda c: sql.conversation_labels(c, ids)) if ids else {}
        for r in rows:
            r["name"] = labels.get(r["conversation_id"], "")
        return rows

    def _row(self, cid: int, at: float, owner: str, detail: str) -> LeakRow:
        local = dt.datetime.fromtimestamp(at, self._zone)
        return {
            "conversation_id": cid,
            "at": at,
            "local_time": local.strftime("%Y-%m-%d %H:%M"),
            "owner": owner,
            "detail": detail,
        }

    async def gauges(self) -> dict[str, float]:
        """Current values for Prometheus: each metric over the last 7 days and today, median responses."""
        _, big, t = await self._last_60_days()
        n = len(big.days)
        week = t.summary(n - 7, n)
        tday = t.summary(n - 1, n)
        out: dict[str, float] = {}
        for k in METRICS:
            out[f"{k}_7d"] = float(week["metrics"][k]["count"])
            out[f"{k}_today"] = float(tday["metrics"][k]["count"])
        for ch, v in week["first_response"].items():
            if v["median_seconds"] is not None:
                out[f"first_response_{ch}_median_seconds_7d"] = float(v["median_seconds"])
            if v["p90_seconds"] is not None:
                out[f"first_response_{ch}_p90_seconds_7d"] = float(v["p90_seconds"])
        return out
