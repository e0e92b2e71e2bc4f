"""Call tracker: a pure state machine that turns AMI events into calls with outcomes.

Theory of operation
-------------------
Asterisk gives every channel a ``Uniqueid`` and every channel that belongs to the same call the
same ``Linkedid`` (the Uniqueid of the channel that started it). The tracker therefore keys calls
by Linkedid and channels by Uniqueid:

* ``Newchannel`` adds a channel. If the call is new, the first channel decides the direction: a
  staff phone (an endpoint in the staff map, or an all-digit endpoint) starting a call is outbound,
  anything else (the trunk) is inbound and its CallerIDNum is the caller.
* ``DialBegin`` towards a staff endpoint, or ``Newstate: Ringing`` of a staff channel, means that
  extension rings (:class:`Ringing`). ``DialEnd`` with ``ANSWER`` means it was answered
  (:class:`Answered`; again for the target of a transfer); for an outbound call the answer that
  counts is the customer's leg.
  Every other DialStatus is remembered so an all-busy call can be told from a missed one.
* ``UserEvent: VoicemailRecorded`` (raised by the dialplan after ``Record()``) marks the call as a
  voicemail and yields :class:`VoicemailLeft`.
* ``Hangup`` removes a channel; when the last channel of a call is gone the call is over and
  :class:`Ended` carries the outcome: answered if anybody answered (so a ring group member who
  did not pick up never sees it as missed), else voicemail, else busy if every dial attempt found
  the phones busy, else abandoned if the caller gave up within ``abandon_seconds``, else missed.
* After an AMI reconnect we cannot know what happened while we were away. ``begin_resync()``
  marks every channel unconfirmed, each ``CoreShowChannel`` event confirms (or adds) one, and
  ``end_resync()`` ends the channels Asterisk no longer has (an Asterisk restart ends them all).

Events with missing fields are counted in ``malformed`` and ignored; the tracker never raises on
input. Times come from the event's ``Timestamp`` field when Asterisk sends one, else from ``now``.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar

from gateway.domain.calls import CallDirection, CallOutcome, CallRecord, Transfer

log = logging.getLogger(__name__)

_ENDPOINT_RE = re.compile(r"^(?:PJSIP|SIP|IAX2|DAHDI)/([^-/@;]+)(?:-[0-9a-fA-F]+)?$")
_BUSY_STATUSES = frozenset({"BUSY", "CHANUNAVAIL", "CONGESTION"})
_WITHHELD = frozenset({"", "anonymous", "unknown", "<unknown>", "restricted", "private"})


def endpoint_of(channel: str) -> str | None:
    """``PJSIP/201-0000000a`` -> ``201``; None for Local/other channel technologies."""
    m = _ENDPOINT_RE.match(channel)
    return m.group(1) if m else None


def is_withheld(number: str) -> bool:
    """True for an empty, anonymous or otherwise withheld caller ID."""
    return number.strip().lower() in _WITHHELD


# --- effects (what the tracker tells its owner) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A new call appeared."""

    call: CallRecord


@dataclass(frozen=True, slots=True)
class Ringing:
    """``extension`` started ringing for ``call``."""

    call: CallRecord
    extension: str
    at: float


@dataclass(frozen=True, slots=True)
class Answered:
    """``call`` was answered; ``extension`` is the staff member on it."""

    call: CallRecord
    extension: str
    at: float


@dataclass(frozen=True, slots=True)
class Transferred:
    """``call`` was transferred."""

    call: CallRecord
    transfer: Transfer


@dataclass(frozen=True, slots=True)
class VoicemailLeft:
    """The dialplan recorded a voicemail for ``call`` (``late`` if it came after the end)."""

    call: CallRecord
    path: str
    duration: float
    at: float
    late: bool = False


@dataclass(frozen=True, slots=True)
class Ended:
    """``call`` is over; ``call.outcome`` is set."""

    call: CallRecord


TrackerEffect = CallStarted | Ringing | Answered | Transferred | VoicemailLeft | Ended


@dataclass
class _Chan:
    uniqueid: str
    linkedid: str
    name: str
    endpoint: str | None
    state: str = ""
    rang: bool = False
    confirmed: bool = True


@dataclass
class _Call:
    rec: CallRecord
    channels: set[str] = field(default_factory=set)
    dial_statuses: list[str] = field(default_factory=list)
    staff_extension: str | None = None  # outbound: who placed it
    from_origin: bool = True  # created from the channel that started the call (Uniqueid == Linkedid)


@dataclass(frozen=True)
class _Expected:
    customer: str
    extension: str
    conversation_id: int | None


_Handler = Callable[["CallTracker", Mapping[str, str], float], list[TrackerEffect]]


#: Channels the gateway itself creates through ARI to listen to a call (live transcription); never calls.
_MEDIA_HELPERS = ("Snoop/", "UnicastRTP/")


class CallTracker:
    """Feed AMI events (as ``Mapping[str, str]``) in order; read effects back. No I/O."""

    def __init__(
        self,
        *,
        staff: Mapping[str, str] | None = None,
        abandon_seconds: float = 5.0,
        recent_calls: int = 256,
    ) -> None:
        self.staff = dict(staff or {})
        self.abandon_seconds = abandon_seconds
        self.malformed = 0
        self.events_seen = 0
        self._chans: dict[str, _Chan] = {}
        self._calls: dict[str, _Call] = {}
        self._expected: dict[str, _Expected] = {}
        self._recent: OrderedDict[str, CallRecord] = OrderedDict()
        self._recent_max = recent_calls
        self._resyncing = False
        self._gone_during_resync: set[str] = set()

    # -- queries ---------------------------------------------------------------------------------

    def is_extension(self, endpoint: str | None) -> bool:
        """True if ``endpoint`` is a staff phone (in the staff map, or all digits)."""
        if not endpoint:
            return False
        return endpoint in self.staff or endpoint.isdigit()

    def busy_extensions(self) -> frozenset[str]:
        """Staff extensions that have a channel right now (ringing or talking)."""
        return frozenset(c.endpoint for c in self._chans.values() if c.endpoint and self.is_extension(c.endpoint))

    def active_calls(self) -> list[CallRecord]:
        """Snapshots of the calls in progress."""
        return [c.rec for c in self._calls.values()]

    def call(self, call_id: str) -> CallRecord | None:
        """A call in progress or recently ended, by Linkedid."""
        c = self._calls.get(call_id)
        return c.rec if c is not None else self._recent.get(call_id)

    @property
    def recent_count(self) -> int:
        """Ended calls still remembered (for late voicemails and replays)."""
        return len(self._recent)

    def call_for_channel(self, uniqueid: str) -> CallRecord | None:
        """The call a channel belongs to (by its Uniqueid)."""
        ch = self._chans.get(uniqueid)
        if ch is not None:
            return self.call(ch.linkedid)
        return self.call(uniqueid)

    # -- commands --------------------------------------------------------------------------------

    def expect_outbound(self, call_id: str, *, customer: str, extension: str, conversation_id: int | None) -> None:
        """Announce an Originate whose first channel will carry Uniqueid ``call_id``."""
        self._expected[call_id] = _Expected(customer, extension, conversation_id)
        while len(self._expected) > 1000:  # Originates that never produced a channel
            del self._expected[next(iter(self._expected))]

    def forget_expected(self, call_id: str) -> None:
        """The Originate failed before any channel existed."""
        self._expected.pop(call_id, None)

    def set_conversation(self, call_id: str, conversation_id: int) -> None:
        """Attach the conversation the call belongs to (once the owner resolved it)."""
        c = self._calls.get(call_id)
        if c is not None:
            c.rec = replace(c.rec, conversation_id=conversation_id)
        elif call_id in self._recent:
            self._recent[call_id] = replace(self._recent[call_id], conversation_id=conversation_id)

    def begin_resync(self) -> None:
        """The AMI link came back: channels must be confirmed by CoreShowChannel events."""
        self._resyncing = True
        self._gone_during_resync.clear()
        for ch in self._chans.values():
            ch.confirmed = False

    def end_resync_abort(self) -> None:
        """The channel list could not be fetched: keep every call as it was."""
        self._resyncing = False
        self._gone_during_resync.clear()
        for ch in self._chans.values():
            ch.confirmed = True

    def end_resync(self, now: float) -> list[TrackerEffect]:
        """End every channel Asterisk did not list (it hung up while we were not listening)."""
        self._resyncing = False
        self._gone_during_resync.clear()
        out: list[TrackerEffect] = []
        for uid in [u for u, ch in self._chans.items() if not ch.confirmed]:
            out += self._hangup(uid, now, cause="gone after AMI reconnect")
        return out

    # -- the state machine -----------------------------------------------------------------------

    def feed(self, event: Mapping[str, str], now: float) -> list[TrackerEffect]:
        """Apply one AMI event; return what it caused."""
        self.events_seen += 1
        name = event.get("Event", "")
        handler = self._HANDLERS.get(name)
        if handler is None:
            return []
        if event.get("Channel", "").startswith(_MEDIA_HELPERS) or event.get("DestChannel", "").startswith(
            _MEDIA_HELPERS
        ):
            return []  # live transcription's own snoop and RTP media channels are not calls
        ts = now
        raw_ts = event.get("Timestamp")
        if raw_ts:
            try:
                ts = float(raw_ts)
            except ValueError:
                ts = now
        return handler(self, event, ts)

    def _bad(self, event: Mapping[str, str], missing: str) -> list[TrackerEffect]:
        self.malformed += 1
        log.debug("ignoring AMI %s without %s", event.get("Event", "?"), missing)
        return []

    def _ensure_channel(self, event: Mapping[str, str], ts: float) -> list[TrackerEffect]:
        uid = event.get("Uniqueid", "")
        if not uid:
            return self._bad(event, "Uniqueid")
        out: list[TrackerEffect] = []
        ch = self._chans.get(uid)
        if ch is not None:
            ch.confirmed = True
            if event.get("ChannelStateDesc"):
                ch.state = event["ChannelStateDesc"]
            return out
        linked = event.get("Linkedid") or uid
        name = event.get("Channel", "")
        ch = _Chan(uid, linked, name, endpoint_of(name), state=event.get("ChannelStateDesc", ""))
        self._chans[uid] = ch
        call = self._calls.get(linked)
        if call is not None and not call.from_origin and uid == linked:
            # A resync listed a dialled leg first (its CallerIDNum is the phone's own number): now that the
            # channel that started the call shows up, take caller, name and direction from it.
            origin = self._new_call(linked, ch, event, ts)
            call.rec = replace(
                origin.rec,
                started_at=min(call.rec.started_at, origin.rec.started_at),
                extensions_rung=call.rec.extensions_rung,
                answered_by=call.rec.answered_by,
                answered_at=call.rec.answered_at,
                last_answered_by=call.rec.last_answered_by,
                voicemail_path=call.rec.voicemail_path,
                voicemail_seconds=call.rec.voicemail_seconds,
                # A conversation found for the wrong caller is not this caller's.
                conversation_id=call.rec.conversation_id if call.rec.caller == origin.rec.caller else None,
            )
            call.staff_extension = call.staff_extension or origin.staff_extension
            call.from_origin = True
        if call is None:
            if linked in self._recent:
                # A straggler channel of a call that already ended (e.g. a late Local leg).
                call = _Call(rec=self._recent.pop(linked))
                call.rec = replace(call.rec, ended_at=None, outcome=None)
            else:
                call = self._new_call(linked, ch, event, ts)
                call.from_origin = uid == linked
                out.append(CallStarted(call.rec))
            self._calls[linked] = call
        call.channels.add(uid)
        return out

    def _new_call(self, linked: str, ch: _Chan, event: Mapping[str, str], ts: float) -> _Call:
        exp = self._expected.pop(linked, None)
        num = event.get("CallerIDNum", "")
        cname = event.get("CallerIDName", "")
        exten = event.get("Exten", "")
        if exp is not None:
            rec = CallRecord(
                call_id=linked,
                direction=CallDirection.OUTBOUND,
                caller=exp.customer,
                caller_name="",
                dialled=exp.customer,
                started_at=ts,
                conversation_id=exp.conversation_id,
            )
            return _Call(rec=rec, staff_extension=exp.extension)
        if self.is_extension(ch.endpoint) and ch.uniqueid == linked:
            # A staff phone started this call: the "caller" of interest is whoever it dials.
            rec = CallRecord(
                call_id=linked,
                direction=CallDirection.OUTBOUND,
                caller=exten if exten not in ("", "s") else "",
                caller_name="",
                dialled=exten,
                started_at=ts,
            )
            return _Call(rec=rec, staff_extension=ch.endpoint)
        rec = CallRecord(
            call_id=linked,
            direction=CallDirection.INBOUND,
            caller="" if is_withheld(num) else num,
            caller_name="" if cname.strip().lower() in _WITHHELD else cname,
            dialled=exten,
            started_at=ts,
        )
        return _Call(rec=rec)

    def _on_newchannel(self, event: Mapping[str, str], ts: float) -> list[TrackerEffect]:
        return self._ensure_channel(event, ts)

    def _on_newstate(self, event: Mapping[str, str], ts: float) -> list[TrackerEffect]:
        out = self._ensure_channel(event, ts)
        ch = self._chans.get(event.get("Uniqueid", ""))
        if ch is None:
            return out
        call = self._calls.get(ch.linkedid)
        if call is None:
            return out
        state = event.get("ChannelStateDesc", "")
        if (state == "Ringing" and self.is_extension(ch.endpoint) and ch.uniqueid != ch.linkedid) or (
            state == "Ringing" and call.rec.direction is CallDirection.OUTBOUND and ch.endpoint == call.staff_extension
        ):
            out += self._ring(call, ch, ts)
        return out

    def _ring(self, call: _Call, ch: _Chan, ts: float) -> list[TrackerEffect]:
        if ch.rang or ch.endpoint is None:
            return []
        ch.rang = True
        rung = call.rec.extensions_rung
        if ch.endpoint not in rung:
            call.rec = replace(call.rec, extensions_rung=(*rung, ch.endpoint))
        return [Ringing(call.rec, ch.endpoint, ts)]

    def _on_dialbegin(self, event: Mapping[str, str], ts: float) -> list[TrackerEffect]:
        dest_uid = event.get("DestUniqueid", "")
        if not dest_uid:
            return self._bad(event, "DestUniqueid")
        out: list[TrackerEffect] = []
        if event.get("Uniqueid"):
            out += self._ensure_channel(event, ts)
        dest = {
            "Uniqueid": dest_uid,
            "Linkedid": event.get("DestLinkedid") or event.get("Linkedid") or dest_uid,
            "Channel": event.get("DestChannel", ""),
            "ChannelStateDesc": event.get("DestChannelStateDesc", ""),
            "CallerIDNum": event.get("DestCallerIDNum", ""),
            "CallerIDName": event.get("DestCallerIDName", ""),
            "Exten": event.get("DestExten", ""),
        }
        out += self._ensure_channel(dest, ts)
        ch = self._chans[dest_uid]
        call = self._calls.get(ch.linkedid)
        if call is None:
            return out
        if not call.rec.dialled or call.rec.dialled == "s":
            exten = event.get("Exten", "")
            if exten and exten != "s":
                call.rec = replace(call.rec, dialled=exten)
        if self.is_extension(ch.endpoint) and ch.endpoint != call.staff_extension:
            out += self._ring(call, ch, ts)
        return out

    def _on_dialend(self, event: Mapping[str, str], ts: float) -> list[TrackerEffect]:
        dest_uid = event.get("DestUniqueid", "")
        status = event.get("DialStatus", "")
        if not dest_uid or not status:
            return self._bad(event, "DestUniqueid/DialStatus")
        ch = self._chans.get(dest_uid)
        linked = ch.linkedid if ch else (event.get("DestLinkedid") or event.get("Linkedid", ""))
        call = self._calls.get(linked)
        if call is None:
            return []
        endpoint = ch.endpoint if ch else endpoint_of(event.get("DestChannel", ""))
        call.dial_statuses.append(status)
        if status != "ANSWER":
            return []
        is_ext = self.is_extension(endpoint) and endpoint != call.staff_extension
        if call.rec.direction is CallDirection.INBOUND and is_ext and endpoint:
            if call.rec.answered_by is None:
                call.rec = replace(call.rec, answered_by=endpoint, answered_at=ts, last_answered_by=endpoint)
                return [Answered(call.rec, endpoint, ts)]
            if endpoint != call.rec.last_answered_by:
                # Answered again by someone else: a transfer landed. The first answer still counts for the
                # outcome and the ring time; the last one is who handled the caller in the end.
                call.rec = replace(call.rec, last_answered_by=endpoint)
                return [Answered(call.rec, endpoint, ts)]
            return []
        if call.rec.direction is CallDirection.OUTBOUND and not is_ext and call.rec.answered_at is None:
            ext = call.staff_extension or ""
            call.rec = replace(call.rec, answered_by=ext or None, answered_at=ts, last_answered_by=ext or None)
            return [Answered(call.rec, ext, ts)]
        return []

    def _on_hangup(self, event: Mapping[str, str], ts: float) -> list[TrackerEffect]:
        uid = event.get("Uniqueid", "")
        if not uid:
            return self._bad(event, "Uniqueid")
        return self._hangup(uid, ts, cause=event.get("Cause-txt", ""))

    def _hangup(self, uid: str, ts: float, cause: str) -> list[TrackerEffect]:
        if self._resyncing:
            # Its CoreShowChannel entry may still be on its way: it must not bring the channel back.
            self._gone_during_resync.add(uid)
        ch = self._chans.pop(uid, None)
        if ch is None:
            return []
        call = self._calls.get(ch.linkedid)
        if call is None:
            return []
        call.channels.discard(uid)
        if uid == ch.linkedid and cause:
            call.rec = replace(call.rec, hangup_cause=cause)
        if call.channels:
            return []
        del self._calls[ch.linkedid]
        rec = replace(call.rec, ended_at=ts, outcome=self._outcome(call, ts))
        self._remember(rec)
        return [Ended(rec)]

    def _outcome(self, call: _Call, ended: float) -> CallOutcome:
        rec = call.rec
        if rec.answered_at is not None:
            return CallOutcome.ANSWERED
        if rec.voicemail_path:
            return CallOutcome.VOICEMAIL
        statuses = call.dial_statuses
        if statuses and all(s in _BUSY_STATUSES for s in statuses):
            return CallOutcome.BUSY
        if ended - rec.started_at < self.abandon_seconds:
            return CallOutcome.ABANDONED
        return CallOutcome.MISSED

    def _remember(self, rec: CallRecord) -> None:
        self._recent[rec.call_id] = rec
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def _on_userevent(self, event: Mapping[str, str], ts: float) -> list[TrackerEffect]:
        if event.get("UserEvent", "").lower() != "voicemailrecorded":
            return []
        path = event.get("Path") or event.get("File") or event.get("Filename") or ""
        if not path:
            return self._bad(event, "Path")
        try:
            duration = float(event.get("Duration", "") or 0)
        except ValueError:
            duration = 0.0
        call_id = event.get("Linkedid", "")
        uid = event.get("Uniqueid", "") or event.get("CallId", "")
        call = self._calls.get(call_id) if call_id else None
        if call is None and uid:
            ch = self._chans.get(uid)
            call = self._calls.get(ch.linkedid if ch else uid)
        if call is not None:
            call.rec = replace(call.rec, voicemail_path=path, voicemail_seconds=duration)
            return [VoicemailLeft(call.rec, path, duration, ts)]
        rec = self._recent.get(call_id) or self._recent.get(uid)
        if rec is None:
            # Asterisk knows a call we never saw (we were disconnected): still keep the voicemail.
            caller = event.get("CallerIDNum") or event.get("Caller") or event.get("CallerNum", "")
            rec = CallRecord(
                call_id=call_id or uid or path,
                direction=CallDirection.INBOUND,
                caller="" if is_withheld(caller) else caller,
                caller_name="",
                dialled=event.get("Exten", ""),
                started_at=ts,
                ended_at=ts,
                outcome=CallOutcome.VOICEMAIL,
            )
        rec = replace(rec, voicemail_path=path, voicemail_seconds=duration)
        if rec.answered_at is None:
            rec = replace(rec, outcome=CallOutcome.VOICEMAIL)
        self._remember(rec)
        return [VoicemailLeft(rec, path, duration, ts, late=True)]

    def _on_blindtransfer(self, event: Mapping[str, str], ts: float) -> list[TrackerEffect]:
        linked = event.get("TransfererLinkedid") or event.get("TransfereeLinkedid", "")
        call = self._calls.get(linked)
        if call is None:
            return self._bad(event, "TransfererLinkedid")
        t = Transfer(
            at=ts,
            kind="blind",
            from_extension=endpoint_of(event.get("TransfererChannel", "")),
            to_target=event.get("Extension", ""),
        )
        call.rec = replace(call.rec, transfers=(*call.rec.transfers, t))
        return [Transferred(call.rec, t)]

    def _on_attendedtransfer(self, event: Mapping[str, str], ts: float) -> list[TrackerEffect]:
        linked = event.get("OrigTransfererLinkedid", "")
        call = self._calls.get(linked)
        if call is None:
            return self._bad(event, "OrigTransfererLinkedid")
        target = endpoint_of(event.get("SecondTransfererChannel", "")) or event.get("TransferTargetChannel", "")
        t = Transfer(
            at=ts,
            kind="attended",
            from_extension=endpoint_of(event.get("OrigTransfererChannel", "")),
            to_target=target or "",
        )
        call.rec = replace(call.rec, transfers=(*call.rec.transfers, t))
        return [Transferred(call.rec, t)]

    def _on_originateresponse(self, event: Mapping[str, str], ts: float) -> list[TrackerEffect]:
        # A failed Originate that never produced a channel (the staff phone is unplugged or not registered): stop
        # waiting for it, and end the call so whoever placed it (staff, a scheduled call-back) learns it failed.
        uid = event.get("Uniqueid", "")
        if event.get("Response") != "Failure" or uid not in self._expected or uid in self._calls:
            return []
        exp = self._expected.pop(uid)
        reason = event.get("Reason", "")
        rec = CallRecord(
            call_id=uid,
            direction=CallDirection.OUTBOUND,
            caller=exp.customer,
            caller_name="",
            dialled=exp.customer,
            started_at=ts,
            ended_at=ts,
            outcome=CallOutcome.MISSED,
            hangup_cause=f"extension {exp.extension} could not be rung" + (f" (reason {reason})" if reason else ""),
            conversation_id=exp.conversation_id,
        )
        return [Ended(rec)]

    def _on_coreshowchannel(self, event: Mapping[str, str], ts: float) -> list[TrackerEffect]:
        if event.get("Uniqueid", "") in self._gone_during_resync:
            return []  # listed before it hung up; the Hangup already arrived
        out = self._ensure_channel(event, ts)
        ch = self._chans.get(event.get("Uniqueid", ""))
        if ch is None:
            return out
        call = self._calls.get(ch.linkedid)
        if call is None:
            return out
        # A staff channel that is Up and bridged during a resync: the call was answered by it.
        if (
            call.rec.direction is CallDirection.INBOUND
            and call.rec.answered_by is None
            and self.is_extension(ch.endpoint)
            and ch.endpoint
            and event.get("ChannelStateDesc") == "Up"
            and event.get("BridgeId")
        ):
            call.rec = replace(call.rec, answered_by=ch.endpoint, answered_at=ts, last_answered_by=ch.endpoint)
            out.append(Answered(call.rec, ch.endpoint, ts))
        return out

    _HANDLERS: ClassVar[dict[str, _Handler]] = {
        "Newchannel": _on_newchannel,
        "Newstate": _on_newstate,
        "DialBegin": _on_dialbegin,
        "DialEnd": _on_dialend,
        "Hangup": _on_hangup,
        "UserEvent": _on_userevent,
        "BlindTransfer": _on_blindtransfer,
        "AttendedTransfer": _on_attendedtransfer,
        "CoreShowChannel": _on_coreshowchannel,
        "OriginateResponse": _on_originateresponse,
    }
