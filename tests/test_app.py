"""The supervisor: start order, reverse stop within the budget, nothing left behind."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from gateway import config as cfgmod
from gateway.app import App


def make_config(tmp_path: Path, extra: str = "") -> cfgmod.Config:
    return cfgmod.parse(
        f'[gateway]\ndata_dir = "{tmp_path}"\nshutdown_timeout = 2.0\n'
        "[voice]\nenabled = false\n[transcribe]\nenabled = false\n[web]\nport = 0\n" + extra,
        "test.toml",
    )


class Recorder:
    def __init__(self, name: str, log: list[str], *, hang: bool = False) -> None:
        self.name, self.log, self.hang = name, log, hang

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.hang:
            await asyncio.sleep(3600)


async def test_parts_start_in_order_and_stop_in_reverse(tmp_path: Path) -> None:
    app = App(make_config(tmp_path))
    await app.start()
    names = [name for name, _ in app._started]
    assert names == ["store", "bus", "backups", "spine", "continuity", "promises", "web"]
    status = await app.status_sources()["backup"]()
    # The scheduled backup made at start may or may not have finished by now.
    assert status["last_backup"] is None or status["last_backup"].startswith("gateway-auto-")
    assert status["writer"]["batches"] >= 0
    await app.stop()
    assert app._started == []


async def test_a_part_that_hangs_on_stop_is_abandoned_within_the_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(make_config(tmp_path))
    log: list[str] = []
    await app.start()
    app._started.append(("first", Recorder("first", log)))
    app._started.append(("stuck", Recorder("stuck", log, hang=True)))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with caplog.at_level(logging.ERROR):
        await app.stop()
    assert loop.time() - t0 < 4
    assert log == ["stop stuck", "stop first"]
    assert any("did not stop" in r.getMessage() for r in caplog.records)


async def test_leftover_tasks_are_cancelled_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = App(make_config(tmp_path))
    await app.start()
    orphan = asyncio.create_task(asyncio.sleep(3600), name="orphan-task")
    with caplog.at_level(logging.WARNING):
        await app.stop()
    assert orphan.cancelled()
    assert any("orphan-task" in r.getMessage() for r in caplog.records)


async def test_failed_start_stops_what_was_started(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        app = App(make_config(tmp_path).__class__(**{**make_config(tmp_path).__dict__, "web": _web(port)}))
        with pytest.raises(Exception):  # noqa: B017 - whatever the web layer raises for a busy port
            await app.start()
        # The store was started before the web part failed; it was stopped again (its writer is gone).
        assert app._started == []
        assert app.store._task is None


def _web(port: int) -> object:
    return cfgmod.parse(f"[web]\nport = {port}\n", "t.toml").web


def test_live_transcription_is_off_with_a_clear_line_until_the_ari_password_is_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = cfgmod.parse(
        f'[gateway]\ndata_dir = "{tmp_path}"\n[voice]\nenabled = true\n[transcribe]\nenabled = true\n', "t.toml"
    )
    parts: list[tuple[str, object]] = []
    with caplog.at_level(logging.INFO, logger="gateway.app"):
        assert App(cfg)._build_live_speech(parts) is None  # type: ignore[arg-type]
    assert parts == []
    assert "live call transcription is off: set voice.ari_password" in caplog.text
    with_password = cfgmod.parse(
        f'[gateway]\ndata_dir = "{tmp_path}"\n[voice]\nari_password = "x"\n[transcribe]\nenabled = true\n', "t.toml"
    )
    assert App(with_password)._build_live_speech(parts) is not None  # type: ignore[arg-type]
    assert [name for name, _ in parts] == ["live-speech"]


async def test_objects_loaded_at_start_are_out_of_the_collectors_full_scans(tmp_path: Path) -> None:
    """A full collection over everything loaded at start stalled the event loop for 40-210 ms: frozen instead."""
    import gc  # noqa: PLC0415

    gc.unfreeze()
    app = App(make_config(tmp_path))
    await app.start()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # modules, libphonenumber's metadata, the config...
        # A full collection now scans only what was made since (what get_objects lists), a small part.
        gc.collect()
        assert len(gc.get_objects()) < frozen / 2
    finally:
        await app.stop()
        gc.unfreeze()
