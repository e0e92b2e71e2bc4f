"""Voice channel benchmarks, run by hand. Prints figures.

  python bench/voice_bench.py replay [--repeat 400]     AMI event throughput and CPU share
  python bench/voice_bench.py agi [--events 1000000]    FastAGI answer latency with a big store
  python bench/voice_bench.py ring [--calls 100]        INVITE -> CallRinging latency (real PBX)

``replay`` plays recorded AMI sessions (tests/channels/voice/transcripts/*.ami, call ids renamed per
repetition) from a separate process over TCP into the real AmiLink -> tracker -> bus path and
measures this process's CPU time. ``agi`` seeds a store with N timeline events, then plays Asterisk
against the real FastAGI server + conversation service. ``ring`` needs the local test Asterisk
(asterisk-config/local-asterisk.sh start with tests/realpbx/test.env) and sipp.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import sip_scenarios as sip  # noqa: E402
from gateway.channels.voice.agi_server import AgiServer, InboundRouter  # noqa: E402
from gateway.channels.voice.ami_link import AmiLink  # noqa: E402
from gateway.channels.voice.channel import VoiceChannel  # noqa: E402
from gateway.channels.voice.settings import VoiceSettings  # noqa: E402
from gateway.config import Secret  # noqa: E402
from gateway.domain.bus import Bus  # noqa: E402
from gateway.domain.events import ALL_EVENTS, CallRinging  # noqa: E402
from gateway.domain.service import ConversationService  # noqa: E402
from gateway.protocols.ami import AmiEvent, AmiParser  # noqa: E402
from gateway.store import queries as q  # noqa: E402
from gateway.store.db import Store  # noqa: E402
from gateway.supervise import freeze_startup_objects  # noqa: E402

TRANSCRIPTS = ROOT / "tests" / "channels" / "voice" / "transcripts"
STAFF = {"201": "alice", "202": "bob", "203": "carol"}


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


# --- (b) AMI replay ------------------------------------------------------------------------------

_ID_KEYS = ("Uniqueid", "Linkedid", "DestUniqueid", "DestLinkedid")

_BLASTER = r"""
import socket, sys
data = open(sys.argv[1], 'rb').read()
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
conn.sendall(b'Asterisk Call Manager/11.0.0\r\n')
buf = b''
while b'\r\n\r\n' not in buf:
    buf += conn.recv(4096)
aid = [l.split(b': ',1)[1] for l in buf.split(b'\r\n') if l.lower().startswith(b'actionid')][0]
ok = b'\r\nMessage: Authentication accepted\r\n\r\n'
conn.sendall(b'Response: Success\r\nActionID: ' + aid + ok)
conn.recv(4096)  # CoreShowChannels from the resync
conn.sendall(data)
conn.recv(1)
"""


def replay_bytes(repeat: int) -> tuple[bytes, int]:
    files = sorted(TRANSCRIPTS.glob("*.ami"))
    if not files:
        raise SystemExit("no recorded transcripts in tests/channels/voice/transcripts/")
    events: list[dict[str, str]] = []
    for f in files:
        for pkt in AmiParser().feed(f.read_bytes()):
            if isinstance(pkt, AmiEvent):
                events.append({k: v for k, v in pkt.fields.items() if k != "Timestamp"})
    out = bytearray()
    n = 0
    for rep in range(repeat):
        for ev in events:
            fields = dict(ev)
            for k in _ID_KEYS:
                if fields.get(k):
                    fields[k] = f"{fields[k]}-{rep}"
            if fields.get("Event") == "UserEvent" and fields.get("File"):
                fields["File"] = f"{fields['File']}-{rep}"
            out += "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n"
            n += 1
    return bytes(out), n


class NullService:
    """Accepts timeline writes instantly, so the replay measures the AMI path alone."""

    def __init__(self) -> None:
        self.n = 0

    async def ingest(self, item: Any) -> Any:
        self.n += 1
        return q_result(self.n)

    async def append_event(self, *args: Any, **kw: Any) -> int:
        self.n += 1
        return self.n

    async def find_contact(self, *args: Any) -> None:
        return None

    async def summary(self, *args: Any) -> None:
        return None


def q_result(n: int) -> Any:
    from gateway.domain.models import IngestResult  # noqa: PLC0415

    return IngestResult(n, n, n, False)


async def bench_replay(repeat: int) -> None:
    data, n_events = replay_bytes(repeat)
    with tempfile.NamedTemporaryFile(suffix=".ami", delete=False) as f:
        f.write(data)
        path = f.name
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _BLASTER, path, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    port = int((await proc.stdout.readline()).decode())
    bus = Bus()
    sub = bus.subscribe("bench", maxsize=1_000_000, types=ALL_EVENTS)
    vc = VoiceChannel(VoiceSettings(staff=STAFF), NullService(), bus)  # type: ignore[arg-type]
    seen = 0
    done = asyncio.Event()

    def on_event(ev: dict[str, str]) -> None:
        nonlocal seen
        vc.on_ami_event(ev)
        seen += 1
        if seen >= n_events:
            done.set()

    link = AmiLink(
        host="127.0.0.1",
        port=port,
        username="x",
        secret="y",
        on_event=on_event,
        on_connected=vc.resync,
    )
    vc.ami = link
    cpu0, t0 = time.process_time(), time.perf_counter()
    await link.start()
    await asyncio.wait_for(done.wait(), 300)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await link.stop()
    proc.kill()
    await proc.wait()
    os.unlink(path)
    per_cpu = n_events / cpu
    print(
        f"(b) AMI replay: {n_events} events ({len(data) / 1e6:.1f} MB) from {repeat} x "
        f"the recorded session(s), {vc.tracker.recent_count} calls kept"
    )
    print(
        f"    wall {wall:.2f} s -> {n_events / wall:,.0f} events/s at full speed; "
        f"CPU {cpu:.2f} s -> {per_cpu:,.0f} events per CPU-second"
    )
    print(
        f"    at 10,000 events/s the AMI path uses {10_000 / per_cpu * 100:.1f}% of one core "
        f"(target < 25%); bus events published: {sub.pending()}"
    )


# --- (c) FastAGI answer latency with a big store -------------------------------------------------


def seed(path: Path, n_events: int, per_contact: int = 10) -> int:
    """Fill a fresh store with ``n_events`` timeline events over n/per_contact contacts."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    now = time.time() - 86400 * 30
    contacts = max(1, n_events // per_contact)
    kinds = ["message_in", "message_out", "call_answered", "call_ended", "note"]
    for i in range(contacts):
        number = f"+1555{i:07d}"
        _, conv = q.create_contact(conn, "phone", number, number, True, f"Customer {i} Smith", now)
        for j in range(per_contact):
            kind = kinds[j % len(kinds)]
            meta = f'{{"extension":"20{1 + j % 3}"}}' if kind == "call_answered" else "{}"
            q.insert_event(
                conn,
                conv,
                kind,
                "sms",
                f"message {j} about the roof",
                meta,
                f"seed-{i}-{j}",
                None,
                now + j,
                now + j,
            )
        if i % 10_000 == 9_999:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            print(f"    seeded {(i + 1) * per_contact:,} events", flush=True)
    conn.execute("COMMIT")
    conn.close()
    return contacts


async def bench_agi(n_events: int, sessions: int, db: Path | None) -> None:
    tmp = Path(tempfile.mkdtemp())
    path = db or tmp / "bench.db"
    store = Store(path)
    fresh = not path.exists()
    await store.start()  # applies migrations
    if fresh:
        await store.stop()
        t0 = time.perf_counter()
        contacts = seed(path, n_events)
        print(f"    seeding took {time.perf_counter() - t0:.0f} s")
        store = Store(path)
        await store.start()
    else:
        contacts = await store.read(lambda c: c.execute("SELECT COUNT(*) FROM contacts").fetchone()[0])
    total = await store.read(lambda c: c.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    bus = Bus()
    service = ConversationService(store, bus)
    settings = VoiceSettings(staff=STAFF, staff_group="PJSIP/201&PJSIP/202&PJSIP/203")
    router = InboundRouter(service, settings)
    server = AgiServer({"inbound": router}, port=0)
    await server.start()
    lat: list[float] = []
    known = 0
    for n in range(sessions):
        # 3 in 4 callers are known; S311: a benchmark's sample, not cryptography
        i = random.randrange(contacts) if n % 4 else contacts + n
        number = f"+1555{i:07d}"
        head = (
            "agi_network: yes\nagi_request: agi://127.0.0.1/inbound\n"
            f"agi_channel: PJSIP/trunk-{n}\n"
            f"agi_uniqueid: {n}.1\nagi_callerid: {number}\nagi_calleridname: \nagi_arg_1: 100\n\n"
        ).encode()
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        t0 = time.perf_counter()
        w.write(head)
        got = {}
        while True:
            line = await r.readline()
            if not line:
                break
            name, _, value = line.decode()[len("SET VARIABLE ") :].rstrip("\n").partition(" ")
            got[name] = value
            w.write(b"200 result=1\n")
        lat.append((time.perf_counter() - t0) * 1000)
        known += got.get("GW_KNOWN") == '"1"'
        w.close()
    await server.stop()
    await store.stop()
    print(
        f"(c) FastAGI answer latency over {sessions} sessions with {total:,} events / "
        f"{contacts:,} contacts in the store ({known} known callers):"
    )
    print(
        f"    p50 {pct(lat, 50):.2f} ms  p99 {pct(lat, 99):.2f} ms  max {max(lat):.2f} ms "
        f"(target p99 <= 20 ms); lookups over budget: {router.timeouts}"
    )
    if db is None:
        shutil.rmtree(tmp, ignore_errors=True)


# --- (a) ring-to-bus latency with the real Asterisk and sipp -------------------------------------

_TS_RE = re.compile(r"^-+ (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+)")


def _env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def _invite_times(trace: Path) -> list[float]:
    """Send times of every INVITE in a sipp -trace_msg file (sipp prints local wall-clock time)."""
    times = []
    lines = trace.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        m = _TS_RE.match(line)
        if not m or i + 3 >= len(lines) or "message sent" not in lines[i + 1]:
            continue
        if not any(x.startswith("INVITE ") for x in lines[i + 2 : i + 4]):
            continue
        day, _, frac = m.group(1).partition(".")
        times.append(time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + float("0." + frac))
    return times


async def bench_ring(calls: int, *, unknown: bool = False, freeze: bool = True) -> dict[str, float]:
    env = _env(ROOT / "tests" / "realpbx" / "test.env")
    secret = env.get("AMI_SECRET", "")
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp is not installed (Debian package sip-tester)")
    store_dir = Path(tempfile.mkdtemp())
    store = Store(store_dir / "ring.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    host, _, port = env.get("AGI_ADDR", "127.0.0.1:14573").partition(":")
    settings = VoiceSettings(
        ami_port=int(env.get("AMI_PORT", "15038")),
        ami_username=env.get("AMI_USER", "gateway"),
        ami_secret=Secret(secret),
        agi_host=host,
        agi_port=int(port),
        staff=STAFF,
    )
    vc = VoiceChannel(settings, service, bus, store=store)
    # sipp's built-in caller presents itself as "sipp": make it a returning customer with context.
    from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound  # noqa: PLC0415

    seeded = await service.ingest(
        Inbound(
            Channel.SMS,
            EventKind.MESSAGE_IN,
            IdentityKind.PHONE,
            "sipp",
            "bench-1",
            "hello",
            display_name="Bench Caller",
        )
    )
    await service.update_conversation(seeded.conversation_id, intent="roof estimate")
    sub = bus.subscribe("bench", maxsize=100_000, types=(CallRinging,))
    arrivals: dict[str, float] = {}
    first_event: dict[str, float] = {}
    orig = vc.on_ami_event

    def timed(ev: dict[str, str]) -> None:
        link = ev.get("Linkedid", "")
        if ev.get("Event") == "DialBegin" and link not in first_event:
            first_event[link] = time.time()
        orig(ev)

    vc.ami._on_event = timed  # noqa: SLF001 - benchmark instrumentation
    agi_ms: dict[str, float] = {}
    route = vc.router

    pbx_ms: dict[str, float] = {}
    lookup_ms: dict[str, float] = {}
    find = route._find  # noqa: SLF001 - benchmark instrumentation

    async def timed_find(number: str) -> Any:
        t0 = time.perf_counter()
        try:
            return await find(number)
        finally:
            lookup_ms[number + str(len(lookup_ms))] = (time.perf_counter() - t0) * 1000

    route._find = timed_find  # type: ignore[method-assign]  # noqa: SLF001
    # Each store read timed twice: the whole await, and the query itself on the reader's thread.
    read_total: list[float] = []
    read_inside: list[float] = []
    plain_read = store.read

    async def timed_read(fn: Any) -> Any:
        inside = 0.0

        def timed_fn(conn: Any) -> Any:
            nonlocal inside
            t = time.perf_counter()
            try:
                return fn(conn)
            finally:
                inside = time.perf_counter() - t

        t0 = time.perf_counter()
        try:
            return await plain_read(timed_fn)
        finally:
            read_total.append((time.perf_counter() - t0) * 1000)
            read_inside.append(inside * 1000)

    store.read = timed_read  # type: ignore[method-assign]

    async def timed_route(session: Any) -> None:
        # Time spent waiting for Asterisk's answers to SET VARIABLE is Asterisk's, not the daemon's: kept apart.
        command = session.command
        waited = 0.0

        async def timed_command(line: str) -> Any:
            nonlocal waited
            t = time.perf_counter()
            try:
                return await command(line)
            finally:
                waited += time.perf_counter() - t

        session.command = timed_command
        t0 = time.perf_counter()
        await route(session)
        agi_ms[session.request.uniqueid] = (time.perf_counter() - t0) * 1000
        pbx_ms[session.request.uniqueid] = waited * 1000

    lag: list[float] = []

    async def loop_lag() -> None:
        # How late the event loop wakes up for a 5 ms timer: time the daemon could not run at all.
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lag.append((time.perf_counter() - t - 0.005) * 1000)

    lagger = asyncio.create_task(loop_lag())

    vc.agi._handlers["inbound"] = timed_route  # noqa: SLF001 - benchmark instrumentation
    await vc.start()
    # As App.start does: what was loaded at start is moved out of the collector's full scans (gc.unfreeze: not).
    if freeze:
        gc.unfreeze()
        tracked = len(gc.get_objects())
        t_full = time.perf_counter()
        gc.collect()
        full_ms = (time.perf_counter() - t_full) * 1000
        frozen = freeze_startup_objects()
        t_full = time.perf_counter()
        gc.collect()
        print(
            f"    a full garbage collection over the {tracked} objects loaded at start: {full_ms:.1f} ms; "
            f"after freezing {frozen}: {(time.perf_counter() - t_full) * 1000:.1f} ms"
        )
    else:
        gc.unfreeze()
    gc_pauses: list[float] = []
    gc_started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            gc_started["t"] = time.perf_counter()
        elif "t" in gc_started:
            gc_pauses.append((time.perf_counter() - gc_started.pop("t")) * 1000)

    gc.callbacks.append(on_gc)
    uas = []
    for ext in ("201", "202", "203"):
        uas.append(
            await asyncio.create_subprocess_exec(
                sipp,
                "-sn",
                "uas",
                "-i",
                "127.0.0.1",
                "-p",
                f"152{ext[1:]}",
                "-nostdin",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    trace_dir = Path(tempfile.mkdtemp())

    async def collect() -> None:
        async for ev in sub:
            assert isinstance(ev, CallRinging)
            arrivals.setdefault(ev.call_id, time.time())

    collector = asyncio.create_task(collect())
    if unknown:
        # Every call from a new number: the first-time caller path (the conversation is created first).
        fields = {"name": "", "number": "[field0]"}
        scenario = sip.caller("gateway-bench-uac").format(**fields) + sip.CALLER_TALKS.format(
            **fields, hold_ms=300, answer_timeout_ms=30000, rtp=""
        )
        (trace_dir / "uac.xml").write_text(scenario)
        stamp = int(time.time()) % 100_000
        csv = "SEQUENTIAL\n" + "".join(f"+1666{stamp:05d}{n:03d}\n" for n in range(calls))
        (trace_dir / "callers.csv").write_text(csv)
        how = ["-sf", str(trace_dir / "uac.xml"), "-inf", str(trace_dir / "callers.csv")]
    else:
        how = ["-sn", "uac", "-d", "300"]
    proc = await asyncio.create_subprocess_exec(
        sipp, *how, "-s", "5550100", f"127.0.0.1:{env.get('SIP_PORT', '15060')}",
        "-i", "127.0.0.2", "-p", "15071", "-m", str(calls), "-l", "1", "-r", "4",
        "-nostdin", "-trace_msg", "-message_file", str(trace_dir / "msg.log"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await proc.wait()
    await asyncio.sleep(1)
    collector.cancel()
    lagger.cancel()
    gc.callbacks.remove(on_gc)
    await vc.stop()
    await store.stop()
    for p in uas:
        p.terminate()
        await p.wait()
    invites = _invite_times(trace_dir / "msg.log")
    ordered = sorted(arrivals.items(), key=lambda kv: kv[1])
    total = [(t - inv) * 1000 for (_, t), inv in zip(ordered, invites, strict=False)]
    own = [(arrivals[c] - first_event[c]) * 1000 + agi_ms.get(c, 0.0) for c in arrivals if c in first_event]
    agi = list(agi_ms.values())
    who = "first-time callers" if unknown else "a returning caller"
    print(f"(a) ring-to-bus over {len(total)} calls from {who} (INVITE sent by sipp -> CallRinging received):")
    print(f"    total p50 {pct(total, 50):.1f} ms  p99 {pct(total, 99):.1f} ms (includes Asterisk)")
    print(
        f"    daemon's own share (FastAGI session + DialBegin received -> CallRinging "
        f"delivered): p50 {pct(own, 50):.2f} ms  p99 {pct(own, 99):.2f} ms (target p99 <= 15 ms)"
    )
    print(f"    of which FastAGI answer: p50 {pct(agi, 50):.2f} ms  p99 {pct(agi, 99):.2f} ms")
    pbx = list(pbx_ms.values())
    looks = list(lookup_ms.values())
    print(
        f"      of which waiting for Asterisk's replies: p50 {pct(pbx, 50):.2f} ms  p99 {pct(pbx, 99):.2f} ms; "
        f"caller lookup: p50 {pct(looks, 50):.2f} ms  p99 {pct(looks, 99):.2f} ms"
    )
    print(
        f"    store reads: p99 {pct(read_total, 99):.2f} ms  max {max(read_total, default=0):.1f} ms awaited; "
        f"the query itself on the reader thread: p99 {pct(read_inside, 99):.2f} ms  max {max(read_inside, default=0):.1f} ms"
    )
    print(f"    event-loop lag (5 ms timer): p99 {pct(lag, 99):.1f} ms  max {max(lag, default=0):.1f} ms")
    print(
        f"    full garbage collections meanwhile: {len(gc_pauses)}, longest {max(gc_pauses, default=0):.1f} ms "
        f"({'start-up objects frozen' if freeze else 'nothing frozen'})"
    )
    return {
        "own_p50": pct(own, 50),
        "own_p99": pct(own, 99),
        "total_p99": pct(total, 99),
        "agi_p99": pct(agi, 99),
        "pbx_p99": pct(pbx, 99),
        "lookup_p99": pct(looks, 99),
        "lag_max": max(lag, default=0.0),
        "gc_max": max(gc_pauses, default=0.0),
        "read_max": max(read_total, default=0.0),
        "read_inside_max": max(read_inside, default=0.0),
        "gc_count": float(len(gc_pauses)),
    }


async def bench_ring_locked(calls: int, *, unknown: bool) -> None:
    """Hold the test harness's call lock so no test run shares the phones meanwhile."""
    from tests.realpbx import harness  # noqa: PLC0415 - only this benchmark needs the harness

    with harness.pbx_call_lock():
        await harness.wait_pbx_quiet(harness.load_settings())
        await bench_ring(calls, unknown=unknown)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=["replay", "agi", "ring", "all"])
    ap.add_argument("--repeat", type=int, default=400)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--db", type=Path, default=None, help="reuse/keep the seeded store here")
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--unknown", action="store_true", help="ring: every call from a first-time caller")
    a = ap.parse_args()
    if a.what in ("replay", "all"):
        asyncio.run(bench_replay(a.repeat))
    if a.what in ("agi", "all"):
        asyncio.run(bench_agi(a.events, a.sessions, a.db))
    if a.what in ("ring", "all"):
        asyncio.run(bench_ring_locked(a.calls, unknown=a.unknown))


if __name__ == "__main__":
    main()
