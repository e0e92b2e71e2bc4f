"""Restraint: the one place every automated message to a customer passes before it is sent.

Theory of operation: the engine gathers a :class:`History` (automated sends of the last day, customer contacts that
form the current episode, the last human answer) and asks :func:`check` about a proposed send. The answer is
:class:`Allow`, :class:`Defer` (quiet hours: the message waits until they end, it is never dropped) or
:class:`Suppress` with the reason staff will read on the timeline. Checks, in order: opted out (STOP), a person
answered within ``human_quiet_minutes``, then, for texts only (an instant answer in an open chat is not a text), the
per-day cap, the per-episode cap and quiet hours. The automated-SMS budget
and the number-type policy are enforced by the conversation service when the message is queued; the engine records
their refusal the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.continuity.config import ContinuityConfig
from gateway.web import hours

DAY = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class History:
    """What the restraint counts for one conversation (continuity clock times)."""

    sends: Sequence[float] = ()
    """Automated sends of the last 24 hours."""
    contacts: Sequence[float] = ()
    """Customer contacts of the last day, oldest first."""
    human_at: float | None = None
    opted_out: bool = False


@dataclass(frozen=True, slots=True)
class Allow:
    """Send now."""


@dataclass(frozen=True, slots=True)
class Defer:
    """Send at ``until`` instead."""

    until: float
    reason: str


@dataclass(frozen=True, slots=True)
class Suppress:
    """Do not send."""

    reason: str


Verdict = Allow | Defer | Suppress


def episode_start(contacts: Sequence[float], window: float, now: float) -> float | None:
    """Start of the episode the latest contact belongs to: contacts less than ``window`` apart chain together."""
    past = [c for c in contacts if c <= now]
    if not past:
        return None
    start = past[-1]
    for earlier in reversed(past[:-1]):
        if start - earlier >= window:
            break
        start = earlier
    return start


def check(
    config: ContinuityConfig,
    history: History,
    now: float,
    *,
    channel: str,
    timezone: str,
    reply_to_customer: bool = False,
    episode_minutes: float = 30.0,
) -> Verdict:
    """May an automated message go to this customer now?"""
    if history.opted_out:
        return Suppress("the customer opted out (STOP)")
    grace = config.human_quiet_minutes * 60
    if history.human_at is not None and 0 <= now - history.human_at < grace:
        minutes = int((now - history.human_at) // 60)
        return Suppress(f"staff answered {minutes} min ago (no automated message within {config.human_quiet_minutes})")
    if channel != "sms":
        # An instant answer in an open chat is not a text to the customer's phone: the caps count texts only.
        return Allow()
    today = [s for s in history.sends if now - s < DAY]
    if len(today) >= config.max_per_contact_per_day:
        return Suppress(f"daily cap reached: {len(today)} automated messages in 24 h")
    start = episode_start(history.contacts, episode_minutes * 60, now)
    if start is not None:
        in_episode = [s for s in today if s >= start]
        if len(in_episode) >= config.max_per_episode:
            return Suppress(f"episode cap reached: {len(in_episode)} automated message(s) since this episode began")
    if config.quiet_hours and not (reply_to_customer and config.quiet_hours_replies):
        until = hours.quiet_ends(config.quiet_hours, timezone, now)
        if until > now:
            clock = hours.describe_moment(until, timezone, now)
            return Defer(until, f"quiet hours: deferred until {clock.removeprefix('at ')}")
    return Allow()
