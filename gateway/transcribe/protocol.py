"""The line protocol between the daemon and a transcription worker process (sans-IO).

Theory of operation: each side writes one JSON object per line (UTF-8, ``\\n``-terminated) on the worker's stdin/stdout;
the worker's stderr is only for logs. The worker starts, loads the model and says ``ready`` (or ``fatal`` with the
reason, then exits). For each ``job`` it first says ``started`` once the audio is decoded (with its duration, so the
daemon can size the timeout for the recognition), then ``result`` or ``failed``. A worker handles one job at a time.
:class:`WorkerMessageParser` turns bytes into frozen message dataclasses; a line that is not valid JSON, not an object,
of an unknown type, missing a field or longer than ``max_line`` is a :class:`ProtocolError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.errors import ProtocolError

MAX_LINE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word with its timing (seconds) and confidence (0..1)."""

    word: str
    start: float
    end: float
    conf: float


@dataclass(frozen=True, slots=True)
class JobRequest:
    """Daemon to worker: transcribe ``path``."""

    job: int
    path: str
    max_seconds: float
    grammar: tuple[str, ...] = ()
    """Keyword phrases for the second, grammar-restricted pass; empty skips it."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Worker to daemon: the model is loaded."""

    model: str
    sample_rate: int
    pid: int
    missing_words: tuple[str, ...] = ()
    """Grammar words the model's vocabulary lacks (reported once per worker after its first job)."""


@dataclass(frozen=True, slots=True)
class Fatal:
    """Worker to daemon: the worker cannot work (model missing or broken); it exits after this."""

    error: str


@dataclass(frozen=True, slots=True)
class Started:
    """Worker to daemon: the audio of ``job`` is decoded; recognition starts."""

    job: int
    duration: float
    full_duration: float
    capped: bool
    codec: str


@dataclass(frozen=True, slots=True)
class Result:
    """Worker to daemon: the transcript of ``job``."""

    job: int
    text: str
    words: tuple[Word, ...]
    keywords: tuple[Word, ...]
    """What the grammar pass heard (keywords only, fillers removed)."""
    duration: float
    decode_seconds: float
    """Wall-clock seconds spent decoding audio and recognising."""
    missing_words: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Failed:
    """Worker to daemon: ``job`` failed; ``kind`` is ``audio`` (permanent) or ``internal``."""

    job: int
    kind: str
    error: str


WorkerMessage = Ready | Fatal | Started | Result | Failed


def encode(message: JobRequest | WorkerMessage) -> bytes:
    """One protocol line."""
    body: dict[str, Any] = {"type": type(message).__name__.lower(), **asdict(message)}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _words(raw: Any) -> tuple[Word, ...]:
    if not isinstance(raw, list):
        raise ProtocolError("worker sent words that are not a list")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise ProtocolError("worker sent a word that is not an object")
        try:
            out.append(Word(str(item["word"]), float(item["start"]), float(item["end"]), float(item["conf"])))
        except (KeyError, TypeError, ValueError) as err:
            raise ProtocolError(f"worker sent a malformed word: {err}") from err
    return tuple(out)


def decode(line: bytes) -> JobRequest | WorkerMessage:
    """Parse one line (without its newline)."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"worker line is not JSON: {line[:80]!r}") from err
    if not isinstance(obj, dict):
        raise ProtocolError(f"worker line is not a JSON object: {line[:80]!r}")
    kind = obj.get("type")
    try:
        if kind == "ready":
            return Ready(
                str(obj["model"]),
                int(obj["sample_rate"]),
                int(obj["pid"]),
                tuple(obj.get("missing_words", ())),
            )
        if kind == "fatal":
            return Fatal(str(obj["error"]))
        if kind == "started":
            return Started(
                int(obj["job"]),
                float(obj["duration"]),
                float(obj["full_duration"]),
                bool(obj["capped"]),
                str(obj["codec"]),
            )
        if kind == "result":
            return Result(
                int(obj["job"]),
                str(obj["text"]),
                _words(obj["words"]),
                _words(obj["keywords"]),
                float(obj["duration"]),
                float(obj["decode_seconds"]),
                tuple(str(w) for w in obj.get("missing_words", ())),
            )
        if kind == "failed":
            return Failed(int(obj["job"]), str(obj["kind"]), str(obj["error"]))
        if kind == "jobrequest":
            return JobRequest(
                int(obj["job"]),
                str(obj["path"]),
                float(obj["max_seconds"]),
                tuple(str(g) for g in obj["grammar"]),
            )
    except (KeyError, TypeError, ValueError) as err:
        raise ProtocolError(f"worker message {kind!r} is malformed: {err!r}") from err
    raise ProtocolError(f"unknown worker message type {kind!r}")


class WorkerMessageParser:
    """Bytes in, messages out: ``feed(bytes) -> list[message]``."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buf = bytearray()
        self._max_line = max_line

    def feed(self, data: bytes) -> list[JobRequest | WorkerMessage]:
        """Add bytes; return every complete message."""
        self._buf += data
        out: list[JobRequest | WorkerMessage] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self._max_line:
                    raise ProtocolError(f"worker line longer than {self._max_line} bytes")
                return out
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if line.strip():
                out.append(decode(line))
