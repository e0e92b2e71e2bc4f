"""The ``[sms]`` config section (wired into the config tree by gateway/config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.domain.optout import DEFAULT_HELP, DEFAULT_START, DEFAULT_STOP, OptOutPolicy
from gateway.values import Secret


@dataclass(frozen=True)
class SmsConfig:
    """USB GSM modem settings."""

    enabled: bool = field(default=False, metadata={"doc": "run the SMS channel"})
    device: str = field(
        default="/dev/gateway-modem",
        metadata={"doc": "modem AT port: a path or a glob such as /dev/ttyUSB*; see udev/README.md"},
    )
    profile: str = field(
        default="generic",
        metadata={"doc": "modem profile from hardware/modems (huawei-e3372, simcom-sim800...)"},
    )
    profiles_dir: str = field(
        default="",
        metadata={"doc": "folder of modem profile TOML files; empty: the shipped hardware/modems"},
    )
    baudrate: int = field(default=115200, metadata={"doc": "serial speed (ignored by USB modems)"})
    pin: Secret = field(
        default=Secret(""),
        metadata={"doc": "SIM PIN; tried at most once per start so a wrong PIN never locks the SIM"},
    )
    poll_interval: float = field(
        default=30.0,
        metadata={"doc": "seconds between AT+CMGL polls (new-message notices are unreliable)"},
    )
    probe_interval: float = field(
        default=15.0, metadata={"doc": "seconds between health probes (signal, registration)"}
    )
    command_timeout: float = field(
        default=10.0, metadata={"doc": "seconds a modem may take to answer an ordinary command"}
    )
    send_timeout: float = field(
        default=120.0, metadata={"doc": "seconds an AT+CMGS may take before the result is unknown"}
    )
    multipart_timeout: float = field(
        default=600.0,
        metadata={"doc": "seconds to wait for missing parts before delivering marked incomplete"},
    )
    retry_base: float = field(default=5.0, metadata={"doc": "first retry delay after a transient send error (seconds)"})
    retry_cap: float = field(
        default=600.0, metadata={"doc": "longest retry delay after transient send errors (seconds)"}
    )
    max_attempts: int = field(default=8, metadata={"doc": "send attempts before a message fails for good"})
    sim_warn_percent: int = field(
        default=80, metadata={"doc": "warn when SIM/modem message storage is fuller than this"}
    )
    status_reports: bool = field(default=True, metadata={"doc": "ask the network for delivery reports"})
    validity_minutes: int = field(
        default=1440, metadata={"doc": "how long the network keeps trying to deliver a message"}
    )
    optout_stop: list[str] = field(
        default_factory=lambda: list(DEFAULT_STOP),
        metadata={"doc": "whole-message keywords that opt a number out"},
    )
    optout_start: list[str] = field(
        default_factory=lambda: list(DEFAULT_START),
        metadata={"doc": "whole-message keywords that lift an opt-out"},
    )
    optout_help: list[str] = field(
        default_factory=lambda: list(DEFAULT_HELP),
        metadata={"doc": "whole-message keywords answered with help_reply"},
    )
    stop_reply: str = field(default=OptOutPolicy.stop_reply, metadata={"doc": "the one confirmation sent after STOP"})
    start_reply: str = field(
        default=OptOutPolicy.start_reply, metadata={"doc": "the one confirmation sent after START"}
    )
    help_reply: str = field(default=OptOutPolicy.help_reply, metadata={"doc": "the answer to HELP"})
    automated_per_hour: int = field(
        default=30,
        metadata={"doc": "global budget: automated and visitor-triggered texts queued per rolling hour"},
    )
    automated_per_day: int = field(
        default=200,
        metadata={"doc": "global budget: automated and visitor-triggered texts queued per rolling 24 hours"},
    )

    def optout_policy(self) -> OptOutPolicy:
        """The keyword policy these settings describe."""
        return OptOutPolicy(
            stop=tuple(self.optout_stop),
            start=tuple(self.optout_start),
            help=tuple(self.optout_help),
            stop_reply=self.stop_reply,
            start_reply=self.start_reply,
            help_reply=self.help_reply,
        )

    def validate(self) -> None:
        """Check values that a type alone cannot."""
        if self.automated_per_hour < 0 or self.automated_per_day < 0:
            raise ValueError("automated_per_hour and automated_per_day must be 0 (no automated texts) or more")
