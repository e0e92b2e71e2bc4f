"""Recovery after downtime: what Asterisk recorded while the gateway was not listening.

Theory of operation
-------------------
While the gateway is stopped (or its AMI link is down) Asterisk keeps answering calls: the dialplan
falls back to its defaults, rings the group and records voicemails into the recordings directory.
Two of Asterisk's own records survive that time:

* the call detail records that ``asterisk-config/cdr_custom.conf`` writes, one CSV line per call leg
  (layout ``gw1``, see that file), and
* the voicemail files, named ``vm-<date>-<time>-<linkedid>.wav`` by the dialplan.

At start and after every AMI reconnect the voice channel calls :meth:`Recovery.run`, after the
tracker was resynced with Asterisk's live channels. It reads the CDR file from where the last run
stopped (a byte offset kept in the store, reset when the file was rotated), groups the legs by the
call's linkedid and works out each inbound call's outcome the way the live tracker does (answered
by a phone, voicemail, busy, abandoned, missed). It lists the recordings directory for files no
timeline knows. Calls and voicemails are stored through ``ConversationService.ingest`` with the same
external ids the live path uses (``<linkedid>:end``, ``<linkedid>:voicemail``), so a call the gateway
saw live is never stored again, and a second run stores nothing: only items that were really new are
counted and published. Calls that ended after the AMI link came up, calls the tracker still knows
and recordings still being written are left to the live path. A file in the recordings directory
that is not a usable recording (empty, truncated, not audio) becomes a voicemail entry whose body
says why, so nobody is left wondering about a silent failure.

This module holds the pure parts (CDR parsing, grouping, the outcome, the recordings scan); the
voice channel owns the store writes and the bus.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.channels.voice.label import stored_name
from gateway.channels.voice.tracker import endpoint_of, is_withheld
from gateway.domain.calls import CallDirection, CallOutcome, CallRecord

log = logging.getLogger(__name__)

#: First column of every line cdr_custom.conf writes; a different layout is skipped, never misread.
CDR_LAYOUT = "gw1"
_CDR_FIELDS = 16

#: Dialplan contexts of inbound customer calls (asterisk-config/extensions.conf). Staff and
#: click-to-call legs are not customers waiting for an answer.
INBOUND_CONTEXTS = frozenset({"gw-inbound", "gw-call", "gw-voicemail", "gw-voicemail-done"})

#: The dialplan's voicemail file name: vm-YYYYmmdd-HHMMSS-<linkedid>.<format>
_VM_NAME = re.compile(r"^vm-\d{8}-\d{6}-(?P<linkedid>[0-9A-Za-z._-]+?)\.(?P<ext>[A-Za-z0-9]+)$")

#: Shorter recordings are a caller hanging up at the beep (the dialplan deletes them, <= 1644 bytes).
MIN_RECORDING_SECONDS = 0.1
MIN_RECORDING_BYTES = 1644

#: A recording modified this recently may still be written by Asterisk: look again later.
SETTLE_SECONDS = 5.0

_BUSY = frozenset({"BUSY", "CONGESTION", "FAILED"})
_CLID = re.compile(r'^\s*"?(?P<name>.*?)"?\s*<(?P<num>[^>]*)>\s*$')

RECOVERED_MARK = "after downtime"
"""``meta.recovered`` of everything this module stores."""


@dataclass(frozen=True, slots=True)
class CdrLeg:
    """One line of the gateway's CDR file: one leg of a call."""

    linkedid: str
    uniqueid: str
    start: float
    answer: float
    end: float
    src: str
    clid: str
    dst: str
    dcontext: str
    channel: str
    dstchannel: str
    lastapp: str
    disposition: str
    duration: float
    billsec: float


@dataclass(frozen=True, slots=True)
class CdrChunk:
    """What one read of the CDR file gave: the legs, and where to continue next time."""

    legs: tuple[CdrLeg, ...]
    offset: int
    inode: int
    head: str
    bad_lines: int

    @property
    def cursor(self) -> tuple[int, int, str]:
        """(inode, offset, head) to store and pass to the next :func:`read_cdr`."""
        return self.inode, self.offset, self.head


#: Bytes of the file's start hashed to tell a rotated file from the one read before.
_HEAD_BYTES = 512


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def parse_cdr_line(line: str) -> CdrLeg | None:
    """One CSV line of layout ``gw1`` -> a leg; None for another layout or a damaged line."""
    try:
        rows = list(csv.reader([line]))
    except csv.Error:
        return None
    if len(rows) != 1 or len(rows[0]) != _CDR_FIELDS or rows[0][0] != CDR_LAYOUT:
        return None
    f = rows[0]
    if not f[1]:
        return None
    return CdrLeg(
        linkedid=f[1],
        uniqueid=f[2],
        start=_float(f[3]),
        answer=_float(f[4]),
        end=_float(f[5]),
        src=f[6],
        clid=f[7],
        dst=f[8],
        dcontext=f[9],
        channel=f[10],
        dstchannel=f[11],
        lastapp=f[12],
        disposition=f[13].upper(),
        duration=_float(f[14]),
        billsec=_float(f[15]),
    )


def read_cdr(path: Path, cursor: tuple[int, int, str] | None = None) -> CdrChunk:
    """Read complete lines after ``cursor`` (from 0 when the file was replaced or shrank). Blocking.

    A last line without its newline is left for the next read (Asterisk may be writing it).
    """
    with path.open("rb") as fh:
        st = os.fstat(fh.fileno())
        first = fh.read(_HEAD_BYTES)
        offset = 0
        if cursor is not None:
            inode, offset, head = cursor
            same = st.st_ino == inode and st.st_size >= offset
            if not same or hashlib.sha256(first[: min(offset, _HEAD_BYTES)]).hexdigest() != head:
                offset = 0
        fh.seek(offset)
        data = fh.read()
    legs: list[CdrLeg] = []
    bad = 0
    end = data.rfind(b"\n")
    if end < 0:
        return CdrChunk((), offset, st.st_ino, _head(first, offset), 0)
    for raw in data[: end + 1].splitlines():
        if not raw.strip():
            continue
        leg = parse_cdr_line(raw.decode("utf-8", "replace"))
        if leg is None:
            bad += 1
        else:
            legs.append(leg)
    new_offset = offset + end + 1
    return CdrChunk(tuple(legs), new_offset, st.st_ino, _head(first, new_offset), bad)


def _head(first: bytes, offset: int) -> str:
    return hashlib.sha256(first[: min(offset, _HEAD_BYTES)]).hexdigest()


def split_clid(clid: str) -> tuple[str, str]:
    """``"Maria" <5551234>`` -> (``Maria``, ``5551234``); the name keeps its characters."""
    m = _CLID.match(clid)
    if not m:
        return "", clid.strip()
    return m.group("name").replace('""', '"').strip(), m.group("num").strip()


def calls_from_legs(
    legs: Iterable[CdrLeg], *, abandon_seconds: float, voicemails: Mapping[str, str | None]
) -> list[CallRecord]:
    """Group legs by linkedid into finished inbound calls, outcome decided like the live tracker.

    ``voicemails`` maps the linkedids that left a usable recording to its path (or None when
    the path is not known here). Outbound and staff-internal calls are left out.
    """
    by_call: dict[str, list[CdrLeg]] = {}
    for leg in legs:
        by_call.setdefault(leg.linkedid, []).append(leg)
    out: list[CallRecord] = []
    for linkedid, group in by_call.items():
        if not any(g.dcontext in INBOUND_CONTEXTS for g in group):
            continue
        first = min(
            group, key=lambda g: (g.uniqueid != linkedid, g.start)
        )  # the caller's own channel carries the linkedid as its uniqueid
        name, number = split_clid(first.clid)
        caller = first.src or number
        if is_withheld(caller):
            caller = ""
        started = min(g.start for g in group if g.start > 0) if any(g.start > 0 for g in group) else 0.0
        ended = max(g.end for g in group)
        dials = [g for g in group if g.lastapp == "Dial" and g.dstchannel]
        answered = [g for g in dials if g.disposition == "ANSWERED" and g.answer > 0]
        rung = tuple(dict.fromkeys(e for g in dials if (e := endpoint_of(g.dstchannel)) is not None))
        answered_by = endpoint_of(min(answered, key=lambda g: g.answer).dstchannel) if answered else None
        answered_at = min(g.answer for g in answered) if answered else None
        if answered:
            outcome = CallOutcome.ANSWERED
        elif linkedid in voicemails:
            outcome = CallOutcome.VOICEMAIL
        elif dials and all(g.disposition in _BUSY for g in dials):
            outcome = CallOutcome.BUSY
        elif ended - started < abandon_seconds:
            outcome = CallOutcome.ABANDONED
        else:
            outcome = CallOutcome.MISSED
        out.append(
            CallRecord(
                call_id=linkedid,
                direction=CallDirection.INBOUND,
                caller=caller,
                caller_name=stored_name(name),
                dialled=first.dst if first.dst not in ("s", "") else "",
                started_at=started,
                extensions_rung=rung,
                answered_by=answered_by,
                answered_at=answered_at,
                ended_at=ended,
                outcome=outcome,
                voicemail_path=voicemails.get(linkedid),
                hangup_cause="recovered from Asterisk's call records",
                last_answered_by=answered_by,
            )
        )
    out.sort(key=lambda r: r.ended_at or 0.0)
    return out


@dataclass(frozen=True, slots=True)
class RecordingFile:
    """A file in the recordings directory."""

    path: str
    name: str
    linkedid: str | None
    mtime: float
    size: int

    @property
    def external_id(self) -> str:
        """The voicemail event's external id: the live path's for dialplan names, else the file name."""
        return f"{self.linkedid}:voicemail" if self.linkedid else f"recording:{self.name}"


def linkedid_of(name: str) -> str | None:
    """The call's linkedid in a dialplan voicemail file name, else None."""
    m = _VM_NAME.match(name)
    return m.group("linkedid") if m else None


def scan_recordings(directory: Path, *, since: float) -> list[RecordingFile]:
    """Regular files in ``directory`` (not hidden) modified at or after ``since``, oldest first. Blocking."""
    out: list[RecordingFile] = []
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            if st.st_mtime < since:
                continue
            out.append(RecordingFile(entry.path, entry.name, linkedid_of(entry.name), st.st_mtime, st.st_size))
    out.sort(key=lambda r: (r.mtime, r.name))
    return out


def wanted(recordings: Sequence[RecordingFile], *, now: float, active: frozenset[str]) -> list[RecordingFile]:
    """Recordings that are finished: not of a call still up, not written to in the last seconds."""
    return [r for r in recordings if r.linkedid not in active and now - r.mtime >= SETTLE_SECONDS]
