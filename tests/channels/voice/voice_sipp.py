"""sipp as the customer (UAC from the trunk address) and as staff phones (UAS) for real-PBX tests.

Scenarios are generated per call so the caller number and display name are inlined (SIP-escaped).
Each UAS writes a message trace, so a test can read the From display name the phone was shown.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from gateway import sip_scenarios as sip
from gateway.sip_scenarios import sip_text

SIPP = shutil.which("sipp") or "sipp"

#: sipp ships RFC 2833 DTMF recordings; the phone "presses" a key by replaying one into the call.
DTMF_PCAP = "/usr/share/sip-tester/dtmf_2833_{digit}.pcap"

_UAS_ANSWER_BYE = """  <pause milliseconds="{hold_ms}"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From:[$rto]
To:[$rfrom]
[routes]
Call-ID: [call_id]
CSeq: 99 BYE
Contact: <sip:[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
</scenario>
"""

_UAS_REFER = (
    """  <pause milliseconds="{hold_ms}"/>
  <send retrans="500"><![CDATA[
REFER [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From:[$rto]
To:[$rfrom]
[routes]
Call-ID: [call_id]
CSeq: 100 REFER
Contact: <sip:{extension}@[local_ip]:[local_port]>
Refer-To: <sip:{target}@127.0.0.1:15060>
Referred-By: <sip:{extension}@127.0.0.1>
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="202"/>
  <recv request="NOTIFY" next="ok1"/>
  <label id="ok1"/>
"""
    + sip.OK_TO_REQUEST
    + """  <recv request="NOTIFY" optional="true" next="ok1"/>
  <recv request="BYE"/>
"""
    + sip.OK_TO_REQUEST
    + """  <pause milliseconds="3000"/>
</scenario>
"""
)

_UAS_BUSY = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="gateway-test-busy">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <recv request="ACK"/>
</scenario>
"""


@dataclass
class Phone:
    """A staff phone played by sipp: ``mode`` is answer, ring or busy."""

    extension: str
    mode: str
    workdir: Path
    answer_after_ms: int = 300
    hold_ms: int = 2000
    transfer_to: str = ""
    press_after_ms: int = 700
    speech_wav: str = ""
    proc: asyncio.subprocess.Process | None = None

    @property
    def port(self) -> int:
        return 15000 + int(self.extension)

    @property
    def media_port(self) -> int:
        """The phone's RTP port (fixed, so a test can listen to what the phone hears)."""
        return 16000 + 4 * int(self.extension)  # sipp also binds port + 2 (video)

    def _media_args(self) -> list[str]:
        # Only the whisper phones need a known RTP port (the test listens to it); the others keep sipp's default.
        return ["-mp", str(self.media_port)] if self.mode.startswith("whisper") or self.mode == "answer_speak" else []

    @property
    def trace(self) -> Path:
        return self.workdir / f"uas-{self.extension}.msg"

    def _ok(self, answer_after_ms: int, media: str = sip.AUDIO, contact: str = "") -> str:
        return sip.PHONE_OK.format(answer_after_ms=answer_after_ms, media=media, contact=contact)

    def scenario(self) -> str:
        """The sipp scenario of this phone's mode."""
        head = sip.phone("gateway-test-uas")
        if self.mode == "answer":
            return head + self._ok(self.answer_after_ms) + sip.PHONE_ANSWERS.format(in_call="")
        if self.mode == "answer_bye":
            return (
                head
                + self._ok(self.answer_after_ms)
                + sip.PHONE_TAKES_ACK
                + _UAS_ANSWER_BYE.format(hold_ms=self.hold_ms)
            )
        if self.mode == "refer":
            refer = _UAS_REFER.format(hold_ms=self.hold_ms, target=self.transfer_to, extension=self.extension)
            return head + self._ok(self.answer_after_ms, contact=f"{self.extension}@") + sip.PHONE_TAKES_ACK + refer
        if self.mode == "answer_speak":
            # Answers, then speaks ``speech_wav`` (8 kHz mu-law) into the call, and waits for the caller's BYE.
            speak = sip.rtp_stream(self.speech_wav)
            return head + self._ok(self.answer_after_ms, sip.AUDIO_DTMF) + sip.PHONE_ANSWERS.format(in_call=speak)
        if self.mode in ("whisper", "whisper_press2"):
            keypress = ""
            if self.mode == "whisper_press2":
                pcap = DTMF_PCAP.format(digit=2)
                keypress = (
                    f'  <pause milliseconds="{self.press_after_ms}"/>\n'
                    f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'
                )
            # A person picks up after a ring or two; the whisper is made while the phone rings.
            answer_ms = max(self.answer_after_ms, 1500)
            return head + self._ok(answer_ms, sip.AUDIO_DTMF) + sip.PHONE_ANSWERS.format(in_call=keypress)
        if self.mode == "ring":
            return head + sip.PHONE_RINGS
        return _UAS_BUSY

    async def start(self) -> None:
        xml = self.scenario()
        sf = self.workdir / f"uas-{self.extension}.xml"
        sf.write_text(xml)
        self.proc = await asyncio.create_subprocess_exec(
            SIPP, "-sf", str(sf), "-i", "127.0.0.1", "-p", str(self.port), *self._media_args(), "-nostdin",
            "-trace_msg", "-message_file", str(self.trace), "-timeout_error",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()

    def display_names(self) -> list[str]:
        """The From display name of every INVITE this phone received."""
        if not self.trace.exists():
            return []
        text = self.trace.read_text(errors="replace")
        names = []
        for block in text.split("INVITE sip:")[1:]:
            m = re.search(r'^From:\s*"([^"]*)"', block, re.MULTILINE)
            names.append(m.group(1) if m else "")
        return names

    def invites(self) -> int:
        return len(self.display_names())

    def first_invite_at(self) -> float | None:
        """Wall-clock time of the first INVITE this phone received (from sipp's trace)."""
        if not self.trace.exists():
            return None
        lines = self.trace.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("INVITE sip:"):
                for back in range(i - 1, max(-1, i - 4), -1):
                    m = re.match(r"^-+ (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)\.(\d+)", lines[back])
                    if m:
                        t = time.mktime(time.strptime(f"{m[1]} {m[2]}", "%Y-%m-%d %H:%M:%S"))
                        return t + float("0." + m[3])
        return None


@dataclass
class CallResult:
    returncode: int
    stderr: str


async def place_call(
    workdir: Path,
    *,
    number: str,
    name: str = "",
    dial: str = "5550100",
    hold_ms: int = 2000,
    cancel_ms: int | None = None,
    answer_timeout_ms: int = 30000,
    rtp_wav: Path | None = None,
    sip_port: int = 15060,
    local_port: int = 15070,
) -> CallResult:
    """One call from the trunk address 127.0.0.2 into Asterisk; waits for it to finish."""
    who = {"name": sip_text(name), "number": sip_text(number)}
    head = sip.caller("gateway-test-uac").format(**who)
    if cancel_ms is not None:
        body = sip.CALLER_CANCELS.format(cancel_ms=cancel_ms, **who)
    else:
        rtp = sip.rtp_stream(str(rtp_wav)) if rtp_wav is not None else ""
        body = sip.CALLER_TALKS.format(hold_ms=hold_ms, answer_timeout_ms=answer_timeout_ms, rtp=rtp, **who)
    sf = workdir / f"uac-{local_port}.xml"
    sf.write_text(head + body)
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(sf), "-s", dial, f"127.0.0.1:{sip_port}", "-i", "127.0.0.2",
        "-mi", "127.0.0.2", "-p", str(local_port), "-m", "1", "-nostdin", "-timeout", "90s",
        "-timeout_error",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await proc.communicate()
    except asyncio.CancelledError:
        # Never leave a caller behind holding its port (and maybe a call) for the next test.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return CallResult(proc.returncode or 0, err.decode(errors="replace")[-2000:])
