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
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.errors import ValidationError
from gateway.leakage.config import LeakageConfig
from gateway.leakage.metrics import LEAKS, METRICS, Collected, collect, percentile, response_times, roi, summarize
from gateway.store import leakage as sql
from gateway.store.db import Store
from gateway.web.hours import BusinessCalendar, ClosedDates, zone

#: The periods the page shows, in days ending today.
PERIODS = {"today": 1, "7d": 7, "30d": 30}

_HISTORY_S = 86400.0  # a day of history before a window: was the customer already waiting?


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
        """Items and samples of ``win`` as they stand now (cached per data version and minute)."""
        now = self.clock()
        minute = int(now // 60)
        cfg = self.config
        lookahead = cfg.response_horizon_days * 86400.0
        load_start = win.start - _HISTORY_S
        load_end = min(win.end + lookahead, now + 1.0)

        def read(conn: sqlite3.Connection) -> tuple[tuple[Any, ...], Collected | None, Any]:
            version = (id(conn), *sql.data_version(conn))
            key = (win.start, win.end, minute, version)
            hit = self._cache.get(key)
            if hit is not None:
                return key, hit, None
            rows = sql.timeline_rows(conn, load_start, load_end)
            askers = [cid for cid, rs in rows.items() if any(r.asks_for or r.question for r in rs)]
            infos = sql.conversation_infos(conn, list(rows), win.start, min(win.end, now), askers)
            return key, None, (rows, infos)

        key, hit, loaded = await self.store.read(read)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        rows, infos = loaded
        cal = BusinessCalendar(
            self.hours, self.tz, load_start, max(now, win.end) + lookahead + 14 * 86400.0, self.closed
        )
        result = collect(rows, infos, cal, cfg, win.start, win.end, now)
        self._cache[key] = result
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    # -- views -----------------------------------------------------------------------------------------------------

    def _roi(self, recovered: int) -> dict[str, Any]:
        return roi(recovered, self.config.close_rate, self.config.average_job_value)

    async def report(self, win: Window) -> dict[str, Any]:
        """Every metric over ``win``, per owner, the ROI estimate and the daily series."""
        got = await self.collect(win)
        out = summarize(got, win.start, win.end)
        out["from"] = win.days[0]
        out["to"] = win.days[-1]
        out["timezone"] = self.tz
        out["roi"] = self._roi(out["metrics"]["recovered"]["conversations"])
        out["daily"] = self.daily(got, win)
        out["leaks_total"] = sum(out["metrics"][k]["count"] for k in LEAKS)
        return out

    def daily(self, got: Collected, win: Window) -> dict[str, Any]:
        """Counts per local day for every metric, and the daily median first response (business seconds)."""
        n = len(win.days)
        series: dict[str, list[int]] = {k: [0] * n for k in METRICS}
        for it in got.items:
            if win.start <= it.at < win.end:
                series[it.metric][bisect.bisect_right(win.day_starts, it.at) - 1] += 1
        per_day: list[list[float]] = [[] for _ in range(n)]
        for s in got.samples:
            if win.start <= s.at < win.end and s.seconds is not None:
                per_day[bisect.bisect_right(win.day_starts, s.at) - 1].append(s.seconds)
        medians = [percentile(v, 0.5) for v in per_day]
        return {"days": list(win.days), "series": series, "first_response_median_seconds": medians}

    async def overview(self) -> dict[str, Any]:
        """The page: each metric for today, 7 and 30 days with the previous period, and 30 days of daily counts."""
        today = self.today()
        big = self.day_window(today - dt.timedelta(days=59), today)
        got = await self.collect(big)
        periods: dict[str, Any] = {}
        for name, days in PERIODS.items():
            cur = self.day_window(today - dt.timedelta(days=days - 1), today)
            prev = self.day_window(today - dt.timedelta(days=2 * days - 1), today - dt.timedelta(days=days))
            now_s = summarize(got, cur.start, cur.end)
            prev_s = summarize(got, prev.start, prev.end)
            periods[name] = {
                "from": cur.days[0],
                "to": cur.days[-1],
                "previous_from": prev.days[0],
                "previous_to": prev.days[-1],
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
        month = self.day_window(today - dt.timedelta(days=29), today)
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
            "daily": self.daily(got, month),
        }

    async def items(
        self, metric: str, win: Window, owner: str | None = None, channel: str | None = None
    ) -> list[dict[str, Any]]:
        """The leaks (or samples, for ``first_response``) behind a count, newest first, with conversation labels."""
        if metric not in METRICS and metric != "first_response":
            raise ValidationError(
                f"metric={metric[:40]!r} is unknown; use one of {', '.join([*METRICS, 'first_response'])}"
            )
        got = await self.collect(win)
        rows: list[dict[str, Any]] = []
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

    def _row(self, cid: int, at: float, owner: str, detail: str) -> dict[str, Any]:
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
        today = self.today()
        win = self.day_window(today - dt.timedelta(days=6), today)
        got = await self.collect(win)
        week = summarize(got, win.start, win.end)
        day = self.day_window(today, today)
        tday = summarize(got, day.start, day.end)
        out: dict[str, float] = {}
        for k in METRICS:
            out[f"{k}_7d"] = float(week["metrics"][k]["count"])
            out[f"{k}_today"] = float(tday["metrics"][k]["count"])
        for ch, v in response_times(got.samples, win.start, win.end).items():
            if v["median_seconds"] is not None:
                out[f"first_response_{ch}_median_seconds_7d"] = float(v["median_seconds"])
                out[f"first_response_{ch}_p90_seconds_7d"] = float(v["p90_seconds"])
        return out
