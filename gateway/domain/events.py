"""Every event on the bus, in one place: the daemon's typed vocabulary of what happened.

Each event is a frozen, slotted dataclass named as a noun. Subscribers declare the classes they take
(``bus.subscribe(name, types=(CallRinging, CallEnded))``) and dispatch with ``match`` on the classes, so renaming or
removing a field is a type error in every reader instead of a silently dead screen-pop or webhook. No reader picks
an event by its class name or reads it through ``getattr``.

Each class says who publishes it and who listens today. :data:`Event` is the union of them all; :data:`ALL_EVENTS`
is the tuple for a subscriber that really takes everything (tests, the voice benchmark).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.domain.calls import CallDirection, CallOutcome, CallRecord
from gateway.domain.models import ConversationSummary, TimelineEvent

#: Transcription job statuses that still need work (they make up the backlog).
TRANSCRIPTION_ACTIVE_STATES = ("pending", "running", "waiting_model")

# -- conversation ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineEventAdded:
    """A timeline entry was durably stored.

    Published by: ``ConversationService`` (ingest, staff notes and replies, automated entries) and the SMS inbound
    adapter (STOP/START confirmations). Listened to by: the web hub (staff console live updates, the chat push of a
    staff reply to the visitor, webhooks ``message.received`` / ``voicemail.received`` / ``call.*``).
    """

    conversation_id: int
    contact_id: int
    event: TimelineEvent


@dataclass(frozen=True, slots=True)
class ConversationUpdated:
    """Intent, next step, owner or another conversation field changed (``fields`` holds the new values).

    Published by: ``ConversationService.update_conversation``. Listened to by: the web hub (staff consoles).
    """

    conversation_id: int
    fields: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ContactsMerged:
    """Two contacts became one (or were split again when ``undone``).

    Published by: ``ConversationService`` (a shared observed identity, a staff merge, an undo). Listened to by: the
    web hub (staff consoles re-read both conversations).
    """

    merge_id: int
    kept_contact_id: int
    merged_contact_id: int
    kept_conversation_id: int
    merged_conversation_id: int
    undone: bool = False


@dataclass(frozen=True, slots=True)
class OutboxQueued:
    """An outbound message waits in the outbox.

    Published by: ``ConversationService.send`` and the SMS inbound adapter. Listened to by: the SMS channel, which
    wakes its sender (the outbox in the store stays the source of truth).
    """

    outbox_id: int
    conversation_id: int
    channel: str


# -- calls -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRinging:
    """A staff phone is ringing: the screen-pop for ``extension`` shows ``summary``.

    ``summary`` is None when the caller is unknown or withheld, or the lookup was too slow.
    Published by: the voice channel. Listened to by: the web hub (screen-pop on that extension's consoles).
    """

    extension: str
    call_id: str
    caller: str
    conversation_id: int | None
    summary: ConversationSummary | None
    staff: str | None = None
    caller_name: str = ""
    direction: CallDirection = CallDirection.INBOUND
    occurred_at: float = 0.0


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """``extension`` picked up: every other screen-pop of this call can close.

    Published by: the voice channel. Listened to by: the web hub.
    """

    extension: str
    call_id: str
    caller: str
    conversation_id: int | None
    staff: str | None = None
    occurred_at: float = 0.0


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over; ``call`` has its outcome, who answered and the durations.

    Published by: the voice channel. Listened to by: the web hub (the card becomes the call's entry) and webhooks
    (``call.completed``).
    """

    call_id: str
    caller: str
    conversation_id: int | None
    outcome: CallOutcome
    call: CallRecord
    recovered: bool = False
    """True when the call happened while the gateway was away and was found afterwards in Asterisk's call records:
    ``call.ended_at`` is the original time, so a rule can judge whether it is too old."""


@dataclass(frozen=True, slots=True)
class VoicemailRecorded:
    """A voicemail WAV was stored and put on the timeline as event ``event_id``.

    Published by: the voice channel. Listened to by: the transcription service (queues a job) and webhooks
    (``voicemail.recorded``).
    """

    call_id: str
    caller: str
    conversation_id: int
    event_id: int
    path: str
    duration: float
    recovered: bool = False
    """True when the recording was found in the recordings directory after the gateway was away."""


@dataclass(frozen=True, slots=True)
class LiveTranscript:
    """Words heard so far on an answered call, one side at a time (partial text, replaced as it grows).

    Published by: the voice channel's live transcriber. Listened to by: the web hub (the screen-pop of the staff
    member on the call).
    """

    call_id: str
    conversation_id: int | None
    extension: str | None
    side: str
    """``caller`` or ``staff``."""
    text: str
    final: bool = False


# -- transcription -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TranscriptReady:
    """A voicemail's transcript is on the timeline.

    Published by: the transcription service. Listened to by: no daemon part yet (the transcript itself reaches
    consoles as a ``TimelineEventAdded``); tests wait on it.
    """

    conversation_id: int
    voicemail_event_id: int
    transcript_event_id: int
    intent: str | None
    urgent: bool
    keywords: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TranscriptionFailed:
    """A voicemail could not be transcribed (it stays stored and playable).

    Published by: the transcription service. Listened to by: no daemon part yet; tests wait on it.
    """

    conversation_id: int
    voicemail_event_id: int
    job_id: int
    error: str


@dataclass(frozen=True, slots=True)
class TranscriptionHealth:
    """Is transcription working? Published on every change of the workers or the model.

    Published by: the transcription service. Listened to by: no daemon part yet (the status page reads the
    service's snapshot); tests wait on it.
    """

    model_path: str
    model_error: str | None
    workers: int
    workers_alive: int
    worker_pids: tuple[int, ...]
    last_error: str | None
    last_error_at: float | None
    missing_keywords: tuple[str, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def backlog(self) -> int:
        """Jobs still to do (pending, running, waiting for a model)."""
        return sum(self.counts.get(s, 0) for s in TRANSCRIPTION_ACTIVE_STATES)


# -- SMS ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModemHealth:
    """The modem's state (published on every change and every probe).

    Published by: the SMS channel. Listened to by: no daemon part yet (the status page reads the channel's
    snapshot); tests wait on it.
    """

    device: str | None
    connected: bool
    connected_since: float | None
    profile: str
    signal_dbm: int | None = None
    operator: str | None = None
    registration: int | None = None
    registration_text: str | None = None
    imei: str | None = None
    imsi: str | None = None
    iccid: str | None = None
    sim_used: int | None = None
    sim_total: int | None = None
    storage_percent: int | None = None
    last_error: str | None = None
    garbage_lines: int = 0
    reopen_count: int = 0


@dataclass(frozen=True, slots=True)
class SmsOutboundState:
    """An outbound SMS changed state (sending, sent, delivered, failed, expired, unknown).

    Published by: the SMS outbound sender. Listened to by: no daemon part yet (the outbox row holds the state);
    ``bench/sms_bench.py`` and tests wait on it.
    """

    outbox_id: int
    conversation_id: int | None
    state: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class SmsStorageWarning:
    """Message storage on the SIM/modem is fuller than the configured threshold.

    Published by: the SMS channel. Listened to by: no daemon part yet (it is also logged); tests wait on it.
    """

    storage: str
    used: int
    total: int


# -- continuity --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StalledThread:
    """A customer has waited longer than ``continuity.stalled_business_hours`` for an answer (for staff only).

    Published by: the continuity engine. Listened to by: no daemon part yet (it is on the timeline and logged).
    """

    conversation_id: int
    waiting_since: float
    business_hours_waited: float


Event = (
    TimelineEventAdded
    | ConversationUpdated
    | ContactsMerged
    | OutboxQueued
    | CallRinging
    | CallAnswered
    | CallEnded
    | VoicemailRecorded
    | LiveTranscript
    | TranscriptReady
    | TranscriptionFailed
    | TranscriptionHealth
    | ModemHealth
    | SmsOutboundState
    | SmsStorageWarning
    | StalledThread
)
"""Any bus event."""

ALL_EVENTS: tuple[type[Event], ...] = (
    TimelineEventAdded,
    ConversationUpdated,
    ContactsMerged,
    OutboxQueued,
    CallRinging,
    CallAnswered,
    CallEnded,
    VoicemailRecorded,
    LiveTranscript,
    TranscriptReady,
    TranscriptionFailed,
    TranscriptionHealth,
    ModemHealth,
    SmsOutboundState,
    SmsStorageWarning,
    StalledThread,
)
"""Every event class, for a subscriber that takes them all."""
