"""The daemon wires the leakage read model to the office's configuration: business hours, closed days, thresholds."""

from __future__ import annotations

from pathlib import Path

from gateway import config as cfgmod
from gateway.app import App
from gateway.web.leakage import LEAKAGE

from .seed import at


async def test_the_daemon_gives_leakage_the_offices_hours_closed_days_and_thresholds(tmp_path: Path) -> None:
    cfg = cfgmod.parse(
        f'[gateway]\ndata_dir = "{tmp_path}"\nshutdown_timeout = 2.0\n'
        "[voice]\nenabled = false\n[transcribe]\nenabled = false\n"
        '[web]\nport = 0\ntimezone = "Asia/Seoul"\n[web.business_hours]\nmon = "09:00-18:00"\n'
        'tue = "09:00-18:00"\nwed = "09:00-18:00"\nthu = "09:00-18:00"\nfri = "09:00-18:00"\n'
        '[continuity]\nclosed_dates = ["2026-11-26"]\n[leakage]\nmissed_call_minutes = 45\n',
        "test.toml",
    )
    app = App(cfg)
    await app.start()
    try:
        assert app.web is not None
        leak = app.web.app[LEAKAGE]
        assert leak.tz == "Asia/Seoul"
        assert leak.config.missed_call_minutes == 45
        assert leak.closed is not None
        # Wednesday 17:50 in Seoul with 45 minutes: 10 today, Thursday is closed, 35 on Friday morning.
        cal = leak._calendar(at("2026-11-20 00:00"), at("2026-11-25 00:00"), at("2026-11-30 00:00"))
        assert cal.deadline(at("2026-11-25 17:50", "Asia/Seoul"), 45 * 60) == at("2026-11-27 09:35", "Asia/Seoul")
    finally:
        await app.stop()
