"""Live transcription of answered calls: both sides, through ARI snoop and external media, into streaming Vosk.

Theory of operation
-------------------
When a call is answered, :class:`LiveCalls` asks Asterisk (ARI, loopback) for two snoop channels on the caller's
channel: ``spy=in`` hears what the caller says, ``spy=out`` what the caller hears (the staff member). Each snoop
is bridged with an ``externalMedia`` channel that sends the audio as RTP, 16 kHz signed linear (``slin16``,
network byte order), to a UDP socket of ours on loopback; each datagram's payload is byte-swapped and fed to its
own streaming recogniser in the transcription worker process, so partial words reach the staff member's
screen-pop as they are recognised (:class:`~gateway.domain.events.LiveTranscript` on the bus). When the call
ends, the streams are flushed and the utterances of both sides, ordered by time and labelled caller/staff, become
one ``transcript`` entry on the conversation's timeline, searchable like any other and read by the spine.

Nothing here may hold a call up: every ARI request has a timeout, a failure is logged once and the call goes on
untouched (without live text). The audio never leaves the box: Asterisk sends it to 127.0.0.1 only.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.channels.voice.ari import AriClient, AriError
from gateway.domain.calls import CallDirection, CallRecord
from gateway.domain.events import LiveTranscript
from gateway.domain.models import Channel, EventKind

log = logging.getLogger(__name__)


class UtteranceLike(Protocol):
    """One finished utterance (see gateway.transcribe.live.Utterance)."""

    @property
    def text(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def confidence(self) -> float | None: ...


class SpeechStream(Protocol):
    """One direction of a call being recognised."""

    @property
    def opened_at(self) -> float: ...
    def feed(self, pcm: bytes) -> None: ...
    async def close(self, limit_s: float = 10.0) -> Sequence[UtteranceLike]: ...


class SpeechPort(Protocol):
    """The streaming recogniser (gateway.transcribe.live.LiveSpeech fits it)."""

    async def open(self, on_partial: Callable[[str], None], *, rate: int = 16000) -> SpeechStream: ...


class TimelinePort(Protocol):
    """What live transcription needs from the conversation service."""

    async def append_event(
        self,
        conversation_id: int,
        kind: EventKind | str,
        channel: Channel | str,
        body: str = "",
        meta: Any = None,
        external_id: str | None = None,
        author: str | None = None,
        occurred_at: float | None = None,
    ) -> int: ...


class _RtpToStream(asyncio.DatagramProtocol):
    """RTP with L16 payload (big-endian) in, little-endian PCM out to the recogniser."""

    def __init__(self, stream: SpeechStream) -> None:
        self.stream = stream
        self.packets = 0
        self.first_at: float | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        offset = 12 + (data[0] & 0x0F) * 4
        if data[0] & 0x10 and len(data) >= offset + 4:  # header extension
            offset += 4 + int.from_bytes(data[offset + 2 : offset + 4], "big") * 4
        payload = data[offset:]
        if len(payload) < 2:
            return
        samples = array.array("h", payload[: len(payload) // 2 * 2])
        if sys.byteorder == "little":
            samples.byteswap()
        if self.first_at is None:
            self.first_at = time.time()
        self.packets += 1
        self.stream.feed(samples.tobytes())


@dataclass
class _Side:
    name: str
    stream: SpeechStream
    transport: asyncio.DatagramTransport
    protocol: _RtpToStream
    channels: list[str] = field(default_factory=list)
    bridge: str | None = None


@dataclass
class _LiveCall:
    call_id: str
    conversation_id: int | None
    extension: str | None
    started_at: float
    sides: list[_Side] = field(default_factory=list)


class LiveCalls:
    """Starts and ends live transcription per answered call (owned by the voice channel)."""

    def __init__(
        self,
        ari: AriClient,
        speech: SpeechPort,
        timeline: TimelinePort,
        publish: Callable[[object], None],
        *,
        rtp_host: str = "127.0.0.1",
    ) -> None:
        self.ari = ari
        self.speech = speech
        self.timeline = timeline
        self.publish = publish
        self.rtp_host = rtp_host
        self._calls: dict[str, _LiveCall] = {}
        self.started = 0
        self.failed = 0
        self.transcripts = 0
        self.last_error: str | None = None

    @property
    def active(self) -> int:
        """Calls being transcribed now."""
        return len(self._calls)

    async def start(self, rec: CallRecord, extension: str | None, conversation_id: int | None) -> bool:
        """Begin transcribing an answered call; False (and the call untouched) if ARI or the recogniser fails."""
        if rec.call_id in self._calls:
            return True
        call = _LiveCall(rec.call_id, conversation_id, extension, time.time())
        self._calls[rec.call_id] = call
        # The tracked channel is the caller's for inbound calls and the staff phone's for click-to-call.
        inbound = rec.direction is CallDirection.INBOUND
        plan = (("caller", "in"), ("staff", "out")) if inbound else (("staff", "in"), ("caller", "out"))
        try:
            for name, spy in plan:
                call.sides.append(await self._open_side(call, name, spy, rec.call_id))
        except (AriError, OSError, RuntimeError, KeyError) as err:
            self.failed += 1
            message = f"{type(err).__name__}: {err}"
            if message != self.last_error:
                log.warning(
                    "call %s: live transcription unavailable, the call goes on without it (%s)", rec.call_id, err
                )
            self.last_error = message
            await self._teardown(call)
            self._calls.pop(rec.call_id, None)
            return False
        self.started += 1
        log.info("call %s: live transcription started", rec.call_id)
        return True

    async def _open_side(self, call: _LiveCall, name: str, spy: str, channel_id: str) -> _Side:
        loop = asyncio.get_running_loop()

        def partial(text: str) -> None:
            self.publish(LiveTranscript(call.call_id, call.conversation_id, call.extension, name, text))

        stream = await self.speech.open(partial)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _RtpToStream(stream), local_addr=(self.rtp_host, 0)
        )
        side = _Side(name, stream, transport, protocol)
        port = transport.get_extra_info("sockname")[1]
        snoop = await self.ari.snoop(channel_id, spy)
        side.channels.append(snoop)
        media = await self.ari.external_media(f"{self.rtp_host}:{port}", "slin16")
        side.channels.append(media)
        side.bridge = await self.ari.bridge()
        await self.ari.add_to_bridge(side.bridge, snoop, media)
        return side

    async def finish(self, rec: CallRecord) -> int | None:
        """End transcription of a call; put the transcript on the timeline. Returns the event id, if any."""
        call = self._calls.pop(rec.call_id, None)
        if call is None:
            return None
        turns: list[dict[str, Any]] = []
        for side in call.sides:
            for u in await side.stream.close():
                at = side.stream.opened_at + u.start
                turns.append({"side": side.name, "text": u.text, "at": round(at, 2), "confidence": u.confidence})
        await self._teardown(call)
        turns.sort(key=lambda t: t["at"])
        conversation = call.conversation_id if call.conversation_id is not None else rec.conversation_id
        if not turns or conversation is None:
            return None
        body = "\n".join(f"{'Caller' if t['side'] == 'caller' else 'Staff'}: {t['text']}" for t in turns)
        meta = {"live": True, "call_id": rec.call_id, "extension": call.extension, "turns": turns}
        event_id = await self.timeline.append_event(
            conversation, EventKind.TRANSCRIPT, Channel.VOICE, body, meta, external_id=f"live:{rec.call_id}"
        )
        self.transcripts += 1
        return event_id

    async def _teardown(self, call: _LiveCall) -> None:
        for side in call.sides:
            side.transport.close()
            for ch in side.channels:
                await self.ari.hangup(ch)
            if side.bridge is not None:
                await self.ari.destroy_bridge(side.bridge)

    async def stop(self) -> None:
        """Close what is still open (shutdown): streams flushed, ARI channels hung up."""
        for call_id in list(self._calls):
            call = self._calls.pop(call_id)
            for side in call.sides:
                with contextlib.suppress(Exception):
                    await side.stream.close(limit_s=2.0)
            await self._teardown(call)
