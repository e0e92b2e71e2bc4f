"""Real test recordings made with espeak-ng and sox, in the formats Asterisk writes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest


def need(tool: str) -> str:
    """Path of a required program; a clear failure (with the fix) when it is missing."""
    exe = shutil.which(tool)
    if exe is None:
        pytest.fail(f"{tool} is required by the transcription tests: apt-get install -y espeak-ng sox")
    return exe


def sox(*args: str | Path) -> None:
    """Run sox, failing the test with its message if it fails."""
    proc = subprocess.run([need("sox"), "-V1", *map(str, args)], capture_output=True, check=False)
    if proc.returncode:
        pytest.fail(f"sox {args}: {proc.stderr.decode(errors='replace')}")


def speech(text: str, out: Path, *, voice: str = "ko") -> Path:
    """Korean (or other) speech from espeak-ng as 8 kHz 16-bit mono telephone audio (Asterisk's
    ``wav``)."""
    raw = out.with_suffix(".espeak.wav")
    proc = subprocess.run([need("espeak-ng"), "-v", voice, "-w", str(raw), text], capture_output=True, check=False)
    if proc.returncode:
        pytest.fail(f"espeak-ng failed: {proc.stderr.decode(errors='replace')}")
    # 8 kHz like Asterisk's recording of a call; half a second of silence either side like a real
    # message.
    sox(raw, "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", out, "pad", "0.5", "0.5")
    raw.unlink()
    return out


def tone(out: Path, *, seconds: float = 2.0, rate: int = 8000) -> Path:
    """A 16-bit PCM WAV with a sweep, good for comparing decoders sample by sample."""
    sox(
        "-n",
        "-r",
        str(rate),
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
        out,
        "synth",
        str(seconds),
        "sine",
        "200-3000",
        "vol",
        "0.7",
    )
    return out


def convert(src: Path, out: Path, *fmt: str) -> Path:
    """Convert with sox to one of Asterisk's formats (``fmt`` are sox output options)."""
    sox(src, *fmt, out)
    return out


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float = 60.0, what: str = "condition") -> None:
    """Poll an async predicate until it holds."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
