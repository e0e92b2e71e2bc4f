"""Small value types shared by the configuration and every part: :class:`Secret` and the health model.

This module imports only the standard library and nothing from ``gateway``, so the config sections of every layer
(channels, transcription, web) and the supervisor can all use it without import cycles.

The health model: every part of the daemon (store, modem, Asterisk link, transcription, web...) answers ``health()``
with one :class:`Health`: ``ok``, ``degraded`` (working, but something needs attention), ``down`` (not doing its
job) or ``off`` (switched off in the configuration), since when, the cause and the fix in words an office manager can
act on. ``gateway doctor``, the status page and ``/metrics`` all read these same objects.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

#: What a detail value may be: plain scalars only, so a Health is JSON- and Prometheus-ready as it is.
Detail = str | int | float | bool | None


class Secret(str):
    """A string that never prints its value (repr/str show ********). Use ``.reveal()`` to read it."""

    __slots__ = ()

    def reveal(self) -> str:
        """The real value, for the one place that must send it (a login, a PIN)."""
        return str.__str__(self)

    def __repr__(self) -> str:
        return "'********'"

    def __str__(self) -> str:
        return "********"

    def __format__(self, spec: str) -> str:
        return "********"


class HealthState(enum.StrEnum):
    """The verdict of one health check, worst last."""

    OFF = "off"
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"

    @property
    def rank(self) -> int:
        """Ordering for "the worst of": off < ok < degraded < down."""
        return _RANK[self]

    @property
    def metric(self) -> int:
        """The number /metrics exports: 0 ok, 1 degraded, 2 down, -1 off."""
        return {HealthState.OFF: -1, HealthState.OK: 0, HealthState.DEGRADED: 1, HealthState.DOWN: 2}[self]


_RANK = {HealthState.OFF: 0, HealthState.OK: 1, HealthState.DEGRADED: 2, HealthState.DOWN: 3}


class HealthView(TypedDict):
    """A :class:`Health` as /status.json shows it (the state by its value)."""

    name: str
    title: str
    state: str
    cause: str
    fix: str
    since: float | None
    details: dict[str, Detail]


@dataclass(frozen=True, slots=True)
class Health:
    """One part's (or one check's) verdict, with the cause and the fix in words.

    ``name`` is a short machine name (``modem``, ``asterisk``, ``disk``); ``title`` what a person calls it.
    ``since`` is when the part entered this state (epoch seconds) when known. ``fix`` is empty when nothing
    needs doing. ``details`` are the numbers and facts behind the verdict (folded away on the status page,
    exported as gauges on /metrics when numeric).
    """

    name: str
    title: str
    state: HealthState
    cause: str
    fix: str = ""
    since: float | None = None
    details: Mapping[str, Detail] = field(default_factory=dict)

    @property
    def problem(self) -> bool:
        """True when the verdict is degraded or down."""
        return self.state in (HealthState.DEGRADED, HealthState.DOWN)

    def as_dict(self) -> HealthView:
        """JSON-ready form (for /status.json)."""
        return {
            "name": self.name,
            "title": self.title,
            "state": self.state.value,
            "cause": self.cause,
            "fix": self.fix,
            "since": self.since,
            "details": dict(self.details),
        }


Details = Mapping[str, Detail]


def ok(name: str, title: str, cause: str, *, since: float | None = None, details: Details | None = None) -> Health:
    """A healthy verdict."""
    return Health(name, title, HealthState.OK, cause, "", since, dict(details or {}))


def degraded(
    name: str, title: str, cause: str, fix: str, *, since: float | None = None, details: Details | None = None
) -> Health:
    """Working, but something needs attention."""
    return Health(name, title, HealthState.DEGRADED, cause, fix, since, dict(details or {}))


def down(
    name: str, title: str, cause: str, fix: str, *, since: float | None = None, details: Details | None = None
) -> Health:
    """Not doing its job."""
    return Health(name, title, HealthState.DOWN, cause, fix, since, dict(details or {}))


def off(name: str, title: str, cause: str, fix: str = "", *, details: Details | None = None) -> Health:
    """Switched off in the configuration (every surface says so)."""
    return Health(name, title, HealthState.OFF, cause, fix, None, dict(details or {}))


def worst(healths: list[Health] | tuple[Health, ...]) -> HealthState:
    """The worst state among ``healths`` (OK for none)."""
    states = [h.state for h in healths]
    return max(states, key=lambda s: s.rank) if states else HealthState.OK
