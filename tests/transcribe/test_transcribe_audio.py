"""Decoding voicemail files as Asterisk writes them, and rejecting broken ones with a clear
reason."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from transcribe_media import convert, need, sox, speech, tone

from gateway.errors import PermanentError
from gateway.transcribe.audio import AudioError, load_audio, probe_audio, resample


def sox_decode(path: Path, *in_opts: str) -> np.ndarray:
    """What sox itself decodes from ``path``: the reference our decoder must match."""
    out = subprocess.run(
        [
            need("sox"),
            "-V1",
            *in_opts,
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
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out, dtype="<i2")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return tone(tmp_path / "sweep.wav")


def test_pcm16_8k_is_read_exactly_and_resampled_to_16k(sweep: Path) -> None:
    audio = load_audio(sweep, target_rate=8000)
    assert audio.codec == "pcm16"
    assert audio.source_rate == 8000
    np.testing.assert_array_equal(audio.samples, sox_decode(sweep))
    up = load_audio(sweep, target_rate=16000)
    assert up.rate == 16000
    assert abs(up.samples.size - 2 * audio.samples.size) <= 2
    assert up.duration == pytest.approx(2.0, abs=0.01)
    assert not up.capped


@pytest.mark.parametrize(
    ("name", "opts", "codec"),
    [
        ("mulaw.wav", ("-e", "u-law"), "mulaw"),
        ("alaw.wav", ("-e", "a-law"), "alaw"),
        ("msg.ulaw", ("-t", "ul"), "mulaw"),
        ("msg.alaw", ("-t", "al"), "alaw"),
        ("msg.sln", ("-t", "raw", "-e", "signed-integer", "-b", "16"), "pcm16"),
    ],
)
def test_g711_and_raw_formats_match_sox_sample_for_sample(
    sweep: Path, tmp_path: Path, name: str, opts: tuple[str, ...], codec: str
) -> None:
    coded = convert(sweep, tmp_path / name, *opts)
    audio = load_audio(coded, target_rate=8000)
    assert audio.codec == codec
    in_opts: tuple[str, ...] = ()
    if name.endswith(".ulaw"):
        in_opts = ("-t", "ul", "-r", "8000", "-c", "1")
    elif name.endswith(".alaw"):
        in_opts = ("-t", "al", "-r", "8000", "-c", "1")
    elif name.endswith(".sln"):
        in_opts = ("-t", "raw", "-e", "signed-integer", "-b", "16", "-r", "8000", "-c", "1")
    np.testing.assert_array_equal(audio.samples, sox_decode(coded, *in_opts))
    # And it is still the sweep: G.711 error is small relative to the signal.
    ref = sox_decode(sweep).astype(np.float64)
    err = audio.samples.astype(np.float64) - ref
    assert np.sqrt(np.mean(err**2)) < 0.05 * np.sqrt(np.mean(ref**2))


@pytest.mark.parametrize(
    ("name", "opts"),
    [("msg.WAV", ("-t", "wav", "-e", "gsm-full-rate")), ("msg.gsm", ("-t", "gsm"))],
)
def test_gsm_wav49_and_raw_gsm_decode_through_sox(tmp_path: Path, name: str, opts: tuple[str, ...]) -> None:
    said = speech("안녕하세요 예약하고 싶습니다", tmp_path / "said.wav")
    coded = convert(said, tmp_path / name, *opts)
    audio = load_audio(coded, target_rate=8000)
    ref = load_audio(said, target_rate=8000)
    assert audio.codec == "gsm"
    assert audio.source_rate == 8000
    assert audio.duration == pytest.approx(ref.duration, abs=0.05)
    # GSM is lossy: compare the loudness contour (20 ms frames) of the speech, not samples.
    n = min(audio.samples.size, ref.samples.size) // 160

    def contour(x: np.ndarray) -> np.ndarray:
        frames = x[: n * 160].astype(np.float64).reshape(n, 160)
        return np.sqrt((frames**2).mean(axis=1))

    assert np.corrcoef(contour(audio.samples), contour(ref.samples))[0, 1] > 0.9


def test_wav16_is_used_as_is(tmp_path: Path) -> None:
    """Asterisk's ``wav16`` format: a RIFF file named ``*.wav16``, recognised by its header."""
    wav16 = tone(tmp_path / "msg16.wav", rate=16000).rename(tmp_path / "msg.wav16")
    audio = load_audio(wav16, target_rate=16000)
    assert audio.source_rate == 16000
    np.testing.assert_array_equal(audio.samples, sox_decode(wav16, "-t", "wav"))


def test_stereo_is_mixed_down(sweep: Path, tmp_path: Path) -> None:
    stereo = convert(sweep, tmp_path / "stereo.wav", "-c", "2")
    audio = load_audio(stereo, target_rate=8000)
    np.testing.assert_allclose(audio.samples, sox_decode(sweep), atol=1)


def test_resample_8k_to_16k_keeps_a_tone_at_its_frequency() -> None:
    t = np.arange(8000) / 8000
    x = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    y = resample(x, 8000, 16000)
    assert y.dtype == np.int16
    assert y.size == 16000
    spectrum = np.abs(np.fft.rfft(y.astype(np.float64)))
    assert np.argmax(spectrum) == 1000  # 1 Hz bins over one second
    # Nothing above the old Nyquist frequency appears (no imaging).
    assert spectrum[4100:].max() < 0.01 * spectrum.max()
    assert resample(x, 8000, 8000) is x or np.array_equal(resample(x, 8000, 8000), x)


def test_three_hour_recording_is_capped_and_the_file_untouched(tmp_path: Path) -> None:
    seconds = 3 * 3600
    path = tmp_path / "long.wav"
    data_bytes = seconds * 8000 * 2
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    header += b"data" + struct.pack("<I", data_bytes)
    with path.open("wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + data_bytes)  # sparse: three hours of silence, no disk cost
    audio = load_audio(path, target_rate=16000, max_seconds=600)
    assert audio.capped
    assert audio.full_duration == pytest.approx(seconds)
    assert audio.duration == pytest.approx(600)
    assert audio.samples.size == 600 * 16000
    assert path.stat().st_size == len(header) + data_bytes
    assert probe_audio(path) == ("pcm16", 8000, pytest.approx(seconds))


def test_header_without_final_sizes_still_yields_the_audio(sweep: Path, tmp_path: Path) -> None:
    """A recorder killed before it wrote the sizes leaves 0 there; the audio is still usable."""
    raw = bytearray(sweep.read_bytes())
    data_at = raw.index(b"data")
    raw[data_at + 4 : data_at + 8] = b"\0\0\0\0"
    raw[4:8] = b"\0\0\0\0"
    path = tmp_path / "unfinished.wav"
    path.write_bytes(bytes(raw))
    assert load_audio(path, target_rate=8000).duration == pytest.approx(2.0, abs=0.01)


def _bad(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "mutate", "reason"),
    [
        ("empty.wav", lambda b: b"", r"empty \(0 bytes\)"),
        ("zero-length.wav", lambda b: b[:40] + b"\0\0\0\0", "zero length"),
        ("header-only.wav", lambda b: b[:44], "truncated"),
        ("truncated.wav", lambda b: b[: len(b) // 2], "truncated"),
        ("odd.wav", lambda b: b[:44] + b[44:-1], "truncated"),
        (
            "one-byte.wav",
            lambda b: b[:40] + struct.pack("<I", 1) + b"\x01",
            "less than one pcm16 frame",
        ),
        ("garbage.wav", lambda b: bytes(range(256)) * 40, "not a WAV file"),
        ("noise.bin", lambda b: b"\x00\x01" * 100, "not a known Asterisk format"),
        (
            "no-fmt.wav",
            lambda b: b[:12] + b"junk" + struct.pack("<I", 4) + b"abcd",
            "no 'fmt ' chunk",
        ),
        ("short-hdr.wav", lambda b: b[:30], "truncated"),
        ("bad-rate.wav", lambda b: b[:24] + struct.pack("<I", 0) + b[28:], "Hz"),
        (
            "bad-codec.wav",
            lambda b: b[:20] + struct.pack("<H", 0x55) + b[22:],
            "unsupported WAV codec",
        ),
    ],
)
def test_broken_files_raise_audio_error_with_the_reason(
    sweep: Path, tmp_path: Path, name: str, mutate: object, reason: str
) -> None:
    assert callable(mutate)
    path = _bad(tmp_path, name, mutate(sweep.read_bytes()))
    with pytest.raises(AudioError, match=reason) as info:
        load_audio(path)
    assert isinstance(info.value, PermanentError)
    assert path.exists()  # never deleted: staff can still download it


def test_truncated_gsm_and_missing_file(tmp_path: Path, sweep: Path) -> None:
    gsm = convert(sweep, tmp_path / "msg.gsm", "-t", "gsm")
    gsm.write_bytes(gsm.read_bytes()[:-5])
    with pytest.raises(AudioError, match="truncated"):
        load_audio(gsm)
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(tmp_path / "gone.wav")


def test_silence_only_decodes_to_silence(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    sox(
        "-D",
        "-n",
        "-r",
        "8000",
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
        path,
        "trim",
        "0",
        "2",
    )
    audio = load_audio(path)
    assert audio.duration == pytest.approx(2.0, abs=0.01)
    assert int(np.abs(audio.samples).max()) == 0
