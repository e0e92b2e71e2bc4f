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

_MEDIA_GAP_S = 2.0
"""Live audio that stopped this long before the call ended stopped early (see LiveCalls.finish)."""
_LABELS = {"caller": "Caller", "staff": "Staff"}


def _aligned(recorded: list[dict[str, Any]], live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Shift the recording's turns onto the live clock, by the median offset of the words both heard."""
    offsets = sorted(
        lv["at"] - r["at"] for r in recorded for lv in live if lv["text"] == r["text"] and abs(lv["at"] - r["at"]) < 20
    )
    if not offsets:
        return recorded
    shift = offsets[len(offsets) // 2]
    return [{**r, "at": round(r["at"] + shift, 2)} for r in recorded]


async def _remove(path: Path) -> None:
    """Delete a safety-net recording that is not needed (gone already is fine)."""
    await asyncio.to_thread(path.unlink, True)


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
    ari_lost_at: float | None = None
    """When the ARI link dropped during this call (None: it held)."""
    media_lost_at: float | None = None
    """When Asterisk reported one of this call's snoop or media channels gone while the call went on."""


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
        self._orphans: list[tuple[str, str]] = []

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

    async def finish(
        self, rec: CallRecord, conversation_id: int | None = None, recording: Path | None = None
    ) -> int | None:
        """End transcription of a call; put the transcript on the timeline. Returns the event id, if any.

        ``recording`` is Asterisk's safety-net recording of the call (MixMonitor, both sides mixed), if one was made.
        When live audio stopped before the call ended (ARI went away and took the media channels with it, or the
        media stopped for any other reason), the live turns up to that moment are kept and the rest of the call is
        transcribed from the recording; when live audio covered the whole call the recording is deleted unread.
        Without a live transcription at all (ARI was down when the call was answered) the recording is all there is.
        """
        call = self._calls.pop(rec.call_id, None)
        conversation = next(
            (c for c in ((call.conversation_id if call else None), conversation_id, rec.conversation_id) if c), None
        )
        if call is None:
            if recording is None:
                return None
            if rec.answered_at is None:
                await _remove(recording)
                return None
            return await self.transcribe_recording(rec, conversation, recording)
        turns: list[dict[str, Any]] = []
        for side in call.sides:
            for u in await side.stream.close():
                at = side.stream.wall_time(u.start)
                if side.name == "staff" and side.stream.wall_time(u.end) <= call.notice_until:
                    continue  # the notice itself
                turns.append(
                    {
                        "side": side.name,
                        "text": u.text,
                        "at": round(at, 2),
                        "end": round(side.stream.wall_time(u.end), 2),
                        "confidence": u.confidence,
                    }
                )
        await self._teardown(call)
        ended = rec.ended_at or time.time()
        cut = self._live_audio_until(call, ended)
        meta: dict[str, Any] = {"live": True, "call_id": rec.call_id, "extension": call.extension}
        if call.ari_lost_at is not None:
            meta["ari_lost_at"] = round(call.ari_lost_at, 2)
        if cut is not None and recording is not None:
            recorded = await self._recognise_file(rec, recording)
            if recorded is not None:
                before = [t for t in turns if t["at"] < cut]
                recorded = _aligned(recorded, before)
                turns = before + [
                    t
                    for t in recorded
                    if t["at"] >= cut - 0.5
                    and not any(b["text"] == t["text"] and abs(b["at"] - t["at"]) < 1.5 for b in before)
                ]
                meta.update(after_call=True, live_until=round(cut, 2), path=str(recording))
                log.info("call %s: live audio stopped early; the rest is transcribed from the recording", rec.call_id)
        elif recording is not None:
            await _remove(recording)
        turns.sort(key=lambda t: t["at"])
        # A first-time caller's conversation may only exist since the call was answered.
        if not turns or conversation is None:
            return None
        body = "\n".join(f"{_LABELS.get(t['side'], 'Call')}: {t['text']}" for t in turns)
        meta["turns"] = turns
        event_id = await self.timeline.append_event(
            conversation, EventKind.TRANSCRIPT, Channel.VOICE, body, meta, external_id=f"live:{rec.call_id}"
        )
        self.transcripts += 1
        return event_id

    @staticmethod
    def _live_audio_until(call: _LiveCall, ended: float) -> float | None:
        """When live audio stopped being trustworthy, if that was more than a moment before the call ended.

        Two signs: the ARI link dropped (whether Asterisk kept the media channels is then unknown, so the recording
        is trusted from that moment), or Asterisk reported that one of the call's snoop or media channels ended
        while the call went on. None: live audio covered the whole call.
        """
        marks = [t for t in (call.ari_lost_at, call.media_lost_at) if t is not None]
        if not marks:
            return None
        until = min(marks)
        return until if until < ended - _MEDIA_GAP_S else None

    async def transcribe_recording(self, rec: CallRecord, conversation_id: int | None, path: Path) -> int | None:
        """The fallback when live transcription could not run: transcribe Asterisk's recording of the call.

        Both sides are mixed in the recording, so the transcript is not split into caller and staff turns. A file
        that is missing or not a WAV is logged and skipped (the call itself is on the timeline either way).
        """
        if conversation_id is None:
            return None
        turns = await self._recognise_file(rec, path)
        if not turns:
            return None
        text = " ".join(t["text"] for t in turns).strip()
        meta = {"live": False, "after_call": True, "call_id": rec.call_id, "turns": turns, "path": str(path)}
        event_id = await self.timeline.append_event(
            conversation_id, EventKind.TRANSCRIPT, Channel.VOICE, text, meta, external_id=f"after:{rec.call_id}"
        )
        self.transcripts += 1
        return event_id

    async def _recognise_file(self, rec: CallRecord, path: Path) -> list[dict[str, Any]] | None:
        """The utterances of a call recording as turns on the wall clock (None: no usable recording).

        MixMonitor writes only while the call is bridged, from about the answer on, and only the frames that flow
        (a silent phone may send none), so the times are approximate; :func:`_aligned` corrects them against the
        live turns when both heard the same words.
        """
        pcm, rate = b"", 0
        for _ in range(30):  # Asterisk closes the file a moment after the hang-up is reported
            try:
                with wave.open(str(path), "rb") as w:
                    rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
                    pcm = w.readframes(w.getnframes())
            except (OSError, EOFError, wave.Error) as err:
                problem = str(err)
                pcm = b""
            else:
                if width != 2 or channels != 1:
                    log.warning(
                        "call %s: recording %s is not 16-bit mono audio; not transcribed", rec.call_id, path.name
                    )
                    return None
                if pcm:
                    break
                problem = "empty"
            await asyncio.sleep(0.1)
        if not pcm:
            log.warning("call %s: no recording to transcribe after the call (%s)", rec.call_id, problem)
            return None
        stream = await self.speech.open(lambda _text: None, rate=rate)
        step = rate // 5 * 2  # 200 ms per frame
        for i in range(0, len(pcm), step):
            stream.feed(pcm[i : i + step])
        utterances = await stream.close(limit_s=max(30.0, len(pcm) / (2 * rate)))
        started = rec.answered_at or rec.started_at
        return [
            {"side": "both", "text": u.text, "at": round(started + u.start, 2), "confidence": u.confidence}
            for u in utterances
            if u.text
        ]

    def ari_lost(self) -> None:
        """The ARI link dropped: note it on every call being transcribed (their media may stop with it)."""
        now = time.time()
        for call in self._calls.values():
            if call.ari_lost_at is None:
                call.ari_lost_at = now
        if self._calls:
            log.warning(
                "ARI link lost during %d call(s): they go on; what live audio misses comes from the recording",
                len(self._calls),
            )

    def ari_event(self, event: dict[str, Any]) -> None:
        """An event of the Stasis application: a snoop or media channel that ends mid-call is noted."""
        if event.get("type") not in ("StasisEnd", "ChannelDestroyed"):
            return
        channel = event.get("channel")
        gone = channel.get("id") if isinstance(channel, dict) else None
        for call in self._calls.values():
            if call.media_lost_at is None and any(gone in side.channels for side in call.sides):
                call.media_lost_at = time.time()
                log.info("call %s: live audio ended (%s)", call.call_id, event.get("type"))

    async def ari_back(self) -> None:
        """The ARI link is back: hang up media channels and bridges left behind while it was away."""
        orphans, self._orphans = self._orphans, []
        for kind, ident in orphans:
            if kind == "bridge":
                await self.ari.destroy_bridge(ident)
            else:
                await self.ari.hangup(ident)

    async def _teardown(self, call: _LiveCall) -> None:
        for side in call.sides:
            side.transport.close()
            if not self.ari.connected:
                # Nothing answers now: left for when the link is back (the snoops die with the call anyway).
                self._orphans += [("channel", ch) for ch in side.channels]
                self._orphans += [("bridge", side.bridge)] if side.bridge is not None else []
                continue
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
