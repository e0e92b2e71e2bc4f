"""SMS benchmark, run by hand: ``.venv/bin/python bench/sms_bench.py [--messages 500 --delay 0.02] [--skip-drain]``.

(a) Drain: N messages wait on the SIM of the emulated modem (a separate process, every answer delayed by ``--delay``
    seconds, as a USB modem is slow). Time until all N are in durable storage and until the SIM is empty: this
    gateway versus ``gammu-smsd`` (files backend) against the same emulator.
(b) Outbound overhead of this gateway: from ``enqueue_outbound`` to the first byte of ``AT+CMGS``, one message at a
    time with the modem idle (p50/p99), and the CPU time of this process per part sent (the emulator runs in another
    process, so its CPU is not counted).

Needs ``gammu-smsd`` (Debian package) for the comparison; without it only our figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.channels.sms.channel import SmsChannel  # noqa: E402
from gateway.channels.sms.config import SmsConfig  # noqa: E402
from gateway.domain.bus import Bus  # noqa: E402
from gateway.domain.events import SmsOutboundState  # noqa: E402
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound  # noqa: E402
from gateway.domain.service import ConversationService, ServiceSettings  # noqa: E402
from gateway.emulator.control import call  # noqa: E402
from gateway.store.db import Store  # noqa: E402

PROFILE = "huawei-e3372"


class EmulatorProcess:
    """The emulator in its own process, driven through its control socket."""

    def __init__(self, workdir: Path, delay: float) -> None:
        self.link = workdir / "ttyUSB0"
        self.ctl = workdir / "ttyUSB0.ctl"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.emulator",
                "--profile",
                PROFILE,
                "--link",
                str(self.link),
                "--command-delay",
                str(delay),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert self.proc.stdout is not None
        self.proc.stdout.readline()
        for _ in range(100):
            if self.ctl.exists():
                break
            time.sleep(0.05)

    def stored(self) -> int:
        snap = call(self.ctl, "snapshot")
        return int(snap["stored"]["SM"]) + int(snap["stored"]["ME"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _start_emulator(workdir: Path, delay: float, n: int) -> EmulatorProcess:
    emu = EmulatorProcess(workdir, delay)
    call(emu.ctl, "set_capacity", storage="SM", capacity=n + 10)
    for i in range(n):
        call(emu.ctl, "deliver", sender=f"+1555{i % 1000:07d}", text=f"benchmark message {i}")
    assert emu.stored() == n, emu.stored()
    return emu


async def drain_ours(n: int, delay: float) -> tuple[float, float, float]:
    """Returns (seconds until all stored durably, until the SIM is empty, until all ingested)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        emu = _start_emulator(work, delay, n)
        store = Store(work / "gw.db")
        await store.start()
        bus = Bus()
        service = ConversationService(store, bus, ServiceSettings(default_region="US"))
        cfg = SmsConfig(enabled=True, device=str(emu.link), profile=PROFILE, poll_interval=30.0)
        channel = SmsChannel(cfg, store, service, bus)
        t0 = time.perf_counter()
        await channel.start()
        t_stored = t_empty = t_ingested = 0.0
        try:
            while not (t_stored and t_empty and t_ingested):
                await asyncio.sleep(0.02)
                now = time.perf_counter() - t0
                if not t_stored:
                    count = await store.read(
                        lambda c: c.execute("SELECT COUNT(*) FROM sms_inbound_parts").fetchone()[0]
                    )
                    if count >= n:
                        t_stored = now
                if not t_empty and await asyncio.to_thread(emu.stored) == 0:
                    t_empty = now
                if not t_ingested and channel.inbound.ingested >= n:
                    t_ingested = now
                if now > 600:
                    raise TimeoutError("our drain did not finish in 10 minutes")
        finally:
            await channel.stop()
            await store.stop()
            emu.stop()
        return t_stored, t_empty, t_ingested


def drain_gammu(n: int, delay: float) -> tuple[float, float] | None:
    """Returns (seconds until all N files are in the inbox, until the SIM is empty)."""
    if shutil.which("gammu-smsd") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        emu = _start_emulator(work, delay, n)
        for d in ("inbox", "outbox", "sent", "error"):
            (work / d).mkdir()
        conf = work / "smsdrc"
        conf.write_text(
            f"[gammu]\ndevice = {emu.link}\nconnection = at\n\n[smsd]\nservice = files\n"
            f"inboxpath = {work}/inbox/\noutboxpath = {work}/outbox/\nsentsmspath = {work}/sent/\n"
            f"errorsmspath = {work}/error/\nlogfile = {work}/smsd.log\ndebuglevel = 0\n"
            "checksecurity = 0\ncheckbattery = 0\ncheckSignal = 0\nreceivefrequency = 1\n"
            "commtimeout = 1\n",
            encoding="utf-8",
        )
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            ["gammu-smsd", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        t_stored = t_empty = 0.0
        try:
            while not (t_stored and t_empty):
                time.sleep(0.02)
                now = time.perf_counter() - t0
                if not t_stored and len(list((work / "inbox").iterdir())) >= n:
                    t_stored = now
                if not t_empty and emu.stored() == 0:
                    t_empty = now
                if now > 900:
                    raise TimeoutError("gammu-smsd did not finish in 15 minutes")
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            emu.stop()
        return t_stored, t_empty


async def outbound_overhead(count: int, text: str, *, status_reports: bool = True) -> tuple[list[float], float, int]:
    """Latencies (s) enqueue -> first CMGS byte, CPU seconds used by this process, parts sent."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        emu = EmulatorProcess(work, 0.0)
        store = Store(work / "gw.db")
        await store.start()
        bus = Bus()
        service = ConversationService(store, bus, ServiceSettings(default_region="US"))
        cfg = SmsConfig(
            enabled=True,
            device=str(emu.link),
            profile=PROFILE,
            poll_interval=3600.0,
            probe_interval=3600.0,
            status_reports=status_reports,
        )
        channel = SmsChannel(cfg, store, service, bus)
        await channel.start()
        try:
            while not channel.modem_state.connected:  # noqa: ASYNC110 - a plain attribute, set once
                await asyncio.sleep(0.01)
            seed = await service.ingest(
                Inbound(
                    Channel.SMS,
                    EventKind.MESSAGE_IN,
                    IdentityKind.PHONE,
                    "+15551234567",
                    "seed",
                    "hi",
                )
            )
            latencies: list[float] = []
            done = bus.subscribe("bench", maxsize=10_000, types=(SmsOutboundState,))
            parts_before = channel.outbox.sent_parts
            cpu0 = time.process_time()
            for i in range(count):
                assert channel.link is not None
                link = channel.link
                link.first_cmgs_byte_at = None
                t_enq = time.perf_counter()
                outbox_id = await service.enqueue_outbound(
                    seed.conversation_id,
                    Channel.SMS,
                    "+15551234567",
                    f"{text} {i}",
                    automated=False,
                )
                async for event in done:  # wait for "sent" without spinning
                    assert isinstance(event, SmsOutboundState)
                    if event.outbox_id == outbox_id and event.state == "sent":
                        break
                assert link.first_cmgs_byte_at is not None
                latencies.append(link.first_cmgs_byte_at - t_enq)
            cpu = time.process_time() - cpu0
            return latencies, cpu, channel.outbox.sent_parts - parts_before
        finally:
            await channel.stop()
            await store.stop()
            emu.stop()


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--delay", type=float, default=0.02, help="emulated modem per-command delay (s)")
    ap.add_argument("--outbound", type=int, default=200)
    ap.add_argument("--skip-gammu", action="store_true")
    ap.add_argument("--skip-drain", action="store_true", help="only (b)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    n, delay = args.messages, args.delay
    if not args.skip_drain:
        print(f"== drain {n} messages from the SIM, modem answers after {delay * 1000:.0f} ms ==")
        stored, empty, ingested = asyncio.run(drain_ours(n, delay))
        print(
            f"gateway     : stored durably {stored:7.2f} s   SIM empty {empty:7.2f} s   "
            f"in conversations {ingested:7.2f} s"
        )
    if not args.skip_drain and not args.skip_gammu:
        gammu = drain_gammu(n, delay)
        if gammu is None:
            print("gammu-smsd  : not installed (apt-get install gammu-smsd)")
        else:
            print(f"gammu-smsd  : stored (files) {gammu[0]:7.2f} s   SIM empty {gammu[1]:7.2f} s")
            print(f"ratio       : gateway/gammu stored {stored / gammu[0]:.2f}   SIM empty {empty / gammu[1]:.2f}")
    print(f"== outbound overhead, {args.outbound} messages one at a time, modem idle ==")
    for label, text in (
        ("1 part ", "Your table for two is booked for 7 pm"),
        ("3 parts", "x" * 400),
    ):
        lat, cpu, parts = asyncio.run(outbound_overhead(args.outbound, text))
        ms = [v * 1000 for v in lat]
        print(
            f"{label}: enqueue -> first AT+CMGS byte p50 {_pct(ms, 50):6.2f} ms  "
            f"p99 {_pct(ms, 99):6.2f} ms  max {max(ms):6.2f} ms  "
            f"mean {statistics.mean(ms):6.2f} ms; "
            f"CPU {cpu * 1000 / parts:5.2f} ms per part ({parts} parts)"
        )


if __name__ == "__main__":
    main()
