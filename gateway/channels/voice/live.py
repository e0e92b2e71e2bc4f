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
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.channels.voice.ari import AriClient, AriError
from gateway.domain.calls import CallDirection, CallRecord
from gateway.domain.events import LiveTranscript
from gateway.domain.models import Channel, EventKind
from gateway.domain.ports import ConversationPort

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
    def wall_time(self, offset_s: float) -> float: ...
    async def close(self, limit_s: float = 10.0) -> Sequence[UtteranceLike]: ...


class SpeechPort(Protocol):
    """The streaming recogniser (gateway.transcribe.live.LiveSpeech fits it)."""

    async def open(self, on_partial: Callable[[str], None], *, rate: int = 16000) -> SpeechStream: ...


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
    notice_until: float = 0.0
    """While the transcription notice plays, what the caller hears is the notice, not staff: not transcribed."""


class LiveCalls:
    """Starts and ends live transcription per answered call (owned by the voice channel)."""

    def __init__(
        self,
        ari: AriClient,
        speech: SpeechPort,
        timeline: ConversationPort,
        publish: Callable[[object], None],
        *,
        rtp_host: str = "127.0.0.1",
        consent: Callable[[], Path | None] | None = None,
    ) -> None:
        self.ari = ari
        self.speech = speech
        self.timeline = timeline
        self.publish = publish
        self.rtp_host = rtp_host
        self.consent = consent
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
            for side in call.sides:
                await side.stream.close(limit_s=2.0)
            self._calls.pop(rec.call_id, None)
            return False
        self.started += 1
        log.info("call %s: live transcription started", rec.call_id)
        await self._announce(call, rec.call_id if inbound else None)
        return True

    async def _announce(self, call: _LiveCall, caller_channel: str | None) -> None:
        """Tell the caller the call is transcribed (a whispering snoop plays the announcement into their channel)."""
        sound = self.consent() if self.consent is not None else None
        if sound is None or caller_channel is None or not call.sides:
            return
        try:
            snoop = await self.ari.whisper_to(caller_channel)
            call.sides[0].channels.append(snoop)
            with wave.open(str(sound), "rb") as w:
                seconds = w.getnframes() / w.getframerate()
            call.notice_until = time.time() + seconds + 0.5
            await self.ari.play(snoop, str(sound.with_suffix("")))
        except (AriError, OSError, EOFError, wave.Error) as err:
            call.notice_until = 0.0
            log.warning("call %s: the transcription notice could not be played (%s)", call.call_id, err)

    async def _open_side(self, call: _LiveCall, name: str, spy: str, channel_id: str) -> _Side:
        loop = asyncio.get_running_loop()

        def partial(text: str) -> None:
            if name == "staff" and time.time() < call.notice_until:
                return
            self.publish(LiveTranscript(call.call_id, call.conversation_id, call.extension, name, text))

        stream = await self.speech.open(partial)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _RtpToStream(stream), local_addr=(self.rtp_host, 0)
        )
        side = _Side(name, stream, transport, protocol)
        port = transport.get_extra_info("sockname")[1]
        try:
            snoop = await self.ari.snoop(channel_id, spy)
            side.channels.append(snoop)
            media = await self.ari.external_media(f"{self.rtp_host}:{port}", "slin16")
            side.channels.append(media)
            side.bridge = await self.ari.bridge()
            await self.ari.add_to_bridge(side.bridge, snoop, media)
        except BaseException:
            # Not part of the call yet: undo this side here (the caller tears down the sides it holds).
            await self._teardown(_LiveCall(call.call_id, None, None, 0.0, [side]))
            await stream.close(limit_s=2.0)
            raise
        return side

    async def finish(self, rec: CallRecord, conversation_id: int | None = None) -> int | None:
        """End transcription of a call; put the transcript on the timeline. Returns the event id, if any."""
        call = self._calls.pop(rec.call_id, None)
        if call is None:
            return None
        turns: list[dict[str, Any]] = []
        for side in call.sides:
            for u in await side.stream.close():
                at = side.stream.wall_time(u.start)
                if side.name == "staff" and side.stream.wall_time(u.end) <= call.notice_until:
                    continue  # the notice itself
                turns.append({"side": side.name, "text": u.text, "at": round(at, 2), "confidence": u.confidence})
        await self._teardown(call)
        turns.sort(key=lambda t: t["at"])
        # A first-time caller's conversation may only exist since the call was answered.
        conversation = next(
            (c for c in (call.conversation_id, conversation_id, rec.conversation_id) if c is not None), None
        )
        if not turns or conversation is None:
            return None
        body = "\n".join(f"{'Caller' if t['side'] == 'caller' else 'Staff'}: {t['text']}" for t in turns)
        meta = {"live": True, "call_id": rec.call_id, "extension": call.extension, "turns": turns}
        event_id = await self.timeline.append_event(
            conversation, EventKind.TRANSCRIPT, Channel.VOICE, body, meta, external_id=f"live:{rec.call_id}"
        )
        self.transcripts += 1
        return event_id

    async def transcribe_recording(self, rec: CallRecord, conversation_id: int | None, path: Path) -> int | None:
        """The fallback when live transcription could not run: transcribe Asterisk's recording of the call.

        Both sides are mixed in the recording, so the transcript is not split into caller and staff turns. A file
        that is missing or not a WAV is logged and skipped (the call itself is on the timeline either way).
        """
        try:
            with wave.open(str(path), "rb") as w:
                rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
                pcm = w.readframes(w.getnframes())
        except (OSError, EOFError, wave.Error) as err:
            log.warning("call %s: no recording to transcribe after the call (%s)", rec.call_id, err)
            return None
        if width != 2 or channels != 1 or not pcm or conversation_id is None:
            log.warning("call %s: recording %s is not 16-bit mono audio; not transcribed", rec.call_id, path.name)
            return None
        stream = await self.speech.open(lambda _text: None, rate=rate)
        step = rate // 5 * 2  # 200 ms per frame
        for i in range(0, len(pcm), step):
            stream.feed(pcm[i : i + step])
        utterances = await stream.close(limit_s=max(30.0, len(pcm) / (2 * rate)))
        text = " ".join(u.text for u in utterances if u.text).strip()
        if not text:
            return None
        started = rec.answered_at or rec.started_at
        turns = [
            {"side": "both", "text": u.text, "at": round(started + u.start, 2), "confidence": u.confidence}
            for u in utterances
            if u.text
        ]
        meta = {"live": False, "after_call": True, "call_id": rec.call_id, "turns": turns, "path": str(path)}
        event_id = await self.timeline.append_event(
            conversation_id, EventKind.TRANSCRIPT, Channel.VOICE, text, meta, external_id=f"after:{rec.call_id}"
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
