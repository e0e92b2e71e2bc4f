"""The ``[web]`` configuration section: listener, security limits, chat widget, webhooks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from gateway.values import Secret


def _hours() -> dict[str, str]:
    return dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:00-17:00")


@dataclass(frozen=True)
class WebConfig:
    """Settings of the web layer (chat widget, staff console, status page, API)."""

    host: str = field(default="127.0.0.1", metadata={"doc": "address to listen on (put TLS in front)"})
    port: int = field(default=8080, metadata={"doc": "TCP port of the web server"})
    allowed_origins: list[str] = field(
        default_factory=list,
        metadata={"doc": "sites allowed to embed the chat widget, e.g. https://shop.example (own origin is implied)"},
    )
    secure_cookies: bool = field(
        default=True,
        metadata={"doc": "mark session cookies Secure (turn off only for plain-http tests)"},
    )
    session_ttl_seconds: int = field(default=43200, metadata={"doc": "console login lifetime"})
    login_free_failures: int = field(
        default=5,
        metadata={"doc": "wrong passwords per user and client address before further attempts are spaced out"},
    )
    login_address_free_failures: int = field(
        default=30,
        metadata={"doc": "wrong passwords per client address (any user) before further attempts are spaced out"},
    )
    login_delay_seconds: float = field(
        default=1.0, metadata={"doc": "first wait after the free failures; doubles with each further failure"}
    )
    login_max_delay_seconds: float = field(
        default=300.0, metadata={"doc": "longest wait between login attempts (a login is never locked for good)"}
    )
    login_window_seconds: int = field(
        default=900, metadata={"doc": "failures are forgotten after this many seconds without one"}
    )
    retention_days: int = field(
        default=30,
        metadata={
            "doc": "days kept of chat visitors who never wrote and of finished webhook deliveries (pruned hourly)"
        },
    )
    trusted_proxies: list[str] = field(
        default_factory=list,
        metadata={
            "doc": "CIDRs of reverse proxies whose Forwarded/X-Forwarded-For headers are believed, "
            "e.g. 127.0.0.1/32; empty = headers ignored"
        },
    )
    chat_max_frame_bytes: int = field(
        default=16384, metadata={"doc": "largest websocket frame a chat visitor may send"}
    )
    chat_idle_seconds: int = field(
        default=90, metadata={"doc": "close a chat socket that sent nothing (the widget pings) for this long"}
    )
    chat_max_message_chars: int = field(default=2000, metadata={"doc": "longest chat message"})
    chat_new_per_address_per_hour: int = field(
        default=30, metadata={"doc": "new anonymous chats one network address may open per hour"}
    )
    chat_messages_per_minute: int = field(
        default=30, metadata={"doc": "chat messages one network address may send per minute"}
    )
    chat_burst: int = field(default=10, metadata={"doc": "messages allowed in a quick burst"})
    chat_max_sockets: int = field(
        default=2000,
        metadata={"doc": "open chat sockets in all; more are refused with 503 (keep well below the descriptor limit)"},
    )
    chat_handoffs_per_day: int = field(
        default=1,
        metadata={"doc": "texts (continue by text) and call-back requests per visitor and per conversation per day"},
    )
    chat_code_ttl_seconds: int = field(
        default=600, metadata={"doc": "how long the one-time code in the hand-off text can verify the number"}
    )
    chat_code_attempts: int = field(default=5, metadata={"doc": "wrong one-time codes before the code is spent"})
    business_name: str = field(default="Our office", metadata={"doc": "name shown in the widget header"})
    greeting: str = field(default="Hello! How can we help?", metadata={"doc": "first line the widget shows"})
    after_hours_message: str = field(
        default="We are closed now. Leave a message and we will answer when we open, or continue by text.",
        metadata={"doc": "widget notice outside business hours"},
    )
    timezone: str = field(default="UTC", metadata={"doc": "IANA time zone of business and quiet hours"})
    business_hours: dict[str, str] = field(
        default_factory=_hours,
        metadata={"doc": "opening hours per weekday (mon..sun) as HH:MM-HH:MM; missing day = closed"},
    )
    quiet_hours: str = field(
        default="21:00-08:00",
        metadata={"doc": "hours in which the console warns before sending SMS"},
    )
    voicemail_dir: str = field(
        default="/var/spool/gateway/recordings",
        metadata={"doc": "only audio files below this directory are served to staff"},
    )
    webhook_urls: list[str] = field(default_factory=list, metadata={"doc": "URLs that receive signed event webhooks"})
    webhook_secret: Secret = field(
        default=Secret(""),
        metadata={"doc": "HMAC-SHA256 key for X-Gateway-Signature (required with urls)"},
    )
    webhook_max_attempts: int = field(default=10, metadata={"doc": "tries before a webhook is given up"})
    webhook_timeout_seconds: float = field(default=10.0, metadata={"doc": "per-attempt HTTP timeout"})

    def validate(self) -> None:
        """Check values that a type alone cannot."""
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as err:
                raise ValueError(f"trusted_proxies: {cidr!r} is not an address or CIDR such as 10.0.0.0/8") from err
        if self.login_free_failures < 1 or self.login_address_free_failures < 1:
            raise ValueError("login_free_failures and login_address_free_failures must be at least 1")
        if self.login_delay_seconds <= 0 or self.login_max_delay_seconds < self.login_delay_seconds:
            raise ValueError("login_delay_seconds must be positive and at most login_max_delay_seconds")
