"""Record real AMI sessions from the local test Asterisk into tests/channels/voice/transcripts/.

Run by hand with the test PBX up (asterisk-config/local-asterisk.sh start, tests/realpbx/test.env):

    .venv/bin/python tests/channels/voice/record_transcripts.py

Each scenario places one real sipp call; every AMI packet seen meanwhile is written in wire format,
with a ``Timestamp`` field holding its arrival time (what ``timestampevents=yes`` would give), and
the outcome the scenario was built to produce goes into a ``.expected`` sidecar.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from voice_sipp import Phone, place_call  # noqa: E402

from gateway.channels.voice.agi_server import AgiServer, InboundRouter  # noqa: E402
from gateway.channels.voice.settings import VoiceSettings  # noqa: E402
from gateway.domain.models import ContactView, ConversationSummary, IdentityKind  # noqa: E402
from gateway.protocols.ami import AmiEvent, AmiParser, AmiResponse  # noqa: E402


def settings() -> dict[str, str]:
    out = subprocess.run(
        ["/bin/bash", str(ROOT / "asterisk-config/local-asterisk.sh"), "env"],
        env={"GATEWAY_ASTERISK_ENV": str(ROOT / "tests/realpbx/test.env"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)


class Recorder:
    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.on = False

    async def run(self, port: int, user: str, secret: str) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\n\r\n".encode())
        parser = AmiParser()
        while True:
            data = await r.read(65536)
            if not data:
                return
            now = time.time()
            for pkt in parser.feed(data):
                if isinstance(pkt, AmiResponse):
                    continue
                if self.on and isinstance(pkt, AmiEvent):
                    fields = {"Event": pkt.name, "Timestamp": f"{now:.6f}"}
                    fields.update({k: v for k, v in pkt.fields.items() if k != "Event"})
                    self.packets.append("".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n")


class Known:
    """One known caller, so the FastAGI lookup sets a real label and sticky extension."""

    def __init__(self) -> None:
        self._s = ConversationSummary(
            1, 1, "Maria Rodriguez", "open", "roof estimate", None, False, None, None, {},
            "+15551239999", {}, None, "203", None,
        )  # fmt: skip

    async def find_contact(self, kind: IdentityKind, raw_value: str) -> ContactView | None:
        return ContactView(1, "Maria Rodriguez", 1, ()) if raw_value == "+15551239999" else None

    async def summary(self, conversation_id: int) -> ConversationSummary | None:
        return self._s


def _tone(work: Path) -> Path:
    work.mkdir(exist_ok=True)
    wav = work / "tone.wav"
    sox = ["/usr/bin/sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", str(wav)]
    subprocess.run([*sox, "synth", "3", "sine", "440"], check=True)
    return wav


async def main() -> None:
    env = settings()
    rec = Recorder()
    task = asyncio.create_task(rec.run(int(env["AMI_PORT"]), env["AMI_USER"], env["AMI_SECRET"]))
    host, _, port = env["AGI_ADDR"].partition(":")
    router = InboundRouter(Known(), VoiceSettings())  # type: ignore[arg-type]
    agi = AgiServer({"inbound": router}, host=host, port=int(port))
    await agi.start()
    work = Path("/tmp/gateway-record")
    wav = await asyncio.to_thread(_tone, work)

    async def scenario(name: str, expected: str, modes: dict[str, str], call: Callable[[], Awaitable[object]]) -> None:
        phones = [Phone(ext, mode, work, hold_ms=1000, transfer_to="203") for ext, mode in modes.items()]
        for p in phones:
            await p.start()
        await asyncio.sleep(0.5)
        rec.packets.clear()
        rec.on = True
        await call()
        await asyncio.sleep(1.5)
        rec.on = False
        for p in phones:
            await p.stop()
        data = b"Asterisk Call Manager/11.0.0\r\n" + b"".join(rec.packets)
        (HERE / "transcripts" / f"{name}.ami").write_bytes(data)
        (HERE / "transcripts" / f"{name}.expected").write_text(expected + "\n")
        print(f"{name}: {len(rec.packets)} events")

    await scenario(
        "ring_group_answered_by_202", "answered",
        {"201": "ring", "202": "answer", "203": "ring"},
        lambda: place_call(work, number="+15551230001", name="New Caller", hold_ms=2000),
    )  # fmt: skip
    await scenario(
        "missed_nobody_answers", "missed",
        {"201": "ring", "202": "ring", "203": "ring"},
        lambda: place_call(work, number="+15551230002", hold_ms=300),
    )  # fmt: skip
    await scenario(
        "abandoned_early_hangup", "abandoned",
        {"201": "ring", "202": "ring", "203": "ring"},
        lambda: place_call(work, number="+15551230003", cancel_ms=1500),
    )  # fmt: skip
    await scenario(
        "all_busy_voicemail", "voicemail",
        {"201": "busy", "202": "busy", "203": "busy"},
        lambda: place_call(work, number="+15551230004", hold_ms=4500, rtp_wav=wav),
    )  # fmt: skip
    await scenario(
        "known_caller_sticky_203", "answered",
        {"201": "ring", "202": "ring", "203": "answer"},
        lambda: place_call(work, number="+15551239999", name="Maria", hold_ms=1500),
    )  # fmt: skip
    # 201 answers and transfers the caller to 203 with a SIP REFER; only 201 and 202 ring first.
    router._settings = VoiceSettings(staff_group="PJSIP/201&PJSIP/202")
    await scenario(
        "blind_transfer_201_to_203", "answered",
        {"201": "refer", "202": "ring", "203": "answer"},
        lambda: place_call(work, number="+15551230099", hold_ms=7000),
    )  # fmt: skip
    await agi.stop()
    task.cancel()


async def locked_main() -> None:
    """Hold the test harness's call lock: the phones and the FastAGI port are shared."""
    from tests.realpbx import harness  # noqa: PLC0415 - only needed when recording

    with harness.pbx_call_lock():
        await harness.wait_pbx_quiet(harness.load_settings())
        await main()


if __name__ == "__main__":
    asyncio.run(locked_main())
