"""The fault soak, short: a mixed workload (chat, inbound and outbound SMS through the modem emulator, missed calls
and voicemails through Asterisk + sipp) against the real daemon while every kind of fault is injected at least once
(kill -9 of the daemon, Asterisk restart, modem unplug/replug and hang, disk full, transcription worker killed).
The longer runs and the README figures come from bench/soak.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "soak.py")
assert _spec is not None
assert _spec.loader is not None
bench_soak = importlib.util.module_from_spec(_spec)
sys.modules["bench_soak"] = bench_soak
_spec.loader.exec_module(bench_soak)

pytestmark = [pytest.mark.slow, pytest.mark.asterisk]


@pytest.mark.timeout(900)
async def test_fault_soak_loses_and_duplicates_nothing() -> None:
    res = await bench_soak.soak(
        bench_soak.parse_args(["--seconds", "60", "--fault-every", "4", "--visitors", "2", "--seed", "7"])
    )
    faults = res["faults"]
    for kind in (
        "kill -9 daemon",
        "asterisk restart",
        "modem unplug/replug",
        "modem hang",
        "disk full",
        "transcription worker killed",
    ):
        assert faults.get(kind, 0) >= 1, (kind, res)
    assert res["sms_in"] > 20, res
    assert res["chat_acked"] > 20, res
    assert res["sms_out"] >= 3, res
    assert res["missed_calls"] + res["voicemails"] >= 2, res
    assert res["lost"] == [], res
    assert res["duplicates"] == [], res
    assert res["voicemails_unfinished"] == [], res
    assert res["integrity_check"] == "ok", res
    assert res["notes"] == [], res
