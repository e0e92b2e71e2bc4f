"""Bus events published by the SMS channel."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModemHealth:
    """The modem's state for the status page (published on every change and every probe)."""

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


@dataclass(frozen=True)
class SmsOutboundState:
    """An outbound SMS changed state (sending, sent, delivered, failed, expired, unknown)."""

    outbox_id: int
    conversation_id: int | None
    state: str
    detail: str | None = None


@dataclass(frozen=True)
class SmsStorageWarning:
    """Message storage on the SIM/modem is fuller than the configured threshold."""

    storage: str
    used: int
    total: int
