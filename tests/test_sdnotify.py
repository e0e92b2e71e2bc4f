"""The systemd notifications, observed on a real Unix datagram socket as systemd would receive them.

A real ``gateway run`` process says READY=1, pings WATCHDOG=1 every half WatchdogSec and says STOPPING=1 on SIGTERM;
in-process, a stalled event loop stops the pings (which is what lets systemd restart a hung daemon).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import sdnotify

ROOT = Path(__file__).resolve().parents[1]


class Listener:
    """A notify socket that records (monotonic time, message)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got.append((time.monotonic(), data.decode()))

    def messages(self) -> list[str]:
        return [m for _, m in self.got]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(tmp_path / "notify.sock")
    try:
        yield lst
    finally:
        lst.close()


def config_text(tmp_path: Path) -> str:
    return (
        f'[gateway]\ndata_dir = "{tmp_path / "data"}"\nshutdown_timeout = 5.0\n'
        "[voice]\nenabled = false\n[transcribe]\nenabled = false\n[web]\nport = 0\n"
    )


def wait_until(test: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not test():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_daemon_says_ready_pings_the_watchdog_and_says_stopping(tmp_path: Path, listener: Listener) -> None:
    conf = tmp_path / "gateway.toml"
    conf.write_text(config_text(tmp_path))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "400000",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--config", str(conf), "run"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: "READY=1" in listener.messages(), 30)
        wait_until(lambda: listener.messages().count("WATCHDOG=1") >= 5, 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    wait_until(lambda: "STOPPING=1" in listener.messages(), 5)
    messages = listener.messages()
    assert messages.index("READY=1") < messages.index("WATCHDOG=1") < messages.index("STOPPING=1")
    pings = [t for t, m in listener.got if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 0.4, gaps  # every half period (0.2 s), never a whole WatchdogSec apart
    assert proc.returncode == 0


async def test_a_stalled_event_loop_stops_the_pings(
    tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon's own pinger (the task App.run starts), on this test's event loop.
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    pinger = asyncio.create_task(sdnotify.watchdog(0.1))
    try:
        deadline = time.monotonic() + 10
        while listener.messages().count("WATCHDOG=1") < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        stalled_at = time.monotonic()
        time.sleep(1.0)
        resumed_at = time.monotonic()
        await asyncio.sleep(0.5)
    finally:
        await sdnotify.stop_task(pinger)
    during = [t for t, m in listener.got if m == "WATCHDOG=1" and stalled_at + 0.05 < t < resumed_at]
    after = [t for t, m in listener.got if m == "WATCHDOG=1" and t > resumed_at]
    assert during == []  # systemd would see WatchdogSec pass without a ping and restart the daemon
    assert len(after) >= 3  # and a loop that recovers pings again


def test_notify_without_systemd_and_watchdog_for_another_pid() -> None:
    assert sdnotify.notify("READY=1", {}) is False
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({}) is None
