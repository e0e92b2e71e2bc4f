"""Voicemail audio as Asterisk writes it, decoded to 16-bit mono PCM for the recogniser.

Theory of operation: a recording is identified by its content first (a ``RIFF``/``WAVE`` header) and by its extension
only for Asterisk's headerless formats (``.gsm``, ``.ulaw``, ``.alaw``, ``.sln``, ``.sln16``). The WAV chunk list is
walked by hand so every way a file can be broken (empty, header only, chunk sizes pointing past the end of the file, an
unknown codec) becomes an :class:`AudioError` that says what is wrong. Only the first ``max_seconds`` of audio are read
and decoded: a three-hour recording costs the same as a ten-minute one, and the file itself is left untouched. PCM,
mu-law and a-law are decoded here with lookup tables; GSM 6.10 (Asterisk's ``WAV``/``wav49`` and ``gsm`` formats) is
decoded by the ``sox`` program, run in the transcription worker, never in the daemon's process.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import soxr

from gateway.errors import PermanentError

Pcm16 = npt.NDArray[np.int16]

#: WAVE format tags we accept.
_PCM = 0x0001
_ALAW = 0x0006
_MULAW = 0x0007
_GSM610 = 0x0031
_EXTENSIBLE = 0xFFFE

#: Headerless formats Asterisk writes, by file extension: (codec, sample rate).
_RAW_FORMATS: dict[str, tuple[str, int]] = {
    ".gsm": ("gsm", 8000),
    ".ulaw": ("mulaw", 8000),
    ".ul": ("mulaw", 8000),
    ".pcm": ("mulaw", 8000),  # Asterisk's "pcm" format is mu-law
    ".alaw": ("alaw", 8000),
    ".al": ("alaw", 8000),
    ".sln": ("pcm16", 8000),
    ".raw": ("pcm16", 8000),
    ".sln16": ("pcm16", 16000),
}

_GSM_FRAME_BYTES = 33  # one raw GSM 6.10 frame: 160 samples
_WAV49_BLOCK_BYTES = 65  # Microsoft GSM (wav49): two frames, 320 samples
_SOX_TIMEOUT = 120.0


class AudioError(PermanentError):
    """The recording cannot be decoded (empty, truncated, corrupt or an unsupported codec).

    Retrying will not help; the file itself is kept so staff can still listen to it.
    """


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    """Audio ready for the recogniser."""

    samples: Pcm16
    """Mono 16-bit PCM at :attr:`rate`, at most ``max_seconds`` long."""
    rate: int
    source_rate: int
    codec: str
    """``pcm16``, ``pcm8``, ``mulaw``, ``alaw`` or ``gsm``."""
    duration: float
    """Seconds of audio decoded (after the cap)."""
    full_duration: float
    """Seconds of audio in the file."""
    capped: bool
    """True when the file is longer than ``max_seconds`` and only its beginning was decoded."""


@dataclass(frozen=True, slots=True)
class _Layout:
    codec: str
    rate: int
    channels: int
    data_offset: int
    data_bytes: int
    frame_bytes: int
    frame_samples: int
    wav: bool


def _ulaw_table() -> Pcm16:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = (((u & 0x0F) << 3) + 0x84) << exponent
    value = magnitude - 0x84
    return np.where(u & 0x80, -value, value).astype(np.int16)


def _alaw_table() -> Pcm16:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


_ULAW = _ulaw_table()
_ALAW_TABLE = _alaw_table()


def decode_mulaw(data: bytes) -> Pcm16:
    """G.711 mu-law bytes to 16-bit PCM."""
    return _ULAW[np.frombuffer(data, dtype=np.uint8)]


def decode_alaw(data: bytes) -> Pcm16:
    """G.711 a-law bytes to 16-bit PCM."""
    return _ALAW_TABLE[np.frombuffer(data, dtype=np.uint8)]


def resample(samples: Pcm16, from_rate: int, to_rate: int) -> Pcm16:
    """Resample 16-bit mono PCM with soxr (high quality); a no-op when the rates match."""
    if from_rate <= 0 or to_rate <= 0:
        raise AudioError(f"cannot resample from {from_rate} Hz to {to_rate} Hz: rates must be positive")
    if from_rate == to_rate or samples.size == 0:
        return samples.astype(np.int16, copy=False)
    # Float in, float out: soxr's int16 path adds dither, turning digital silence into noise.
    out = np.asarray(soxr.resample(samples.astype(np.float32), from_rate, to_rate, quality="HQ"))
    result: Pcm16 = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
    return result


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _parse_wav(fh: BinaryIO, path: Path, size: int) -> _Layout:  # noqa: PLR0912 - one branch per defect
    """Walk the RIFF chunks; return where the audio is and how it is coded."""
    header = fh.read(12)
    if len(header) < 12 or header[:4] not in (b"RIFF", b"RIFX") or header[8:12] != b"WAVE":
        raise AudioError(f"{path}: not a WAV file (no RIFF/WAVE header); the recording is corrupt")
    if header[:4] == b"RIFX":
        raise AudioError(f"{path}: big-endian WAV (RIFX) is not supported; convert it with sox to a normal WAV")
    fmt: tuple[int, int, int, int, int] | None = None  # tag, channels, rate, block_align, bits
    pos = 12
    while True:
        fh.seek(pos)
        chunk = fh.read(8)
        if len(chunk) < 8:
            if fmt is None:
                raise AudioError(f"{path}: WAV file has no 'fmt ' chunk; the header is truncated or corrupt")
            raise AudioError(f"{path}: WAV file has no 'data' chunk; the recording is empty or truncated")
        chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            if chunk_size < 16:
                raise AudioError(f"{path}: WAV 'fmt ' chunk is {chunk_size} bytes, expected at least 16")
            try:
                raw = _read_exact(fh, min(chunk_size, 40))
            except EOFError:
                raise AudioError(f"{path}: WAV header is truncated inside the 'fmt ' chunk") from None
            tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", raw[:16])
            if tag == _EXTENSIBLE and len(raw) >= 26:
                tag = struct.unpack("<H", raw[24:26])[0]
            fmt = (tag, channels, rate, block_align, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioError(f"{path}: WAV 'data' chunk comes before 'fmt '; the file is corrupt")
            available = size - body
            data_bytes = chunk_size
            if data_bytes in (0, 0xFFFFFFFF) and available > 0:
                # The writer never filled in the size (killed mid-recording): the audio is there.
                data_bytes = available
            if data_bytes == 0:
                raise AudioError(f"{path}: the recording has zero length (empty 'data' chunk)")
            if data_bytes > available:
                raise AudioError(
                    f"{path}: the recording is truncated: the header announces {data_bytes} bytes "
                    "of audio "
                    f"but only {max(available, 0)} are in the file"
                )
            return _layout(path, fmt, body, data_bytes)
        pos = body + chunk_size + (chunk_size & 1)
        if pos > size:
            raise AudioError(f"{path}: WAV chunk {chunk_id!r} runs past the end of the file; it is truncated")


def _layout(path: Path, fmt: tuple[int, int, int, int, int], offset: int, data_bytes: int) -> _Layout:
    tag, channels, rate, block_align, bits = fmt
    if channels < 1 or channels > 8:
        raise AudioError(f"{path}: WAV header says {channels} channels; the file is corrupt")
    if rate < 4000 or rate > 192000:
        raise AudioError(f"{path}: WAV header says {rate} Hz; the file is corrupt")
    samples = 1
    if tag == _PCM and bits == 16:
        codec, frame = "pcm16", 2 * channels
    elif tag == _PCM and bits == 8:
        codec, frame = "pcm8", channels
    elif tag == _MULAW:
        codec, frame = "mulaw", channels
    elif tag == _ALAW:
        codec, frame = "alaw", channels
    elif tag == _GSM610:
        if channels != 1 or block_align != _WAV49_BLOCK_BYTES:
            raise AudioError(f"{path}: GSM 6.10 WAV with block size {block_align}; expected mono, 65 bytes")
        codec, frame, samples = "gsm", _WAV49_BLOCK_BYTES, 320
    else:
        raise AudioError(
            f"{path}: unsupported WAV codec (format tag 0x{tag:04x}, {bits} bits); record "
            "voicemail as "
            "wav, WAV (GSM), gsm, ulaw, alaw or wav16"
        )
    # A partial frame at the end (sox pads GSM data to an odd size) carries no audio: drop it.
    data_bytes -= data_bytes % frame
    if data_bytes == 0:
        raise AudioError(f"{path}: the recording has zero length (less than one {codec} frame)")
    return _Layout(codec, rate, channels, offset, data_bytes, frame, samples, wav=True)


def _raw_layout(path: Path, size: int) -> _Layout:
    suffix = path.suffix
    if suffix.lower() not in _RAW_FORMATS:
        raise AudioError(
            f"{path}: not a WAV file and the extension {suffix!r} is not a known Asterisk format "
            "(gsm, ulaw, alaw, sln, sln16); the recording is corrupt or of an unsupported kind"
        )
    codec, rate = _RAW_FORMATS[suffix.lower()]
    frame = {"gsm": _GSM_FRAME_BYTES, "pcm16": 2}.get(codec, 1)
    samples = 160 if codec == "gsm" else 1
    if size % frame:
        raise AudioError(
            f"{path}: the recording is truncated: {size} bytes is not a whole number of {frame}-byte {codec} frames"
        )
    return _Layout(codec, rate, 1, 0, size, frame, samples, wav=False)


def _seconds(layout: _Layout) -> float:
    return layout.data_bytes // layout.frame_bytes * layout.frame_samples / layout.rate


def _to_mono(samples: Pcm16, channels: int) -> Pcm16:
    if channels == 1:
        return samples
    frames = samples[: samples.size - samples.size % channels].reshape(-1, channels)
    mixed: Pcm16 = frames.mean(axis=1, dtype=np.float64).round().astype(np.int16)
    return mixed


def _decode_gsm(path: Path, layout: _Layout, max_seconds: float, sox: str) -> Pcm16:
    exe = shutil.which(sox)
    if exe is None:
        raise AudioError(
            f"{path}: GSM recordings are decoded with sox, which is not installed ({sox!r} not "
            "found); "
            "install it (apt-get install sox) or set transcribe.sox_path"
        )
    in_type = ["-t", "wav"] if layout.wav else ["-t", "gsm", "-r", "8000", "-c", "1"]
    cmd = [
        exe,
        "-V1",
        *in_type,
        str(path),
        "-t",
        "raw",
        "-e",
        "signed-integer",
        "-b",
        "16",
        "-c",
        "1",
        "-",
    ]
    cmd += ["trim", "0", f"{max_seconds:.3f}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=_SOX_TIMEOUT, check=False)  # noqa: S603
    except subprocess.TimeoutExpired as err:
        raise AudioError(f"{path}: sox took more than {_SOX_TIMEOUT:.0f} s to decode the GSM audio") from err
    if proc.returncode != 0:
        reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(f"{path}: sox could not decode the GSM audio: {reason[-1] if reason else proc.returncode}")
    out = proc.stdout[: len(proc.stdout) - len(proc.stdout) % 2]
    return np.frombuffer(out, dtype="<i2").astype(np.int16)


def probe_audio(path: str | os.PathLike[str]) -> tuple[str, int, float]:
    """Check the file's structure without decoding: (codec, rate, seconds) or AudioError."""
    layout = _open_layout(Path(path))
    return layout.codec, layout.rate, _seconds(layout)


def _open_layout(p: Path) -> _Layout:
    try:
        with p.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise AudioError(f"{p}: the recording is empty (0 bytes)")
            magic = fh.read(4)
            fh.seek(0)
            if magic in (b"RIFF", b"RIFX"):
                return _parse_wav(fh, p, size)
            return _raw_layout(p, size)
    except FileNotFoundError as err:
        raise AudioError(f"{p}: the recording does not exist (was it moved or deleted?)") from err
    except IsADirectoryError as err:
        raise AudioError(f"{p}: is a directory, not a recording") from err
    except PermissionError as err:
        raise AudioError(f"{p}: cannot read the recording: permission denied for uid {os.getuid()}") from err


def load_audio(
    path: str | os.PathLike[str],
    *,
    target_rate: int = 16000,
    max_seconds: float = 600.0,
    sox: str = "sox",
) -> DecodedAudio:
    """Decode at most ``max_seconds`` of ``path`` to mono 16-bit PCM at ``target_rate``.

    Raises :class:`AudioError` with the reason for empty, zero-length, truncated, corrupt or
    unsupported files.
    Blocking (file I/O, maybe a sox process): call it in the transcription worker, not on the event
    loop.
    """
    if max_seconds <= 0:
        raise AudioError(f"max_seconds must be positive, got {max_seconds}")
    p = Path(path)
    layout = _open_layout(p)
    full = _seconds(layout)
    capped = full > max_seconds
    if layout.codec == "gsm":
        pcm = _decode_gsm(p, layout, max_seconds, sox)
    else:
        want = min(layout.data_bytes, int(max_seconds * layout.rate) * layout.frame_bytes)
        with p.open("rb") as fh:
            fh.seek(layout.data_offset)
            raw = fh.read(want)
        if len(raw) != want:
            raise AudioError(f"{p}: the recording changed or was truncated while it was being read")
        if layout.codec == "pcm16":
            pcm = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        elif layout.codec == "pcm8":
            pcm = ((np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
        elif layout.codec == "mulaw":
            pcm = decode_mulaw(raw)
        else:
            pcm = decode_alaw(raw)
        pcm = _to_mono(pcm, layout.channels)
    if pcm.size == 0:
        raise AudioError(f"{p}: the recording contains no audio samples")
    samples = resample(pcm, layout.rate, target_rate)
    return DecodedAudio(
        samples=samples,
        rate=target_rate,
        source_rate=layout.rate,
        codec=layout.codec,
        duration=pcm.size / layout.rate,
        full_duration=full,
        capped=capped,
    )
