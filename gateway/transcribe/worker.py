"""The transcription worker process: ``python -m gateway.transcribe.worker --model DIR``.

Theory of operation: the daemon starts one process per worker slot. The process lowers its CPU priority, loads the Vosk
model once, says ``ready`` and then serves jobs from stdin one at a time (see ``protocol.py``): decode the recording
(``audio.py``, sox for GSM), resample it to the model's rate, run the free recogniser with per-word timing and
confidence, then a second pass whose grammar is the intent keywords plus common filler words. The fillers soak up
ordinary speech, so a keyword is only reported where it beats them (this Korean model has no ``[unk]`` word, and a
grammar of keywords alone forces every sound onto some keyword). The process never touches the database: it only reads
the audio file and answers on stdout. Kaldi's own logging and any stray print go to stderr, so stdout carries nothing
but protocol lines.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from gateway.transcribe.audio import AudioError, load_audio
from gateway.transcribe.model import check_model, model_name, model_sample_rate
from gateway.transcribe.priority import lower_priority
from gateway.transcribe.protocol import (
    Failed,
    Fatal,
    JobRequest,
    Ready,
    Result,
    Started,
    Word,
    WorkerMessage,
    WorkerMessageParser,
    encode,
)

CHUNK_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gateway-transcribe-worker")
    ap.add_argument("--model", required=True, help="Vosk model directory")
    ap.add_argument("--nice", type=int, default=10, help="CPU priority increment")
    ap.add_argument("--idle", action="store_true", help="run in the idle scheduling class (Linux)")
    ap.add_argument("--sox", default="sox", help="sox program (GSM recordings)")
    ap.add_argument("--max-active", type=int, default=0, help="decoder max active states (0: the model's own)")
    ap.add_argument("--fillers", default="[]", help="JSON list of filler words for the keyword grammar")
    return ap.parse_args(argv)


def _words(result: dict[str, Any]) -> list[Word]:
    return [
        Word(str(w["word"]), float(w["start"]), float(w["end"]), float(w.get("conf", 1.0)))
        for w in result.get("result", ())
    ]


def _recognise(recognizer: Any, pcm: bytes, bytes_per_chunk: int) -> list[Word]:
    words: list[Word] = []
    for i in range(0, len(pcm), bytes_per_chunk):
        if recognizer.AcceptWaveform(pcm[i : i + bytes_per_chunk]):
            words += _words(json.loads(recognizer.Result()))
    words += _words(json.loads(recognizer.FinalResult()))
    return words


def _join_phrases(words: Sequence[Word], phrases: Iterable[str]) -> list[Word]:
    """Keep the grammar words that form keyword phrases (consecutive words for multi-word ones)."""
    wanted = {tuple(p.split()) for p in phrases}
    longest = max((len(p) for p in wanted), default=0)
    out: list[Word] = []
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            span = words[i : i + n]
            if tuple(w.word for w in span) in wanted:
                conf = min(w.conf for w in span)
                out.append(Word(" ".join(w.word for w in span), span[0].start, span[-1].end, conf))
                i += n
                break
        else:
            i += 1
    return out


class _Worker:
    def __init__(self, model: Any, vosk: Any, *, rate: int, name: str, sox: str, fillers: list[str]) -> None:
        self.model = model
        self.vosk = vosk
        self.rate = rate
        self.name = name
        self.sox = sox
        self._known: dict[str, bool] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyword-pass")
        self.fillers = [f for f in fillers if self._in_vocabulary(f)]
        if self._in_vocabulary("[unk]"):
            self.fillers.append("[unk]")

    def _in_vocabulary(self, phrase: str) -> bool:
        for word in phrase.split():
            if word not in self._known:
                self._known[word] = self.model.vosk_model_find_word(word) != -1
            if not self._known[word]:
                return False
        return bool(phrase.split())

    def handle(self, job: JobRequest, send: Any) -> None:
        t0 = time.perf_counter()
        try:
            audio = load_audio(job.path, target_rate=self.rate, max_seconds=job.max_seconds, sox=self.sox)
        except AudioError as err:
            send(Failed(job.job, "audio", str(err)))
            return
        send(Started(job.job, audio.duration, audio.full_duration, audio.capped, audio.codec))
        pcm = audio.samples.astype("<i2").tobytes()
        chunk = int(self.rate * CHUNK_SECONDS) * 2
        usable = [p for p in job.grammar if self._in_vocabulary(p)]
        missing = tuple(p for p in job.grammar if p not in usable)
        keyword_pass: Future[list[Word]] | None = None
        if usable:
            # The keyword pass runs beside the free pass: Kaldi releases the GIL while decoding, so
            # on an otherwise idle box the transcript is ready in the time of the longer pass.
            grammar = list(dict.fromkeys([*usable, *self.fillers]))
            rec2 = self.vosk.KaldiRecognizer(self.model, self.rate, json.dumps(grammar, ensure_ascii=False))
            rec2.SetWords(True)
            keyword_pass = self._pool.submit(_recognise, rec2, pcm, chunk)
        rec = self.vosk.KaldiRecognizer(self.model, self.rate)
        rec.SetWords(True)
        words = _recognise(rec, pcm, chunk)
        keywords = _join_phrases(keyword_pass.result(), usable) if keyword_pass is not None else []
        text = " ".join(w.word for w in words)
        send(
            Result(
                job.job,
                text,
                tuple(words),
                tuple(keywords),
                audio.duration,
                time.perf_counter() - t0,
                missing,
            )
        )


def _load_model(vosk: Any, path: str, max_active: int) -> Any:
    """Load the model, with the decoder's ``--max-active`` overridden when ``max_active > 0``.

    Vosk reads its decoder options from ``conf/model.conf`` inside the model directory, which may be
    read-only (a package). So the override is a temporary directory of symlinks to the model's files
    with its own ``model.conf``; Vosk reads every file while loading, so the directory is removed
    as soon as the model is in memory.
    """
    if max_active <= 0:
        return vosk.Model(path)
    root = Path(path)
    with tempfile.TemporaryDirectory(prefix="gateway-vosk-") as tmp:
        overlay = Path(tmp)
        for entry in root.iterdir():
            if entry.name != "conf":
                (overlay / entry.name).symlink_to(entry.resolve())
        (overlay / "conf").mkdir()
        for entry in (root / "conf").iterdir():
            if entry.name != "model.conf":
                (overlay / "conf" / entry.name).symlink_to(entry.resolve())
        lines = [
            line
            for line in (root / "conf" / "model.conf").read_text(encoding="utf-8").splitlines()
            if not line.strip().startswith("--max-active=")
        ]
        lines.append(f"--max-active={max_active}")
        (overlay / "conf" / "model.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return vosk.Model(str(overlay))


def _sender(out: BinaryIO) -> Any:
    def send(message: WorkerMessage) -> None:
        out.write(encode(message))
        out.flush()

    return send


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the daemon dies, so a crashed daemon leaves no orphan
    decoding for nobody (a stopped daemon closes stdin instead, and the worker exits by itself)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError) as err:
        print(f"cannot tie the worker's life to the daemon: {err}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a worker on stdin/stdout until stdin closes."""
    args = _parse_args(argv)
    _die_with_parent()
    # Protocol lines go to the original stdout; everything else that writes to fd 1 lands in stderr.
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    send = _sender(proto)
    for trouble in lower_priority(args.nice, args.idle):
        print(trouble, file=sys.stderr)
    problem = check_model(args.model)
    if problem:
        send(Fatal(problem))
        return 2
    import vosk  # noqa: PLC0415 - only worker processes ever load the recogniser

    vosk.SetLogLevel(-1)
    try:
        model = _load_model(vosk, args.model, args.max_active)
    except OSError as err:
        send(Fatal(f"cannot prepare the Vosk model at {args.model!r}: {err}"))
        return 2
    except Exception as err:  # noqa: BLE001 - any load failure means the model is unusable
        send(Fatal(f"cannot load the Vosk model at {args.model!r}: {err}; download the model again"))
        return 2
    try:
        fillers = [str(f) for f in json.loads(args.fillers)]
    except (ValueError, TypeError) as err:
        send(Fatal(f"--fillers is not a JSON list of words: {err}"))
        return 2
    rate = model_sample_rate(args.model)
    worker = _Worker(model, vosk, rate=rate, name=model_name(args.model), sox=args.sox, fillers=fillers)
    send(Ready(worker.name, rate, os.getpid()))
    parser = WorkerMessageParser()
    stdin = sys.stdin.buffer
    while True:
        data = stdin.readline()
        if not data:
            return 0
        for message in parser.feed(data):
            if not isinstance(message, JobRequest):
                send(Fatal(f"worker expected a job, got {type(message).__name__}"))
                return 2
            try:
                worker.handle(message, send)
            except Exception as err:  # noqa: BLE001 - report it; the daemon decides on retries
                send(Failed(message.job, "internal", f"{type(err).__name__}: {err}"))


if __name__ == "__main__":
    sys.exit(main())
