"""``gateway demo``: one customer's day, played against the running gateway with real parts.

Theory of operation: run from a second terminal while ``gateway up`` (``./install.sh run``) serves. The demo is the
customer, nothing more: it chats in the website widget over the real websocket at /chat/ws, asks to continue by
text, answers by SMS through the emulated modem's control socket (the modem then hands the text to the gateway over
the AT interface, as a real modem would), calls the office's Asterisk with sipp from the trunk address and hangs up
while it rings, waits for the missed-call text-back the continuity rules decide on, and calls again to leave a spoken
voicemail (espeak-ng speech sent as RTP). It never writes to the database: it follows the one conversation through a
read-only connection and prints what to look at in the console as it goes. Every step has a deadline; a step that
cannot happen (no Asterisk, no text-back rule) is said plainly and skipped, never faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aiohttp

from gateway import config as config_mod
from gateway import sip_scenarios as sip
from gateway.domain.models import TimelineEvent
from gateway.emulator import control
from gateway.store import readonly

#: The PBX facts ``gateway up`` leaves for the demo (trunk address, SIP port, static phone contacts).
PBX_FACTS = "demo-pbx.json"
TRUNK_IP = "127.0.0.2"
MISSED_CALL_RULE = "missed_call"
VOICEMAIL_WORDS = "안녕하세요 내일 예약하고 싶습니다. 예약 부탁드립니다"


class DemoError(Exception):
    """A step of the demo could not happen; the message says why and what to check."""


@dataclass
class Demo:
    """The customer and what the demo has seen so far."""

    cfg: config_mod.Config
    out: TextIO
    phone: str = field(default_factory=lambda: f"+1202555{random.randint(100, 199):04d}")  # noqa: S311 - a demo number
    conversation: int | None = None
    started: float = field(default_factory=time.monotonic)
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gateway-demo-")))

    @property
    def base(self) -> str:
        """The gateway's web address."""
        return f"http://{self.cfg.web.host}:{self.cfg.web.port}"

    def say(self, text: str) -> None:
        """One line, with the seconds since the demo started."""
        self.out.write(f"[{time.monotonic() - self.started:5.1f} s] {text}\n")
        self.out.flush()

    def look(self, text: str) -> None:
        """What to look at in the console now."""
        self.out.write(f"          look: {text}\n")
        self.out.flush()

    def events(self) -> list[TimelineEvent]:
        """The demo conversation's timeline (read-only)."""
        if self.conversation is None:
            self.conversation = readonly.conversation_of_phone(self.cfg.db_path, self.phone)
        if self.conversation is None:
            return []
        # After a merge the conversation id may move: follow the phone number every time.
        self.conversation = readonly.conversation_of_phone(self.cfg.db_path, self.phone) or self.conversation
        return readonly.timeline(self.cfg.db_path, self.conversation)

    async def wait_for(self, what: str, test: Callable[[TimelineEvent], bool], timeout: float) -> TimelineEvent:  # noqa: ASYNC109 - each step has its own deadline
        """Poll the timeline until an event passes ``test``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in await asyncio.to_thread(self.events):
                if test(event):
                    return event
            await asyncio.sleep(0.5)
        raise DemoError(f"{what} did not show up within {timeout:.0f} s")


async def _chat(demo: Demo) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(demo.base + "/chat/ws", headers={"Origin": demo.base}) as ws,
    ):
        await ws.send_json({"type": "hello"})
        welcome = await ws.receive_json(timeout=10)
        if welcome.get("type") != "welcome":
            raise DemoError(f"the chat widget's socket answered {welcome!r}")
        closed = "the office is closed now" if welcome.get("after_hours") else "the office is open now"
        demo.say(f"chat: a visitor opens the widget on the website ({closed})")
        body = "Hi, my kitchen sink is leaking under the window. Can someone come and look at it tomorrow?"
        await ws.send_json({"type": "message", "client_id": uuid.uuid4().hex[:16], "body": body})
        ack = await ws.receive_json(timeout=10)
        if ack.get("type") != "ack":
            raise DemoError(f"the chat message was not accepted: {ack!r}")
        demo.say(f'chat: "{body}"')
        demo.look(f"{demo.base}/console: a new conversation appears in the inbox with the chat")
        await ws.send_json({"type": "continue_by_text", "client_id": uuid.uuid4().hex[:16], "phone": demo.phone})
        answer = await ws.receive_json(timeout=15)
        while answer.get("type") == "message":  # the visitor's own message echoed back
            answer = await ws.receive_json(timeout=15)
        if answer.get("type") != "handoff" or not answer.get("ok"):
            raise DemoError(f"'continue by text' was refused: {answer.get('message') or answer!r}")
        demo.say(f"chat: the visitor taps 'continue by text' and leaves the number {demo.phone}")


async def _sms(demo: Demo) -> None:
    ctl = Path(demo.cfg.sms.device + ".ctl")
    if not demo.cfg.sms.enabled or not await asyncio.to_thread(ctl.exists):
        demo.say(f"sms: skipped: no emulated modem control socket at {ctl} (SMS is off or the modem is real)")
        return
    # The number the visitor typed is only a claim: nothing links it to the chat until it answers. So the demo
    # watches the emulated modem for the text the gateway sends to it.
    deadline = time.monotonic() + 60
    texts: list[str] = []
    while not texts:
        if time.monotonic() > deadline:
            raise DemoError("the gateway sent no text to the number the visitor typed within 60 s")
        await asyncio.sleep(0.5)
        snap = await asyncio.to_thread(control.call, ctl, "snapshot")
        texts = [str(m.get("text", "")) for m in snap.get("sent", []) if m.get("recipient") == demo.phone]
    demo.say(f'sms: the gateway texts the number through the emulated modem: "{texts[0]}"')
    reply = "Yes, tomorrow morning works. It is the pipe under the sink."
    await asyncio.to_thread(control.call, ctl, "deliver", sender=demo.phone, text=reply)
    await demo.wait_for("the customer's SMS reply", lambda e: e.kind == "message_in" and e.channel == "sms", 60)
    demo.say(f'sms: the customer answers by text: "{reply}"')
    await demo.wait_for(
        "the chat in the same conversation as the text (the answer verifies the number)",
        lambda e: e.kind == "message_in" and e.channel == "chat",
        30,
    )
    demo.look("the same conversation now shows chat and SMS together")


def _pbx_facts(demo: Demo) -> dict[str, str] | None:
    path = demo.cfg.data_dir / PBX_FACTS
    if not demo.cfg.voice.enabled or not path.exists():
        return None
    facts: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return facts


async def _sipp(demo: Demo, name: str, xml: str, pbx: dict[str, str], *, timeout: float) -> int:  # noqa: ASYNC109
    sipp = shutil.which("sipp")
    if sipp is None:
        raise DemoError("sipp is missing: ./install.sh run installs it (Debian package sip-tester)")
    scenario = demo.work / f"{name}.xml"
    scenario.write_text(xml, encoding="utf-8")
    port = 15100 + random.randint(0, 800)  # noqa: S311 - a free-ish local port
    proc = await asyncio.create_subprocess_exec(
        sipp,
        "-sf",
        str(scenario),
        "-s",
        pbx.get("DIAL", "5550100"),
        f"{pbx['SIP_BIND']}:{pbx['SIP_PORT']}",
        "-i",
        TRUNK_IP,
        "-mi",
        TRUNK_IP,
        "-p",
        str(port),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=demo.work,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout + 10)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode:
        raise DemoError(f"the sipp call failed (exit {proc.returncode}): {err.decode(errors='replace')[-300:]}")
    return proc.returncode or 0


@contextlib.asynccontextmanager
async def _ringing_phones(demo: Demo, pbx: dict[str, str]) -> AsyncIterator[None]:
    """Staff phones that ring without answering, where the PBX pins them to static contacts."""
    procs: list[asyncio.subprocess.Process] = []
    sipp = shutil.which("sipp")
    xml = demo.work / "ringing-phone.xml"
    xml.write_text(sip.phone("gateway-demo-ringing-phone") + sip.PHONE_RINGS, encoding="utf-8")
    for ext in ("201", "202", "203"):
        contact = pbx.get(f"PHONE_{ext}_CONTACT", "")
        if not contact or sipp is None:
            continue
        host, _, port = contact.rsplit("@", 1)[-1].partition(":")
        procs.append(
            await asyncio.create_subprocess_exec(
                sipp,
                "-sf",
                str(xml),
                "-i",
                host,
                "-p",
                port,
                "-nostdin",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    try:
        await asyncio.sleep(0.3 if procs else 0)
        yield
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()


async def _calls(demo: Demo) -> None:
    pbx = _pbx_facts(demo)
    if pbx is None:
        demo.say("calls: skipped: the voice channel is off (no local Asterisk); the conversation has no calls")
        return
    who = {"name": sip.sip_text("Dana Park"), "number": sip.sip_text(demo.phone)}
    async with _ringing_phones(demo, pbx):
        demo.say("call: the customer calls the office; the phones ring; nobody picks up, the customer hangs up")
        await _sipp(
            demo,
            "missed",
            sip.caller("gateway-demo-caller").format(**who) + sip.CALLER_CANCELS.format(cancel_ms=_ring_ms(pbx), **who),
            pbx,
            timeout=60,
        )
        await demo.wait_for("the missed call", lambda e: e.kind == "call_missed", 30)
        demo.say("call: the missed call is on the timeline")
        await _text_back(demo)
        wav = await asyncio.to_thread(_speech, demo.work)
        demo.say("call: the customer calls again and leaves a voicemail (spoken, through RTP)")
        seconds = _wav_seconds(wav)
        await _sipp(
            demo,
            "voicemail",
            sip.caller("gateway-demo-caller").format(**who)
            + sip.CALLER_TALKS.format(
                answer_timeout_ms=90000, rtp=sip.rtp_stream(str(wav)), hold_ms=int(seconds * 1000) + 1500, **who
            ),
            pbx,
            timeout=150,
        )
    await demo.wait_for("the voicemail", lambda e: e.kind == "voicemail", 30)
    demo.say("call: the voicemail is on the timeline; transcribing it")
    if not demo.cfg.transcribe.enabled:
        demo.say("transcript: skipped: transcription is off (no speech model)")
        return
    transcript = await demo.wait_for("the voicemail transcript", lambda e: e.kind == "transcript", 120)
    demo.say(f'transcript: "{transcript.body}"')
    demo.look("the voicemail's player and its transcript sit in the same conversation")


def _ring_ms(pbx: dict[str, str]) -> int:
    """Hang up a little before the PBX gives up ringing and sends the call to voicemail."""
    try:
        group = float(pbx.get("GROUP_RING_S") or 20)
    except ValueError:
        group = 20.0
    return int(max(3.5, min(8.0, group - 1.0)) * 1000)


async def _text_back(demo: Demo) -> None:
    rules = demo.cfg.continuity
    if not rules.enabled or not rules.missed_call_enabled:
        demo.say("text-back: the text-back rule is not available here (continuity.missed_call_enabled is off)")
        return
    wait = rules.missed_call_delay_seconds + 30
    demo.say(f"text-back: the missed-call rule decides within {rules.missed_call_delay_seconds} s")
    decision = await demo.wait_for(
        "the text-back decision",
        lambda e: e.kind == "automated" and e.meta.get("rule") == MISSED_CALL_RULE,
        wait,
    )
    verdict = decision.meta.get("decision", "?")
    if verdict == "deferred" and "after the delay" in str(decision.meta.get("reason", "")):
        demo.say(f"text-back: scheduled: {decision.meta.get('reason', '')}")
        first = decision.id
        decision = await demo.wait_for(
            "the text-back decision after the delay",
            lambda e: e.kind == "automated" and e.meta.get("rule") == MISSED_CALL_RULE and e.id > first,
            wait,
        )
        verdict = decision.meta.get("decision", "?")
    demo.say(f"text-back: {verdict}: {decision.meta.get('reason', '')}")
    if verdict == "sent":
        demo.look("the automated text is marked as such on the timeline, with the rule that sent it")


def _speech(work: Path) -> Path:
    raw, wav = work / "speech.wav", work / "speech_ulaw.wav"
    for argv in (
        [shutil.which("espeak-ng") or "espeak-ng", "-v", "ko", "-w", str(raw), VOICEMAIL_WORDS],
        [
            shutil.which("sox") or "sox",
            "-V1",
            str(raw),
            "-r",
            "8000",
            "-c",
            "1",
            "-e",
            "u-law",
            str(wav),
            "pad",
            "1.2",
            "0.5",
        ],
    ):
        done = subprocess.run(argv, capture_output=True, check=False)  # noqa: S603 - fixed tools
        if done.returncode:
            raise DemoError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')[-200:]}")
    return wav


def _wav_seconds(path: Path) -> float:
    soxi = shutil.which("soxi") or "soxi"
    done = subprocess.run([soxi, "-D", str(path)], capture_output=True, text=True, check=False)  # noqa: S603
    try:
        return float(done.stdout.strip())
    except ValueError:
        return 6.0


async def run(cfg: config_mod.Config, out: TextIO) -> int:
    """Play the customer; exit 0 when the conversation filled up, 1 when a step failed."""
    demo = Demo(cfg, out)
    demo.say(f"demo customer {demo.phone} against {demo.base}")
    try:
        await _chat(demo)
        await _sms(demo)
        await _calls(demo)
    except (DemoError, aiohttp.ClientError, OSError, TimeoutError) as err:
        demo.say(f"stopped: {err}")
        return 1
    finally:
        shutil.rmtree(demo.work, ignore_errors=True)
    kinds = sorted({e.kind for e in await asyncio.to_thread(demo.events)})
    demo.say(f"done: conversation {demo.conversation} holds {', '.join(kinds)}")
    demo.look(f"{demo.base}/console, conversation {demo.conversation}")
    return 0
