"""Calls as the domain sees them: outcomes and the finished call record (the call events are in events.py).

The voice channel (``gateway/channels/voice``) builds these from Asterisk's events and publishes them inside the call
events of :mod:`gateway.domain.events`. Nothing here knows about AMI or AGI.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CallOutcome(StrEnum):
    """How a call ended, from the business's point of view."""

    ANSWERED = "answered"
    """Somebody (any member of the ring group) talked to the caller."""
    MISSED = "missed"
    """Nobody answered and the caller waited past the abandon threshold: a lead to call back."""
    ABANDONED = "abandoned"
    """The caller hung up within the abandon threshold (a few seconds): not a missed lead."""
    VOICEMAIL = "voicemail"
    """The caller left a voicemail."""
    BUSY = "busy"
    """Every phone that was tried was busy (or unreachable) and no voicemail was left."""


class CallDirection(StrEnum):
    """Who started the call."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True, slots=True)
class Transfer:
    """A transfer during a call: ``kind`` is ``blind`` or ``attended``."""

    at: float
    kind: str
    from_extension: str | None
    to_target: str


@dataclass(frozen=True, slots=True)
class CallRecord:
    """Everything known about one call once it ended (or so far, while it runs).

    ``call_id`` is Asterisk's Linkedid of the call. Times are unix seconds. ``talk_seconds`` counts
    from answer to hang-up; ``ring_seconds`` from the start to the answer (or the end).
    """

    call_id: str
    direction: CallDirection
    caller: str
    caller_name: str
    dialled: str
    started_at: float
    extensions_rung: tuple[str, ...] = ()
    answered_by: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    outcome: CallOutcome | None = None
    transfers: tuple[Transfer, ...] = ()
    voicemail_path: str | None = None
    voicemail_seconds: float | None = None
    hangup_cause: str = ""
    conversation_id: int | None = None
    last_answered_by: str | None = None
    """The extension that answered last (after transfers): who handled the caller in the end."""

    @property
    def talk_seconds(self) -> float:
        """Seconds between answer and hang-up (0 when never answered)."""
        if self.answered_at is None or self.ended_at is None:
            return 0.0
        return max(0.0, self.ended_at - self.answered_at)

    @property
    def ring_seconds(self) -> float:
        """Seconds the caller waited before an answer (or before hanging up)."""
        end = self.answered_at if self.answered_at is not None else self.ended_at
        return 0.0 if end is None else max(0.0, end - self.started_at)
