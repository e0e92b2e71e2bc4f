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

SIPP = shutil.which("sipp") or "sipp"

_UAC_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="gateway-test-uac">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "{name}" <sip:{number}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{number}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [auto_media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true"/>
"""

_UAC_ANSWERED = """  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true" timeout="{answer_timeout_ms}"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "{name}" <sip:{number}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:{number}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0
]]></send>
{rtp}  <pause milliseconds="{hold_ms}"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "{name}" <sip:{number}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:{number}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""

_UAC_CANCEL = """  <recv response="180"/>
  <pause milliseconds="{cancel_ms}"/>
  <send><![CDATA[
CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-4]
From: "{name}" <sip:{number}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 CANCEL
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
  <recv response="487"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-7]
From: "{name}" <sip:{number}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
</scenario>
"""

_UAS_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="gateway-test-uas">
  <recv request="INVITE" crlf="true" rrs="true">
    <action><ereg regexp="CSeq: ([0-9]+)" search_in="msg" assign_to="all,cseq"/></action>
  </recv>
  <Reference variables="all,cseq"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0
]]></send>
"""

_UAS_ANSWER = """  <pause milliseconds="{answer_after_ms}"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
</scenario>
"""

_UAS_WHISPER = """  <pause milliseconds="{answer_after_ms}"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
]]></send>
  <recv request="ACK" crlf="true"/>
{keypress}  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
</scenario>
"""

#: sipp ships RFC 2833 DTMF recordings; the phone "presses" a key by replaying one into the call.
DTMF_PCAP = "/usr/share/sip-tester/dtmf_2833_{digit}.pcap"

_UAS_ANSWER_BYE = """  <pause milliseconds="{answer_after_ms}"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv request="ACK" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="rfrom"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="rto"/>
    </action>
  </recv>
  <pause milliseconds="{hold_ms}"/>
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

_UAS_REFER = """  <pause milliseconds="{answer_after_ms}"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{extension}@[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv request="ACK" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="rfrom"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="rto"/>
    </action>
  </recv>
  <pause milliseconds="{hold_ms}"/>
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
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <recv request="NOTIFY" optional="true" next="ok1"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <pause milliseconds="3000"/>
</scenario>
"""

_UAS_RING = """  <recv request="CANCEL"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [$cseq] INVITE
Content-Length: 0
]]></send>
  <recv request="ACK"/>
</scenario>
"""

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


def _xml_text(value: str) -> str:
    """A value for a SIP quoted-string inside CDATA: backslash-escape quotes (RFC 3261 25.1)."""
    return value.replace("]]>", "").replace("\\", "\\\\").replace('"', '\\"')


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

    async def start(self) -> None:
        if self.mode == "answer":
            xml = _UAS_HEAD + _UAS_ANSWER.format(answer_after_ms=self.answer_after_ms)
        elif self.mode == "answer_bye":
            xml = _UAS_HEAD + _UAS_ANSWER_BYE.format(answer_after_ms=self.answer_after_ms, hold_ms=self.hold_ms)
        elif self.mode == "refer":
            xml = (_UAS_HEAD + _UAS_REFER).format(
                answer_after_ms=self.answer_after_ms,
                hold_ms=self.hold_ms,
                target=self.transfer_to,
                extension=self.extension,
            )
        elif self.mode == "answer_speak":
            # Answers, then speaks ``speech_wav`` (8 kHz mu-law) into the call, and waits for the caller's BYE.
            speak = f'  <nop><action><exec rtp_stream="{self.speech_wav},1,0"/></action></nop>\n'
            xml = _UAS_HEAD + _UAS_WHISPER.format(answer_after_ms=self.answer_after_ms, keypress=speak)
        elif self.mode in ("whisper", "whisper_press2"):
            keypress = ""
            if self.mode == "whisper_press2":
                pcap = DTMF_PCAP.format(digit=2)
                keypress = (
                    f'  <pause milliseconds="{self.press_after_ms}"/>\n'
                    f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'
                )
            # A person picks up after a ring or two; the whisper is made while the phone rings.
            answer_ms = max(self.answer_after_ms, 1500)
            xml = _UAS_HEAD + _UAS_WHISPER.format(answer_after_ms=answer_ms, keypress=keypress)
        elif self.mode == "ring":
            xml = _UAS_HEAD + _UAS_RING
        else:
            xml = _UAS_BUSY
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
    head = _UAC_HEAD.format(name=_xml_text(name), number=_xml_text(number))
    if cancel_ms is not None:
        body = _UAC_CANCEL.format(cancel_ms=cancel_ms, name=_xml_text(name), number=_xml_text(number))
    else:
        rtp = ""
        if rtp_wav is not None:
            rtp = f'  <nop><action><exec rtp_stream="{rtp_wav},1,0"/></action></nop>\n'
        body = _UAC_ANSWERED.format(
            name=_xml_text(name),
            number=_xml_text(number),
            hold_ms=hold_ms,
            answer_timeout_ms=answer_timeout_ms,
            rtp=rtp,
        )
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
