"""The ``[voice]`` config section: AMI link, FastAGI server, routing and staff extensions."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from gateway.errors import ConfigError
from gateway.values import Secret

_GROUP_RE = re.compile(r"^PJSIP/[0-9A-Za-z_-]+(&PJSIP/[0-9A-Za-z_-]+)*$")
_EXT_RE = re.compile(r"^[0-9A-Za-z_-]{1,32}$")
_USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_CONTEXT_RE = re.compile(r"^[A-Za-z0-9_-]{1,79}$")


@dataclass(frozen=True)
class VoiceSettings:
    """Settings of the voice channel (``[voice]`` in the config file)."""

    enabled: bool = field(default=True, metadata={"doc": "Run the voice channel (AMI + FastAGI)."})
    ami_host: str = field(default="127.0.0.1", metadata={"doc": "Asterisk AMI host (loopback)."})
    ami_port: int = field(default=5038, metadata={"doc": "Asterisk AMI TCP port (manager.conf)."})
    ami_username: str = field(default="gateway", metadata={"doc": "AMI user (manager.conf)."})
    ami_secret: Secret = field(default=Secret(""), metadata={"doc": "AMI secret of that user (manager.conf `secret`)."})
    ami_ping_interval: float = field(default=10.0, metadata={"doc": "Seconds between checked AMI keep-alive pings."})
    ami_ping_timeout: float = field(
        default=10.0, metadata={"doc": "Seconds without a Pong before the link is half-open."}
    )
    agi_host: str = field(default="127.0.0.1", metadata={"doc": "FastAGI listen address (keep it on loopback)."})
    agi_port: int = field(default=4573, metadata={"doc": "FastAGI port (dialplan AGI_ADDR)."})
    agi_header_timeout: float = field(default=5.0, metadata={"doc": "Seconds a FastAGI client has to send its header."})
    agi_reply_timeout: float = field(
        default=5.0, metadata={"doc": "Seconds to wait for Asterisk's reply to one AGI command."}
    )
    agi_max_clients: int = field(
        default=200, metadata={"doc": "Concurrent FastAGI sessions; more are refused at once."}
    )
    agi_allowed_peers: list[str] = field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        metadata={"doc": "Addresses/CIDRs allowed to connect to FastAGI (Asterisk's address); others are refused."},
    )
    lookup_budget_ms: int = field(
        default=120, metadata={"doc": "Caller lookup budget; slower lookups get default routing."}
    )
    staff: dict[str, str] = field(
        default_factory=dict,
        metadata={"doc": 'Staff extension -> staff username, e.g. {"201" = "alice"}.'},
    )
    staff_group: str = field(
        default="", metadata={"doc": "Dial string of the ring group (empty: the dialplan default)."}
    )
    abandon_seconds: float = field(default=5.0, metadata={"doc": "Unanswered calls shorter than this are abandoned."})
    label_max_chars: int = field(default=32, metadata={"doc": "Longest label put into CALLERID(name)."})
    click_to_call_context: str = field(
        default="gw-click-to-call", metadata={"doc": "Context click-to-call originates into."}
    )
    click_to_call_ring_s: int = field(default=30, metadata={"doc": "Seconds the staff phone rings on click-to-call."})
    whisper: bool = field(
        default=True,
        metadata={"doc": "Speak a context line to the answering phone before the bridge (press 2: voicemail)."},
    )
    whisper_dir: str = field(
        default="/var/spool/gateway/whisper",
        metadata={"doc": "Cache of spoken whisper lines; Asterisk must read it at the same path (WHISPER_DIR)."},
    )
    whisper_voice: str = field(default="en-us", metadata={"doc": "espeak-ng voice of the whisper (e.g. en-us, ko)."})
    whisper_off_extensions: list[str] = field(
        default_factory=list, metadata={"doc": 'Staff extensions that never hear a whisper, e.g. ["203"].'}
    )
    whisper_ring_group: bool = field(
        default=True, metadata={"doc": "Whisper also when the whole ring group rings (false: only sticky routing)."}
    )
    live_transcribe: bool = field(
        default=True,
        metadata={"doc": "Transcribe answered calls live, both sides, through ARI (needs voice.ari_password)."},
    )
    live_safety_recording: bool = field(
        default=True,
        metadata={
            "doc": "While calls are transcribed live, Asterisk also records each answered inbound call into"
            " recordings_dir, so a link to ARI lost mid-call loses no words; deleted after the call when live"
            " audio covered all of it (while ARI is down at the answer, calls are always recorded)."
        },
    )
    consent_announcement: str = field(
        default="This call is transcribed on our own system so we can help you better.",
        metadata={
            "doc": "Said to the caller when live transcription starts (spoken by espeak-ng in whisper_voice);"
            " empty = no announcement. Check the law where your callers are before turning it off."
        },
    )
    live_workers: int = field(
        default=2, metadata={"doc": "Worker processes for live transcription (each holds the speech model once)."}
    )
    ari_url: str = field(default="http://127.0.0.1:8088", metadata={"doc": "Asterisk ARI base URL (loopback)."})
    ari_username: str = field(default="gateway-ari", metadata={"doc": "ARI user (ari.conf)."})
    ari_password: Secret = field(
        default=Secret(""), metadata={"doc": "ARI password of that user; empty = no live transcription."}
    )
    cdr_file: str = field(
        default="/var/log/gateway-asterisk/cdr-custom/gateway-calls.csv",
        metadata={
            "doc": "Asterisk's call records (asterisk-config/cdr_custom.conf), read at start and after every"
            " AMI reconnect to recover calls made while the gateway was away; empty = do not recover calls."
        },
    )
    recordings_dir: str = field(
        default="/var/spool/gateway/recordings",
        metadata={
            "doc": "Voicemail recordings directory (RECORDINGS_DIR); scanned for voicemails left while the"
            " gateway was away; empty = do not scan."
        },
    )
    recovery_window_hours: float = field(
        default=168.0,
        metadata={"doc": "Calls and recordings older than this many hours are not recovered."},
    )

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the key and the fix if a value cannot work."""
        for ext, user in self.staff.items():
            if not _EXT_RE.match(ext):
                raise ConfigError(f"voice.staff: extension {ext!r} must be 1-32 letters, digits, '_' or '-'")
            if not _USER_RE.match(user):
                raise ConfigError(f"voice.staff: username {user!r} for {ext} is not valid")
        if self.staff_group and not _GROUP_RE.match(self.staff_group):
            raise ConfigError(f"voice.staff_group = {self.staff_group!r}: use PJSIP/<ext>&PJSIP/<ext>...")
        if not _CONTEXT_RE.match(self.click_to_call_context):
            raise ConfigError("voice.click_to_call_context: letters, digits, '_' and '-' only")
        for cidr in self.agi_allowed_peers:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as err:
                raise ConfigError(f"voice.agi_allowed_peers: {cidr!r} is not an address or CIDR") from err
        self._validate_whisper()
        self._validate_live()
        if self.lookup_budget_ms <= 0 or self.lookup_budget_ms > 190:
            raise ConfigError("voice.lookup_budget_ms must be 1..190 so a call is answered within 200 ms")
        if not 1 <= self.label_max_chars <= 80:
            raise ConfigError("voice.label_max_chars must be between 1 and 80")
        if self.recovery_window_hours <= 0:
            raise ConfigError("voice.recovery_window_hours must be positive (168 = one week)")
        if self.ami_ping_interval + self.ami_ping_timeout > 30:
            raise ConfigError(
                "voice.ami_ping_interval + voice.ami_ping_timeout must stay <= 30 s "
                "so a half-open AMI link is noticed within 30 s"
            )

    def _validate_live(self) -> None:
        if self.live_transcribe and not re.fullmatch(
            r"https?://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/?", self.ari_url
        ):
            raise ConfigError(
                f"voice.ari_url = {self.ari_url!r}: ARI carries call audio; keep it on loopback "
                "(http://127.0.0.1:8088) or set voice.live_transcribe = false"
            )

    def _validate_whisper(self) -> None:
        for ext in self.whisper_off_extensions:
            if not _EXT_RE.match(ext):
                raise ConfigError(f"voice.whisper_off_extensions: extension {ext!r} must be 1-32 letters or digits")
        if self.whisper and not self.whisper_dir.startswith("/"):
            raise ConfigError(
                f"voice.whisper_dir = {self.whisper_dir!r}: use an absolute path Asterisk can read, "
                "or set voice.whisper = false"
            )
        if not re.fullmatch(r"[A-Za-z0-9_+-]{1,32}", self.whisper_voice):
            raise ConfigError(f"voice.whisper_voice = {self.whisper_voice!r}: an espeak-ng voice name such as en-us")
