"""sipp scenarios: a caller from the trunk (UAC) and staff phones (UAS), for ``gateway demo`` and the real-PBX tests.

Theory of operation: a scenario is made of pieces, each an XML template whose ``{placeholders}`` are filled with
:meth:`str.format` (the ``[bracketed]`` keywords are sipp's own, filled per message by sipp). A caller is
:func:`caller` (the INVITE) followed by :data:`CALLER_CANCELS` or :data:`CALLER_TALKS`; a phone is :func:`phone`
(INVITE received, 180 Ringing sent) followed by :data:`PHONE_RINGS` or :data:`PHONE_ANSWERS`. Values that go inside
a SIP quoted string (the caller's name and number) pass through :func:`sip_text`.
"""

from __future__ import annotations

_XML = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'

_INVITE = """<scenario name="{scenario}">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "{{name}}" <sip:{{number}}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{{number}}@[local_ip]:[local_port]>
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

#: The caller hangs up while it rings: after ``{cancel_ms}`` of ringing it sends CANCEL (fills ``{name}``,
#: ``{number}``).
CALLER_CANCELS = """  <recv response="180"/>
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

#: The call is answered within ``{answer_timeout_ms}``: the caller does ``{rtp}`` (e.g. :func:`rtp_stream`, or
#: nothing), stays ``{hold_ms}``, then hangs up (fills ``{name}``, ``{number}``).
CALLER_TALKS = """  <recv response="180" optional="true"/>
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

_PHONE = """<scenario name="{scenario}">
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

#: The phone rings until the caller gives up (CANCEL answered 200, the INVITE 487).
PHONE_RINGS = """  <recv request="CANCEL"/>
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

#: The 200 OK a phone answers with after ``{answer_after_ms}``; ``{contact}`` is the user part of its Contact ("" or
#: "201@"), ``{media}`` the SDP media lines (:data:`AUDIO` or :data:`AUDIO_DTMF`).
PHONE_OK = """  <pause milliseconds="{answer_after_ms}"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{contact}[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
{media}
]]></send>
"""

#: PCMU only.
AUDIO = "m=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000"
#: PCMU plus RFC 2833 key presses.
AUDIO_DTMF = (
    "m=audio [media_port] RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16"
)

#: The 200 OK a phone sends to a request inside the call (BYE, NOTIFY).
OK_TO_REQUEST = """  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
"""

#: After its 200 OK the phone takes the ACK, does ``{in_call}`` (a key press, speech, or nothing) and waits for the
#: caller's BYE.
PHONE_ANSWERS = (
    """  <recv request="ACK" crlf="true"/>
{in_call}  <recv request="BYE"/>
"""
    + OK_TO_REQUEST
    + "</scenario>\n"
)

#: After its 200 OK the phone takes the ACK and remembers the dialog's From and To, to send a request of its own.
PHONE_TAKES_ACK = """  <recv request="ACK" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="rfrom"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="rto"/>
    </action>
  </recv>
"""


def caller(scenario: str) -> str:
    """The INVITE of a caller scenario named ``scenario`` (leaves ``{name}`` and ``{number}`` to fill)."""
    return _XML + _INVITE.format(scenario=scenario)


def phone(scenario: str) -> str:
    """The start of a phone scenario named ``scenario``: the INVITE taken, 180 Ringing sent."""
    return _XML + _PHONE.format(scenario=scenario)


def rtp_stream(wav: str) -> str:
    """The scenario line that plays ``wav`` (8 kHz mu-law or PCM) into the call as RTP."""
    return f'  <nop><action><exec rtp_stream="{wav},1,0"/></action></nop>\n'


def sip_text(value: str) -> str:
    """A value for a SIP quoted-string inside CDATA: backslash-escape quotes (RFC 3261 25.1)."""
    return value.replace("]]>", "").replace("\\", "\\\\").replace('"', '\\"')
