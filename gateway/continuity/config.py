"""The ``[continuity]`` configuration section: which rules run, their timing, their templates, and the restraint.

Every rule can be switched off with its ``*_enabled`` key. Templates use named variables in braces (see
:data:`gateway.continuity.templates.VARIABLES`); a template naming an unknown variable fails the start with the key
that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class ContinuityConfig:
    """Rules that act on the conversation's memory, and the restraint every automated message passes."""

    enabled: bool = field(default=True, metadata=_doc("run the continuity rules at all (false: no automated texts)"))
    business_name: str = field(
        default="", metadata=_doc("name used in automated texts ({business_name}); empty = web.business_name")
    )
    closed_dates: list[str] = field(
        default_factory=list,
        metadata=_doc('dates the office is closed (YYYY-MM-DD), e.g. ["2026-12-24"]; reopening times skip them'),
    )
    holiday_country: str = field(
        default="",
        metadata=_doc('public holidays of this country are closed days (holidays package), e.g. "US", "DE", "US-CA"'),
    )
    # -- restraint ------------------------------------------------------------------------------------------------
    max_per_contact_per_day: int = field(
        default=3, metadata=_doc("most automated messages one contact gets in 24 hours, across all rules")
    )
    max_per_episode: int = field(
        default=1,
        metadata=_doc("most automated messages per episode (contacts closer than spine.episode_window_minutes)"),
    )
    human_quiet_minutes: int = field(
        default=60, metadata=_doc("no automated message within this many minutes of a staff reply or call")
    )
    quiet_hours: str = field(
        default="21:00-08:00",
        metadata=_doc("automated SMS in these hours (business time zone) wait until they end; empty = never quiet"),
    )
    quiet_hours_replies: bool = field(
        default=False,
        metadata=_doc("let an instant answer to a customer's own message through quiet hours (they are awake)"),
    )
    # -- missed-call text-back ----------------------------------------------------------------------------------
    missed_call_enabled: bool = field(default=True, metadata=_doc("text back after a missed call"))
    missed_call_delay_seconds: int = field(
        default=180, metadata=_doc("wait this long first; a call back, a reply or a voicemail in between cancels it")
    )
    missed_call_cooldown_minutes: int = field(
        default=240, metadata=_doc("at most one missed-call text per number in this many minutes")
    )
    missed_call_template: str = field(
        default="Sorry we missed your call{intent_phrase}. Reply here to text us, or we will call you back "
        "{next_slot}. - {business_name}",
        metadata=_doc("text sent after a missed call"),
    )
    internal_max_digits: int = field(
        default=6, metadata=_doc("numbers with at most this many digits are internal extensions: never texted")
    )
    # -- voicemail acknowledgement ----------------------------------------------------------------------------------
    voicemail_enabled: bool = field(default=True, metadata=_doc("acknowledge a voicemail by text"))
    voicemail_min_confidence: float = field(
        default=0.6, metadata=_doc("transcript confidence (0-1) needed to name what was heard")
    )
    voicemail_wait_seconds: int = field(
        default=300, metadata=_doc("if no transcript arrives within this time, send the generic acknowledgement")
    )
    voicemail_template: str = field(
        default="We got your message about {heard}. We will get back to you {next_slot}. - {business_name}",
        metadata=_doc("acknowledgement naming what was heard"),
    )
    voicemail_generic_template: str = field(
        default="We got your voicemail and will get back to you {next_slot}. - {business_name}",
        metadata=_doc("acknowledgement when the transcript is missing or unsure"),
    )
    # -- chat -> SMS continuation -------------------------------------------------------------------------------------
    chat_sms_enabled: bool = field(default=True, metadata=_doc("first text after a visitor picks 'continue by text'"))
    chat_sms_template: str = field(
        default="{business_name}: continuing our chat{intent_phrase}. {quote} We can see you {next_slots}. "
        "{missing_ask}",
        metadata=_doc("the continuation text; {missing_ask} asks only for facts not yet known"),
    )
    wanted_facts: list[str] = field(
        default_factory=lambda: ["name", "availability"],
        metadata=_doc("facts {missing_ask} asks for when they are not captured yet"),
    )
    fact_questions: dict[str, str] = field(
        default_factory=lambda: {
            "name": "your name",
            "availability": "a time that suits you",
            "address": "the address",
            "callback_number": "the best number to reach you",
        },
        metadata=_doc("how {missing_ask} names each wanted fact"),
    )
    # -- after-hours reply --------------------------------------------------------------------------------------------
    after_hours_enabled: bool = field(default=True, metadata=_doc("answer chat and SMS outside business hours"))
    after_hours_template: str = field(
        default="Thanks for your message. We are closed now and reopen {reopen_time}; we will answer then. "
        "- {business_name}",
        metadata=_doc("after-hours reply with the honest reopening time"),
    )
    # -- call me at a time ------------------------------------------------------------------------------------------
    call_me_enabled: bool = field(
        default=True, metadata=_doc("call the customer back at the slot they picked (owner's phone first)")
    )
    call_me_retries: int = field(default=2, metadata=_doc("extra attempts when nobody could be reached"))
    call_me_retry_minutes: int = field(default=5, metadata=_doc("minutes between call-back attempts"))
    call_me_extension: str = field(
        default="",
        metadata=_doc(
            "extension rung when the conversation has no owner with a phone; the chat widget offers call-back"
            " times only when it is set"
        ),
    )
    call_me_failed_template: str = field(
        default="We tried to call you back but could not reach you. Reply here with a better time. - {business_name}",
        metadata=_doc("text after every call-back attempt failed"),
    )
    # -- call recap ---------------------------------------------------------------------------------------------------
    recap_enabled: bool = field(default=True, metadata=_doc("staff can send a one-click recap text after a call"))
    recap_template: str = field(
        default="Thanks for talking with us{intent_phrase}. Next step: {next_step}{next_step_due}. - {business_name}",
        metadata=_doc("the recap text staff send with one click"),
    )
    # -- stalled-thread alert -----------------------------------------------------------------------------------------
    stalled_enabled: bool = field(default=True, metadata=_doc("alert staff (never the customer) about waiting threads"))
    stalled_business_hours: float = field(
        default=4.0, metadata=_doc("a customer waiting longer than this many business hours raises an alert")
    )
    stalled_check_seconds: int = field(default=300, metadata=_doc("how often waiting threads are checked"))

    def validate(self) -> None:
        """Check ranges and templates (errors name the key)."""
        from gateway.continuity.templates import check_template  # noqa: PLC0415 - avoids a cycle at import
        from gateway.web.hours import ClosedDates, parse_span  # noqa: PLC0415

        for key in (
            "max_per_contact_per_day",
            "max_per_episode",
            "human_quiet_minutes",
            "missed_call_delay_seconds",
            "missed_call_cooldown_minutes",
            "voicemail_wait_seconds",
            "call_me_retries",
            "call_me_retry_minutes",
            "internal_max_digits",
        ):
            if getattr(self, key) < 0:
                raise ValueError(f"continuity.{key} must be 0 or more")
        if self.stalled_check_seconds < 1:
            raise ValueError("continuity.stalled_check_seconds must be at least 1")
        if not 0.0 <= self.voicemail_min_confidence <= 1.0:
            raise ValueError("continuity.voicemail_min_confidence must be between 0 and 1")
        if self.quiet_hours:
            parse_span(self.quiet_hours, "continuity.quiet_hours")
        ClosedDates(self.closed_dates, self.holiday_country)
        for key in TEMPLATE_KEYS:
            check_template(getattr(self, key), f"continuity.{key}")
        for name in self.wanted_facts:
            if name not in self.fact_questions:
                raise ValueError(
                    f"continuity.wanted_facts names {name!r} but continuity.fact_questions has no wording for it"
                )


TEMPLATE_KEYS = (
    "missed_call_template",
    "voicemail_template",
    "voicemail_generic_template",
    "chat_sms_template",
    "after_hours_template",
    "call_me_failed_template",
    "recap_template",
)
"""Config keys that hold templates (checked at start, shown in the console's settings view)."""
