"""A small control socket for a running emulator: one JSON object per line in, one per line out.

Request: ``{"op": "deliver", "args": {"sender": "+15551234567", "text": "hi 😀"}}``.
Reply: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "what is wrong and how to fix
it"}``.
The demo and tests in other processes drive the emulator through it (see :func:`call`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any

from gateway.emulator.modem import ModemEmulator

OPS = frozenset(
    {
        "deliver",
        "deliver_pdu",
        "store_draft",
        "status_report",
        "fail_next_send",
        "fail_next_command",
        "silence_next_command",
        "hang",
        "resume",
        "garbage",
        "noise",
        "fill_sim",
        "set_capacity",
        "unplug",
        "replug",
        "ring",
        "snapshot",
    }
)
_MAX_REQUEST = 1 << 20


class ControlServer:
    """Serve :data:`OPS` of one emulator on a Unix socket."""

    def __init__(self, emulator: ModemEmulator, path: str | Path) -> None:
        self.emulator = emulator
        self.path = Path(path)
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen (replacing a stale socket file)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        emulator = self.emulator

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for raw in self.rfile:
                    if len(raw) > _MAX_REQUEST:
                        reply: dict[str, Any] = {"ok": False, "error": "request too large"}
                    else:
                        reply = dispatch(emulator, raw)
                    self.wfile.write(json.dumps(reply).encode() + b"\n")

        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="emulator-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and remove the socket file."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def dispatch(emulator: ModemEmulator, raw: bytes) -> dict[str, Any]:
    """Run one request line against ``emulator``."""
    try:
        req = json.loads(raw)
        op = req["op"]
        args = req.get("args", {})
    except (ValueError, KeyError, TypeError) as err:
        return {"ok": False, "error": f'bad request ({err}); send {{"op": "...", "args": {{...}}}}'}
    if op not in OPS:
        return {"ok": False, "error": f"unknown op {op!r}; known: {', '.join(sorted(OPS))}"}
    if not isinstance(args, dict):
        return {"ok": False, "error": "args must be an object"}
    for key in ("order", "drop", "duplicate"):
        if key in args and isinstance(args[key], list) and key != "order":
            args[key] = tuple(args[key])
    try:
        result = getattr(emulator, op)(**args)
    except (TypeError, ValueError, RuntimeError) as err:
        return {"ok": False, "error": f"{op} failed: {err}"}
    return {"ok": True, "result": result}


def call(path: str | Path, op: str, **args: Any) -> Any:
    """Send one request to a control socket and return the result (raises RuntimeError on
    failure)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise RuntimeError(reply.get("error", "emulator control failed"))
    return reply.get("result")
