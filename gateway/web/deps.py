"""Everything the web layer is given by the supervisor (no channel module is imported here)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.domain.bus import Bus
from gateway.domain.service import ConversationService
from gateway.domain.spine import SpineService
from gateway.health import History
from gateway.leakage.config import LeakageConfig
from gateway.store.db import Store
from gateway.values import Health
from gateway.web.config import WebConfig

if TYPE_CHECKING:
    from gateway.continuity.engine import ContinuityEngine
    from gateway.continuity.promise_keeper import PromiseKeeper
    from gateway.leakage.service import LeakageService
    from gateway.transcribe.service import TranscriptionService

#: ``click_to_call(staff_extension, customer_number)``: ring the staff phone, then dial the customer.
ClickToCall = Callable[[str, str], Awaitable[None]]
#: A status source returns a JSON-ready mapping describing one part (asterisk link, modem, transcription...).
StatusSource = Callable[[], Awaitable[Mapping[str, Any]]]
#: Every part's verdict (see gateway.values.Health); the status page, /status.json and /metrics show them.
HealthSource = Callable[[], Sequence[Health]]


@dataclass
class WebDeps:
    """Dependencies of :func:`gateway.web.app.build_app`.

    ``status_sources`` maps a section name (``"asterisk"``, ``"modem"``, ``"transcription"``, ``"backup"``...) to
    an async callable returning that part's state; numbers in it become Prometheus gauges.
    """

    service: ConversationService
    store: Store
    bus: Bus
    config: WebConfig = field(default_factory=WebConfig)
    click_to_call: ClickToCall | None = None
    status_sources: Mapping[str, StatusSource] = field(default_factory=dict)
    region: str = "US"
    #: False when the gateway has no SMS channel ([sms] enabled = false): the widget then offers no text hand-off.
    sms_available: bool = True
    health: HealthSource | None = None
    history: History | None = None
    spine: SpineService | None = None
    """The conversation spine; the web layer builds one over the same store and bus when not given."""
    continuity: ContinuityEngine | None = None
    """The continuity engine (rules settings view, call recap); None when the rules are off."""
    promises: PromiseKeeper | None = None
    """Staff promises heard on calls and in replies (confirm / dismiss, not kept); built on demand when None."""
    leakage_config: LeakageConfig = field(default_factory=LeakageConfig)
    #: The leakage read model; built from ``store``, ``leakage_config`` and the business hours when None.
    leakage: LeakageService | None = None
    transcription: TranscriptionService | None = None
    """The transcription service (``retry_voicemail``); None when transcription is off: a retry then only requeues
    the job in the store, for the daemon that runs transcription to pick up."""
    #: Build the leakage read model in the background when the web app starts (the daemon does; tests need not).
    leakage_warm: bool = False
