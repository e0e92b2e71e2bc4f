"""Fault soak: a mixed workload against the real daemon and the real peers while faults are injected.

    python bench/soak.py --seconds 600 --runs 3            # the README figures
    python bench/soak.py --seconds 60 --no-voice           # quick, without Asterisk

Theory of operation
-------------------
The daemon is the real ``gateway run`` in its own process, configured with the SMS channel on the modem emulator
(a pty, in this process so its SIM and its sent log can be inspected), the voice channel on the local Asterisk
(tests/realpbx/test.env), transcription with the packaged Vosk model and the web server (chat widget websocket).
Workers drive it at the same time:

* inbound SMS: the emulator receives texts (some multipart, some with emoji); a text counts as acknowledged once the
  modem holds it (the network's side of the promise);
* chat: visitors send messages over the websocket with client ids; a message counts as acknowledged when the daemon
  answered ``ack``; one that got no answer (the daemon died) is sent again with the same client id, as the widget does;
* outbound SMS: staff replies queued through ``ConversationService.enqueue_outbound`` while the daemon is down (the
  outbox is what must survive), sent by the daemon when it is back;
* calls: callers give up while the phone rings (missed) or leave a Korean voicemail (sipp, RTP speech), also while
  the daemon is dead, so the recovery from Asterisk's call records is exercised.

Faults at random moments: ``kill -9`` of the daemon (restarted 0.5-2 s later), Asterisk restarts, modem unplug and
replug, modem hangs, the disk filling up (the data directory is a small tmpfs; a filler file takes the rest for a few
seconds) and a transcription worker killed.

Afterwards, with the daemon stopped, the database is checked read-only: every acknowledged inbound item (SMS, chat)
stored exactly once, no outbound text sent twice by the modem (rows left ``unknown`` are counted as flagged, never
resent), every voicemail transcribed or visibly failed, every missed call present, ``PRAGMA integrity_check`` ok.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.domain.bus import Bus  # noqa: E402
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound  # noqa: E402
from gateway.domain.service import ConversationService, ServiceSettings  # noqa: E402
from gateway.emulator import ModemEmulator  # noqa: E402
from gateway.store.db import Store  # noqa: E402
from gateway.transcribe.model import default_model_path  # noqa: E402

SMS_SENDERS = [f"+1202555{n:04d}" for n in range(100, 110)]
REPLY_TO = "+12025550150"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Ledger:
    """What the workload handed over and what the faults did."""

    sms_in: list[str] = field(default_factory=list)
    chat_acked: dict[str, str] = field(default_factory=dict)  # client id -> body
    chat_unacked: dict[str, str] = field(default_factory=dict)
    sms_out: list[str] = field(default_factory=list)
    missed_callers: list[str] = field(default_factory=list)
    voicemail_callers: list[str] = field(default_factory=list)
    cut_callers: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    in_flight_at_kill: int = 0
    handed_over_while_down: int = 0
    notes: list[str] = field(default_factory=list)


class Daemon:
    """The real ``gateway run`` process."""

    def __init__(self, config: Path, log: Path, port: int) -> None:
        self.config = config
        self.log = log
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the daemon runs on its own
                [sys.executable, "-m", "gateway.cli", "--config", str(self.config), "run"],
                stdout=fh,
                stderr=fh,
                env=env,
                start_new_session=True,
            )
        self.starts += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited at start ({self.proc.returncode}); see {self.log}")
            with contextlib.suppress(OSError):
                _r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the daemon did not open its web port within 60 s; see {self.log}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the daemon and its workers, as a power cut would
            self.proc.wait(10)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(300):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def worker_pids(self) -> list[int]:
        """Transcription worker processes of the daemon."""
        if self.proc is None:
            return []
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                cmd = (entry / "cmdline").read_bytes()
                if ppid == self.proc.pid and b"gateway.transcribe" in cmd:
                    out.append(int(entry.name))
        return out


def query(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rand = random.Random(args.seed)
        self.ledger = Ledger()
        self.data = work / "data"
        self.data.mkdir()
        self.tmpfs = False
        if args.disk_mb:
            # A small file system of its own, so "the disk is full" can be made true and undone.
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={args.disk_mb}m,mode=0700", "tmpfs", str(self.data)],
                capture_output=True,
                check=False,
            )
            self.tmpfs = r.returncode == 0
            if not self.tmpfs:
                self.ledger.notes.append(f"disk-full fault off: cannot mount a tmpfs ({r.stderr.decode().strip()})")
        self.db = self.data / "gateway.db"
        self.emu = ModemEmulator("huawei-e3372", link=work / "ttyUSB0", command_delay=0.002, seed=args.seed)
        self.emu.capacity["SM"] = 200
        self.port = free_port()
        self.pbx: Any = None
        self.harness: Any = None
        self.stop_at = 0.0
        self.daemon_lock = asyncio.Lock()
        self.daemon: Daemon | None = None

    # -- setup ---------------------------------------------------------------------------------------------------

    def write_config(self) -> Path:
        model = default_model_path()
        lines = [
            "[gateway]",
            f'data_dir = "{self.data}"',
            "shutdown_timeout = 8.0",
            "[sms]",
            "enabled = true",
            f'device = "{self.emu.link}"',
            'profile = "huawei-e3372"',
            "poll_interval = 0.5",
            "probe_interval = 1.0",
            "command_timeout = 2.0",
            "send_timeout = 10.0",
            "retry_base = 0.2",
            "retry_cap = 1.0",
            "[transcribe]",
            f"enabled = {'true' if model else 'false'}",
            f'model_path = "{model}"',
            "job_timeout = 30.0",
            "[web]",
            f"port = {self.port}",
            "secure_cookies = false",
            "chat_messages_per_minute = 100000",
            "chat_burst = 100000",
            "chat_new_per_address_per_hour = 100000",
        ]
        if self.pbx is not None:
            v = self.pbx.values
            host, _, agi_port = v["AGI_ADDR"].partition(":")
            lines += [
                "[voice]",
                "enabled = true",
                f"ami_port = {v['AMI_PORT']}",
                f'ami_username = "{v["AMI_USER"]}"',
                f'ami_secret = "{v["AMI_SECRET"]}"',
                f'agi_host = "{host}"',
                f"agi_port = {agi_port}",
                "abandon_seconds = 1.0",
                "ami_ping_interval = 2.0",
                "ami_ping_timeout = 3.0",
                f'cdr_file = "{self.pbx.cdr_file}"',
                f'recordings_dir = "{self.pbx.recordings_dir}"',
                # Only what this run did: the PBX and its recordings directory are shared.
                f"recovery_window_hours = {(self.args.seconds + 600) / 3600.0:.4f}",
            ]
        else:
            lines += ["[voice]", "enabled = false"]
        path = self.work / "gateway.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    # -- workload --------------------------------------------------------------------------------------------------

    async def sms_in(self) -> None:
        n = 0
        while time.monotonic() < self.stop_at:
            n += 1
            text = f"soak in {n:05d}" + (" long 🎉 part" * 14 if n % 9 == 0 else " hello")
            if not self.emu.plugged:
                await asyncio.sleep(0.2)
                continue
            try:
                self.emu.deliver(self.rand.choice(SMS_SENDERS), text)
            except Exception as err:  # noqa: BLE001 - a full SIM refuses: the network keeps it, so do we
                self.ledger.notes.append(f"sms not delivered to the modem: {err}")
            else:
                self.ledger.sms_in.append(text)
                if self.daemon is not None and not self.daemon.alive:
                    self.ledger.handed_over_while_down += 1
            await asyncio.sleep(self.rand.uniform(0.1, 0.5))

    async def chat(self, visitor: int) -> None:
        n = 0
        token: str | None = None
        pending: list[tuple[str, str]] = []
        jar = aiohttp.CookieJar(unsafe=True)
        origin = f"http://127.0.0.1:{self.port}"
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            while time.monotonic() < self.stop_at or pending:
                if time.monotonic() > self.stop_at + 60:
                    break
                try:
                    async with session.ws_connect(f"{origin}/chat/ws", origin=origin) as ws:
                        await ws.send_json({"type": "hello", "token": token})
                        welcome = await ws.receive_json(timeout=5)
                        if welcome.get("type") != "welcome":
                            await asyncio.sleep(0.5)
                            continue
                        token = welcome.get("token") or token
                        while time.monotonic() < self.stop_at or pending:
                            if not pending:
                                n += 1
                                cid = f"soak-v{visitor}-{n:05d}"
                                pending.append((cid, f"chat {visitor}.{n} 안녕하세요 [q]"))
                            cid, body = pending[0]
                            self.ledger.chat_unacked[cid] = body
                            await ws.send_json({"type": "message", "client_id": cid, "body": body})
                            while True:
                                msg = await ws.receive_json(timeout=5)
                                if msg.get("type") == "ack" and msg.get("client_id") == cid:
                                    break
                                if msg.get("type") == "error":
                                    raise ConnectionError(str(msg))  # noqa: TRY301 - handled below: reconnect
                            pending.pop(0)
                            self.ledger.chat_unacked.pop(cid, None)
                            self.ledger.chat_acked[cid] = body
                            await asyncio.sleep(self.rand.uniform(0.2, 0.8))
                except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError, ValueError, TypeError):
                    await asyncio.sleep(0.3)

    async def enqueue_replies(self, count: int) -> None:
        """Staff replies put in the outbox while the daemon is down (the outbox is what must survive)."""
        store = Store(self.db)
        await store.start()
        try:
            service = ConversationService(store, Bus(), ServiceSettings(default_region="US"))
            seed = await service.ingest(
                Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, REPLY_TO, "soak-seed", body="seed")
            )
            for _ in range(count):
                body = f"soak reply {len(self.ledger.sms_out) + 1:04d}"
                await service.enqueue_outbound(seed.conversation_id, Channel.SMS, REPLY_TO, body, automated=False)
                self.ledger.sms_out.append(body)
        finally:
            await store.stop()

    async def calls(self) -> None:
        from tests.realpbx import harness  # noqa: PLC0415

        speech = harness.make_speech("예약", self.work / "yeyak.wav", pad_before_s=0.5, pad_after_s=1.5)
        workdir = self.work / "sipp"
        workdir.mkdir()
        phone = None
        for ext in ("201", "202", "203"):  # a phone that rings, so a caller can give up while it rings
            try:
                phone = await harness.start_phone(ext, "ring", workdir=workdir, port_wait_s=5)
                break
            except harness.HarnessError as err:
                self.ledger.notes.append(f"phone {ext} not available: {err}")
        if phone is not None:  # found one: the ones tried before it are no finding
            self.ledger.notes[:] = [n for n in self.ledger.notes if not n.startswith("phone ")]
        try:
            while time.monotonic() < self.stop_at:
                caller = harness.unique_caller()
                if phone is not None and self.rand.random() < 0.5:
                    res = await harness.place_call(
                        "5550100", caller, "Soak Missed", 1, settings=self.pbx, workdir=workdir, hangup_after_ring_s=2.0
                    )
                    if res.final_status == 487:
                        self.ledger.missed_callers.append(caller)
                else:
                    res = await harness.place_call(
                        "5550100", caller, "Soak Voicemail", 5.0, speech, settings=self.pbx, workdir=workdir
                    )
                    if res.answered and res.ok and not res.far_end_hung_up:
                        self.ledger.voicemail_callers.append(caller)
                    elif res.answered:
                        # Asterisk cut the call (a restart) before the message was complete: it must still be on
                        # the timeline as a call, whatever part of a recording survived.
                        self.ledger.cut_callers.append(caller)
                await asyncio.sleep(self.rand.uniform(1, 4))
        finally:
            if phone is not None:
                await phone.stop()

    # -- faults ----------------------------------------------------------------------------------------------------

    def in_flight(self) -> int:
        return len(self.emu.stored("SM")) + len(self.ledger.chat_unacked)

    async def kill_daemon(self, daemon: Daemon) -> None:
        async with self.daemon_lock:
            # A burst just before the kill, so the kill lands while texts are on the SIM, not yet stored.
            if self.emu.plugged:
                for _ in range(self.rand.randint(5, 15)):
                    text = f"soak burst {len(self.ledger.sms_in) + 1:05d} hello"
                    with contextlib.suppress(Exception):
                        self.emu.deliver(self.rand.choice(SMS_SENDERS), text)
                        self.ledger.sms_in.append(text)
                await asyncio.sleep(self.rand.uniform(0.0, 0.05))
            self.ledger.in_flight_at_kill += self.in_flight()
            daemon.kill9()
            self.ledger.faults["kill -9 daemon"] += 1
            await asyncio.sleep(self.rand.uniform(0.5, 2.0))
            if self.rand.random() < 0.5:
                await self.enqueue_replies(self.rand.randint(1, 3))
            await daemon.start()

    async def fault_loop(self, daemon: Daemon) -> None:
        faults: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("kill", lambda: self.kill_daemon(daemon)),
            ("unplug", self.unplug),
            ("hang", self.hang),
            ("worker", lambda: self.kill_worker(daemon)),
        ]
        if self.tmpfs:
            faults.append(("disk", self.fill_disk))
        if self.pbx is not None:
            faults.append(("asterisk", self.restart_asterisk))
        order: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        first_round = True
        while time.monotonic() < self.stop_at:
            await asyncio.sleep(self.rand.uniform(self.args.fault_every * 0.5, self.args.fault_every * 1.5))
            if time.monotonic() >= self.stop_at:
                break
            # Every kind once first (in random order), then at random.
            if not order:
                order = self.rand.sample(faults, len(faults)) if first_round else [self.rand.choice(faults)]
                first_round = False
            _name, fault = order.pop(0)
            await fault()

    async def unplug(self) -> None:
        self.emu.unplug()
        self.ledger.faults["modem unplug/replug"] += 1
        await asyncio.sleep(self.rand.uniform(1, 3))
        self.emu.replug()

    async def hang(self) -> None:
        self.emu.hang(self.rand.uniform(2, 5))
        self.ledger.faults["modem hang"] += 1

    async def kill_worker(self, daemon: Daemon) -> None:
        pids = daemon.worker_pids()
        if pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids[0], signal.SIGKILL)
            self.ledger.faults["transcription worker killed"] += 1

    async def fill_disk(self) -> None:
        filler = self.data / "filler.bin"
        free = shutil.disk_usage(self.data).free
        with contextlib.suppress(OSError), filler.open("wb") as fh:
            chunk = b"\0" * (1 << 20)
            for _ in range(free // len(chunk) + 1):
                fh.write(chunk)
        self.ledger.faults["disk full"] += 1
        await asyncio.sleep(self.rand.uniform(2, 4))
        filler.unlink(missing_ok=True)

    async def restart_asterisk(self) -> None:
        from tests.realpbx import harness  # noqa: PLC0415

        await asyncio.to_thread(harness.restart_pbx)
        self.ledger.faults["asterisk restart"] += 1

    # -- the run ---------------------------------------------------------------------------------------------------

    async def settle(self, daemon: Daemon, within: float) -> None:
        """Until the SIM is empty, the outbox has nothing queued and no transcription is pending."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not daemon.alive:
                await daemon.start()
            busy = len(self.emu.stored("SM"))
            with contextlib.suppress(sqlite3.Error):
                busy += query(self.db, "SELECT COUNT(*) FROM outbox WHERE state IN ('queued', 'sending')")[0][0]
                busy += query(
                    self.db,
                    "SELECT COUNT(*) FROM transcription_jobs WHERE status IN ('pending', 'running', 'waiting_model')",
                )[0][0]
            if busy == 0:
                return
            await asyncio.sleep(0.5)
        self.ledger.notes.append(f"did not settle within {within:.0f} s")

    async def run(self) -> dict[str, Any]:
        if self.args.voice:
            from tests.realpbx import harness  # noqa: PLC0415

            self.pbx, _ = await asyncio.to_thread(harness.start_pbx)
        self.emu.start()
        config = self.write_config()
        daemon = Daemon(config, self.work / "daemon.log", self.port)
        self.daemon = daemon
        await self.enqueue_replies(3)
        await daemon.start()
        self.stop_at = time.monotonic() + self.args.seconds
        # A TaskGroup: when one worker fails, the others are cancelled (their sipp phones stopped), never orphaned.
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.sms_in())
            for v in range(self.args.visitors):
                tg.create_task(self.chat(v))
            tg.create_task(self.fault_loop(daemon))
            if self.pbx is not None:
                tg.create_task(self.calls())
        await self.settle(daemon, 180)
        await asyncio.sleep(3)  # the last recovered voicemail reaches the transcriber
        await self.settle(daemon, 120)
        await daemon.stop()
        self.emu.stop()
        return self.verify(daemon)

    def verify(self, daemon: Daemon) -> dict[str, Any]:
        led = self.ledger
        lost: list[str] = []
        dups: list[str] = []
        bodies = Counter(
            r[0] for r in query(self.db, "SELECT body FROM events WHERE kind = 'message_in' AND channel = 'sms'")
        )
        for text in led.sms_in:
            n = bodies.get(text, 0) if "long" not in text else sum(v for k, v in bodies.items() if k == text)
            if n == 0:
                lost.append(f"sms {text[:20]}")
            elif n > 1:
                dups.append(f"sms {text[:20]} x{n}")
        chats = Counter(
            r[0]
            for r in query(self.db, "SELECT external_id FROM events WHERE kind = 'message_in' AND channel = 'chat'")
        )
        chat_ids: Counter[str] = Counter()
        for ext, count in chats.items():
            for cid in led.chat_acked:
                if ext is not None and ext.endswith(cid):
                    chat_ids[cid] += count
        for cid in led.chat_acked:
            if chat_ids[cid] == 0:
                lost.append(f"chat {cid}")
            elif chat_ids[cid] > 1:
                dups.append(f"chat {cid} x{chat_ids[cid]}")
        sent = Counter(s.text for s in self.emu.sent if s.text.startswith("soak reply"))
        out_dups = [f"{t} sent {n}x" for t, n in sent.items() if n > 1]
        states = dict(query(self.db, "SELECT e.body, o.state FROM outbox o JOIN events e ON e.id = o.event_id"))
        flagged = sum(1 for t in led.sms_out if states.get(t) == "unknown")
        out_lost = [t for t in led.sms_out if t not in sent and states.get(t) not in ("unknown", "failed")]
        missed_absent = []
        expected_calls: list[tuple[str, tuple[str, ...]]] = [
            (c, ("call_missed", "call_abandoned")) for c in led.missed_callers
        ]
        expected_calls += [(c, ("call_missed", "call_abandoned", "call_ended")) for c in led.cut_callers]
        for caller, kinds in expected_calls:
            marks = ",".join("?" * len(kinds))
            rows = query(
                self.db,
                "SELECT COUNT(*) FROM events e JOIN identities i ON i.contact_id = (SELECT contact_id FROM "
                f"conversations WHERE id = e.conversation_id) WHERE i.value = ? AND e.kind IN ({marks})",
                f"+1{caller}",
                *kinds,
            )
            if rows[0][0] == 0:
                missed_absent.append(caller)
        vm_unfinished = []
        for caller in led.voicemail_callers:
            rows = query(
                self.db,
                "SELECT json_extract(e.meta, '$.transcription') FROM events e JOIN conversations v ON v.id = "
                "e.conversation_id JOIN identities i ON i.contact_id = v.contact_id WHERE i.value = ? AND "
                "e.kind = 'voicemail'",
                f"+1{caller}",
            )
            if not rows or rows[0][0] not in ("done", "failed"):
                vm_unfinished.append(f"{caller}: {rows}")
        integrity = query(self.db, "PRAGMA integrity_check")[0][0]
        return {
            "seconds": self.args.seconds,
            "daemon_starts": daemon.starts,
            "faults": dict(led.faults),
            "faults_total": sum(led.faults.values()),
            "in_flight_at_kill": led.in_flight_at_kill,
            "handed_over_while_down": led.handed_over_while_down + len(led.sms_out),
            "sms_in": len(led.sms_in),
            "chat_acked": len(led.chat_acked),
            "sms_out": len(led.sms_out),
            "sms_out_flagged_unknown": flagged,
            "missed_calls": len(led.missed_callers),
            "voicemails": len(led.voicemail_callers),
            "calls_cut_by_asterisk_restart": len(led.cut_callers),
            "lost": lost + [f"outbound {t}" for t in out_lost] + [f"missed call {c}" for c in missed_absent],
            "duplicates": dups + out_dups,
            "voicemails_unfinished": vm_unfinished,
            "integrity_check": integrity,
            "notes": led.notes,
        }

    def cleanup(self) -> None:
        if self.daemon is not None:
            self.daemon.kill9()  # only if a failure left it running
        with contextlib.suppress(Exception):
            self.emu.stop()
        for f in self.data.glob("gateway.db*"):
            with contextlib.suppress(OSError):
                shutil.copy2(f, self.work / f.name)  # kept for a look after the tmpfs is gone
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.data)], check=False)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """One soak run; returns the figures."""
    work = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    s = Soak(args, work)
    try:
        if args.voice:
            from tests.realpbx import harness  # noqa: PLC0415

            with harness.pbx_call_lock(timeout=600):
                result = await s.run()
        else:
            result = await s.run()
        result["work_dir"] = str(work)
        (work / "result.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))
        return result
    finally:
        s.cleanup()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--visitors", type=int, default=3)
    ap.add_argument("--fault-every", type=float, default=6.0, help="mean seconds between faults")
    ap.add_argument("--disk-mb", type=int, default=64, help="tmpfs size for the data dir (0: no disk-full fault)")
    ap.add_argument("--no-voice", dest="voice", action="store_false", help="leave Asterisk out")
    return ap.parse_args(argv)


def main() -> None:
    args = parse_args()
    results = []
    for run in range(args.runs):
        args.seed = args.seed + run
        res = asyncio.run(soak(args))
        results.append(res)
        print(json.dumps(res, ensure_ascii=False, indent=1), flush=True)
    print(
        json.dumps(
            {
                "runs": len(results),
                "faults": sum(r["faults_total"] for r in results),
                "in_flight_at_kill": sum(r["in_flight_at_kill"] for r in results),
                "handed_over_while_down": sum(r["handed_over_while_down"] for r in results),
                "items": sum(
                    r["sms_in"]
                    + r["chat_acked"]
                    + r["sms_out"]
                    + r["missed_calls"]
                    + r["voicemails"]
                    + r["calls_cut_by_asterisk_restart"]
                    for r in results
                ),
                "lost": sum(len(r["lost"]) for r in results),
                "duplicates": sum(len(r["duplicates"]) for r in results),
                "flagged_unknown": sum(r["sms_out_flagged_unknown"] for r in results),
            }
        )
    )


if __name__ == "__main__":
    main()
