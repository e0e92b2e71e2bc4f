"""The ``[leakage]`` configuration section: thresholds of the leakage metrics, the ROI inputs, the weekly digest."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.web.hours import DAYS


@dataclass(frozen=True)
class LeakageConfig:
    """What counts as a conversation that slipped through, and what one is worth.

    Every threshold is business time: the clock runs only inside ``[web] business_hours`` (in ``[web] timezone``).
    """

    missed_call_minutes: int = field(
        default=30, metadata={"doc": "a missed call must be returned (staff call or text) within this many minutes"}
    )
    voicemail_minutes: int = field(
        default=60, metadata={"doc": "a voicemail must be returned within this many business minutes"}
    )
    sms_wait_hours: float = field(
        default=4.0, metadata={"doc": "a customer's text may wait this many business hours for a human answer"}
    )
    chat_idle_minutes: int = field(
        default=30, metadata={"doc": "a chat ends after this many minutes without a chat message"}
    )
    response_horizon_days: int = field(
        default=14, metadata={"doc": "a first response later than this many days counts as none"}
    )
    fact_questions: dict[str, str] = field(
        default_factory=lambda: {
            "name": "your name|who am i speaking|who is this",
            "address": "the address|your address|where do you live|where are you located",
            "availability": "a time that suits you|when are you available|what time works|when would suit",
            "callback_number": "the best number|number to reach you|your number|your phone number",
        },
        metadata={
            "doc": "phrases (separated by |) that make an outbound question ask for a fact; asking for one "
            "already captured counts as asked twice"
        },
    )
    close_rate: float = field(
        default=0.3, metadata={"doc": "share of recovered conversations that become a job (ROI estimate)"}
    )
    average_job_value: float = field(
        default=0.0, metadata={"doc": "average value of a job (ROI estimate); 0 = unknown"}
    )
    currency: str = field(default="", metadata={"doc": "currency sign shown with the ROI estimate, e.g. $"})
    digest_enabled: bool = field(
        default=False, metadata={"doc": "post the week's leakage summary as a signed webhook (leakage.weekly)"}
    )
    digest_weekday: str = field(default="mon", metadata={"doc": "day the weekly digest is posted (mon..sun)"})
    digest_hour: int = field(default=8, metadata={"doc": "local hour (0-23) the weekly digest is posted"})

    def validate(self) -> None:
        """Raise ValueError naming what is wrong."""
        for name in ("missed_call_minutes", "voicemail_minutes", "chat_idle_minutes", "response_horizon_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.sms_wait_hours <= 0:
            raise ValueError("sms_wait_hours must be more than 0")
        if not 0 <= self.close_rate <= 1:
            raise ValueError("close_rate is a share between 0 and 1 (e.g. 0.3)")
        if self.average_job_value < 0:
            raise ValueError("average_job_value cannot be negative")
        if self.digest_weekday not in DAYS:
            raise ValueError(f"digest_weekday must be one of {', '.join(DAYS)}")
        for name, phrases in self.fact_questions.items():
            if not [p for p in phrases.split("|") if p.strip()]:
                raise ValueError(f'fact_questions.{name} has no phrase: write e.g. "your name|who is this"')
        if not 0 <= self.digest_hour <= 23:
            raise ValueError("digest_hour must be 0-23")
