"""Streaming speech recognition worker (``python -m gateway.transcribe.live_worker``): live calls, never files.

Theory of operation: the daemon writes binary frames to stdin, ``!IBI`` (stream id, kind, payload length) then the
payload. ``OPEN`` carries JSON ``{"rate": 16000, "grammar": [..] | null}`` and creates a Vosk recogniser for the
stream; ``AUDIO`` carries signed 16-bit little-endian mono PCM at that rate; ``CLOSE`` flushes the stream. The
worker answers with JSON lines on stdout: ``ready`` once the model is loaded, then per stream ``partial`` (the
words so far of the current utterance, sent only when they change), ``final`` (one finished utterance with its
start and end in seconds from the stream's start) and ``closed``. One process serves every stream of every call
with one copy of the model in memory; it runs niced, and dies with the daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

from gateway.transcribe.model import check_model
from gateway.transcribe.priority import lower_priority
from gateway.transcribe.worker import _die_with_parent, _load_model

HEADER = struct.Struct("!IBI")
OPEN, AUDIO, CLOSE = 1, 2, 3
MAX_PAYLOAD = 1 << 20


#: Seconds of audio between two partial results of a stream: asking Kaldi for a partial costs about as much as
#: decoding, so asking every 20 ms RTP packet would halve how many calls one core can follow.
PARTIAL_EVERY_S = 0.2


class _Stream:
    __slots__ = ("last_partial", "partial_at", "rate", "recognizer", "samples")

    def __init__(self, recognizer: Any, rate: int) -> None:
        self.recognizer = recognizer
        self.rate = rate
        self.samples = 0
        self.partial_at = 0
        self.last_partial = ""


def _segment(stream_id: int, result: dict[str, Any], offset: float) -> dict[str, Any] | None:
    text = str(result.get("text", "")).strip()
    if not text:
        return None
    words = result.get("result") or []
    start = float(words[0]["start"]) if words else offset
    end = float(words[-1]["end"]) if words else offset
    conf = [float(w.get("conf", 1.0)) for w in words]
    return {
        "stream": stream_id,
        "type": "final",
        "text": text,
        "start": round(start, 2),
        "end": round(end, 2),
        "confidence": round(sum(conf) / len(conf), 3) if conf else None,
    }


def _open(vosk: Any, model: Any, payload: bytes) -> _Stream:
    spec = json.loads(payload or b"{}")
    rate = int(spec.get("rate", 16000))
    grammar = spec.get("grammar")
    rec = (
        vosk.KaldiRecognizer(model, rate, json.dumps(grammar, ensure_ascii=False))
        if grammar
        else vosk.KaldiRecognizer(model, rate)
    )
    rec.SetWords(True)
    return _Stream(rec, rate)


def _audio(stream_id: int, st: _Stream, payload: bytes, send: Any) -> None:
    st.samples += len(payload) // 2
    if st.recognizer.AcceptWaveform(payload):
        seg = _segment(stream_id, json.loads(st.recognizer.Result()), st.samples / st.rate)
        st.last_partial = ""
        st.partial_at = st.samples
        if seg is not None:
            send(seg)
        return
    if st.samples - st.partial_at < st.rate * PARTIAL_EVERY_S:
        return
    st.partial_at = st.samples
    partial = str(json.loads(st.recognizer.PartialResult()).get("partial", "")).strip()
    if partial and partial != st.last_partial:
        st.last_partial = partial
        send({"stream": stream_id, "type": "partial", "text": partial, "samples": st.samples})


def serve(model: Any, vosk: Any, stdin: BinaryIO, send: Any) -> int:
    """Read frames until stdin closes; returns the exit status."""
    streams: dict[int, _Stream] = {}
    while True:
        head = stdin.read(HEADER.size)
        if len(head) < HEADER.size:
            return 0
        stream_id, kind, length = HEADER.unpack(head)
        if length > MAX_PAYLOAD:
            send({"type": "fatal", "error": f"frame of {length} bytes is over the {MAX_PAYLOAD} limit"})
            return 2
        payload = stdin.read(length) if length else b""
        if kind == OPEN:
            streams[stream_id] = _open(vosk, model, payload)
        elif kind == AUDIO and stream_id in streams:
            _audio(stream_id, streams[stream_id], payload, send)
        elif kind == CLOSE:
            st = streams.pop(stream_id, None)
            if st is not None:
                seg = _segment(stream_id, json.loads(st.recognizer.FinalResult()), st.samples / st.rate)
                if seg is not None:
                    send(seg)
            send({"stream": stream_id, "type": "closed"})


def main(argv: Sequence[str] | None = None) -> int:
    """Load the model, say ready, serve streams until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", required=True)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--idle", action="store_true", help="run in the idle scheduling class (Linux)")
    parser.add_argument("--max-active", type=int, default=0)
    args = parser.parse_args(argv)
    _die_with_parent()
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        proto.write(json.dumps(message, ensure_ascii=False).encode() + b"\n")

    for trouble in lower_priority(args.nice, args.idle):
        print(trouble, file=sys.stderr)
    problem = check_model(args.model)
    if problem:
        send({"type": "fatal", "error": problem})
        return 2
    import vosk  # noqa: PLC0415 - only worker processes ever load the recogniser

    vosk.SetLogLevel(-1)
    try:
        model = _load_model(vosk, args.model, args.max_active)
    except Exception as err:  # noqa: BLE001 - any load failure means the model is unusable
        send({"type": "fatal", "error": f"cannot load the Vosk model at {args.model!r}: {err}"})
        return 2
    send({"type": "ready", "pid": os.getpid()})
    return serve(model, vosk, sys.stdin.buffer, send)


if __name__ == "__main__":
    sys.exit(main())
