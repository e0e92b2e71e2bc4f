"""Configuration: one TOML file loaded into a typed, frozen tree and validated at start.

Theory of operation: every section is a frozen dataclass whose fields carry their default and a one-line doc
(``metadata={"doc": ...}``). The loader walks the parsed TOML against those dataclasses, so the same definitions give
type checking, "did you mean" for unknown keys, the commented ``default.toml``, ``gateway show-config`` and the
README's configuration table (a test keeps the three in step). Errors name the file, the key, the bad value and the
fix. Secrets are :class:`Secret` strings that print as ``********`` everywhere, including ``show-config`` and logs.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError
from gateway.values import Secret

if TYPE_CHECKING:  # the section classes are imported lazily at run time (keeps `gateway --help` fast)
    from gateway.channels.sms.config import SmsConfig
    from gateway.channels.voice.settings import VoiceSettings
    from gateway.continuity.config import ContinuityConfig
    from gateway.domain.intent import IntentConfig
    from gateway.domain.limits import NumberPolicy
    from gateway.domain.spine import SpineConfig
    from gateway.leakage.config import LeakageConfig
    from gateway.transcribe.config import TranscribeConfig
    from gateway.web.config import WebConfig

__all__ = ["DEFAULT_PATH", "Config", "GatewaySection", "Secret", "StoreSection", "load", "parse", "render"]

DEFAULT_PATH = Path("/etc/gateway/gateway.toml")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclasses.dataclass(frozen=True)
class GatewaySection:
    """Daemon-wide settings."""

    data_dir: str = dataclasses.field(
        default="var", metadata=_doc("where the database, backups and runtime files live (relative: to the cwd)")
    )
    default_region: str = dataclasses.field(
        default="US", metadata=_doc("ISO country code used to read phone numbers written without +country code")
    )
    log_level: str = dataclasses.field(default="INFO", metadata=_doc("DEBUG, INFO, WARNING or ERROR"))
    log_format: str = dataclasses.field(
        default="text", metadata=_doc("text (for the journal) or json (one object per line)")
    )
    shutdown_timeout: float = dataclasses.field(
        default=10.0, metadata=_doc("seconds allowed for a clean stop before remaining tasks are cancelled")
    )
    sms_number_types: list[str] = dataclasses.field(
        default_factory=lambda: ["mobile", "fixed_line_or_mobile"],
        metadata=_doc(
            "number types automated and visitor-triggered texts may go to (libphonenumber: mobile, "
            "fixed_line_or_mobile, fixed_line, toll_free, premium_rate, shared_cost, voip, satellite...)"
        ),
    )
    dial_number_types: list[str] = dataclasses.field(
        default_factory=lambda: ["mobile", "fixed_line_or_mobile", "fixed_line"],
        metadata=_doc("number types click-to-call and call-me may dial (same names as sms_number_types)"),
    )
    allowed_regions: list[str] = dataclasses.field(
        default_factory=list,
        metadata=_doc('countries that may be texted or dialled; empty = default_region only; ["*"] = any'),
    )
    staff_number_check: str = dataclasses.field(
        default="warn",
        metadata=_doc(
            "a staff text to a number outside the policy: warn (sent, warning on the timeline), "
            "confirm (sent only when confirmed) or refuse"
        ),
    )

    def validate(self) -> None:
        """Check values that a type alone cannot."""
        from gateway.domain.phone import is_region  # noqa: PLC0415 - avoids importing phonenumbers for --help

        if not is_region(self.default_region):
            raise ValueError(f"{self.default_region!r} is not a region code; use an ISO code such as US, GB, DE, KR")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError(f"{self.log_level!r} is not a log level; use DEBUG, INFO, WARNING or ERROR")
        if self.log_format not in {"text", "json"}:
            raise ValueError(f"{self.log_format!r} is not a log format; use text or json")
        if self.shutdown_timeout <= 0:
            raise ValueError("must be a positive number of seconds")
        if self.staff_number_check not in {"warn", "confirm", "refuse"}:
            raise ValueError(f"staff_number_check {self.staff_number_check!r}: use warn, confirm or refuse")
        for region in self.allowed_regions:
            if region != "*" and not is_region(region):
                raise ValueError(f"allowed_regions: {region!r} is not a region code; use ISO codes such as US, CA")
        self.number_policy()

    def number_policy(self) -> NumberPolicy:
        """The :class:`gateway.domain.limits.NumberPolicy` these settings describe (ValueError names a bad type)."""
        from gateway.domain.limits import NumberPolicy  # noqa: PLC0415 - avoids importing phonenumbers for --help

        return NumberPolicy.build(
            self.default_region, self.sms_number_types, self.dial_number_types, self.allowed_regions
        )


@dataclasses.dataclass(frozen=True)
class StoreSection:
    """The SQLite conversation store."""

    path: str = dataclasses.field(default="", metadata=_doc("database file; empty = <gateway.data_dir>/gateway.db"))
    readers: int = dataclasses.field(default=2, metadata=_doc("read connections beside the single writer"))
    max_batch: int = dataclasses.field(default=1000, metadata=_doc("most writes grouped into one commit"))
    max_body_chars: int = dataclasses.field(
        default=10000, metadata=_doc("longest message, note or transcript accepted (characters)")
    )
    backup_dir: str = dataclasses.field(
        default="", metadata=_doc("where `gateway db backup` writes by default; empty = <data_dir>/backups")
    )
    backup_interval_hours: float = dataclasses.field(
        default=24.0, metadata=_doc("the daemon makes an online backup this often; 0 = no scheduled backups")
    )
    backup_keep: int = dataclasses.field(
        default=14, metadata=_doc("scheduled backups kept (older ones are deleted; manual ones never)")
    )

    def validate(self) -> None:
        """Check ranges."""
        if self.readers < 1 or self.max_batch < 1 or self.max_body_chars < 1:
            raise ValueError("readers, max_batch and max_body_chars must be at least 1")
        if self.backup_interval_hours < 0 or self.backup_keep < 1:
            raise ValueError("backup_interval_hours must be 0 or more and backup_keep at least 1")


def _section_types() -> dict[str, type]:
    """Section name -> dataclass. Channel sections live next to their channel."""
    from gateway.channels.sms.config import SmsConfig  # noqa: PLC0415
    from gateway.channels.voice.settings import VoiceSettings  # noqa: PLC0415
    from gateway.continuity.config import ContinuityConfig  # noqa: PLC0415
    from gateway.domain.intent import IntentConfig  # noqa: PLC0415
    from gateway.domain.spine import SpineConfig  # noqa: PLC0415
    from gateway.leakage.config import LeakageConfig  # noqa: PLC0415
    from gateway.transcribe.config import TranscribeConfig  # noqa: PLC0415
    from gateway.web.config import WebConfig  # noqa: PLC0415

    return {
        "gateway": GatewaySection,
        "store": StoreSection,
        "sms": SmsConfig,
        "voice": VoiceSettings,
        "transcribe": TranscribeConfig,
        "intent": IntentConfig,
        "spine": SpineConfig,
        "web": WebConfig,
        "continuity": ContinuityConfig,
        "leakage": LeakageConfig,
    }


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole configuration tree."""

    source: str
    gateway: GatewaySection
    store: StoreSection
    sms: SmsConfig
    voice: VoiceSettings
    transcribe: TranscribeConfig
    intent: IntentConfig
    spine: SpineConfig
    web: WebConfig
    continuity: ContinuityConfig
    leakage: LeakageConfig

    @property
    def data_dir(self) -> Path:
        """The data directory, absolute."""
        return Path(self.gateway.data_dir).expanduser().absolute()

    @property
    def db_path(self) -> Path:
        """The database file, absolute."""
        if self.store.path:
            return Path(self.store.path).expanduser().absolute()
        return self.data_dir / "gateway.db"

    @property
    def backup_dir(self) -> Path:
        """Default backup directory."""
        if self.store.backup_dir:
            return Path(self.store.backup_dir).expanduser().absolute()
        return self.data_dir / "backups"

    def sections(self) -> Iterator[tuple[str, object]]:
        """(name, section object) in file order."""
        for name in _section_types():
            yield name, getattr(self, name)


# -- loading ---------------------------------------------------------------------------------------------------------


def default_toml_text() -> str:
    """The shipped, commented default configuration."""
    return resources.files("gateway").joinpath("default.toml").read_text(encoding="utf-8")


BUILTIN_SOURCE = "<built-in default.toml>"


def resolve_path(explicit: str | Path | None) -> tuple[str, str]:
    """Which file to read: --config, else /etc/gateway/gateway.toml, else the shipped defaults.

    Returns (source name, text).
    """
    if explicit is not None:
        path = Path(explicit)
        try:
            return str(path), path.read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise ConfigError(f"{path}: no such config file. Give an existing file to --config.") from err
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: cannot read the config file: {err}") from err
    if DEFAULT_PATH.exists():
        return resolve_path(DEFAULT_PATH)
    return BUILTIN_SOURCE, default_toml_text()


def load(explicit: str | Path | None = None) -> Config:
    """Load and validate the configuration (see :func:`resolve_path` for which file).

    A file without a single setting (zero bytes, blank, only comments) is an error: it almost always means a
    copy or a deployment went wrong, and running on the built-in defaults would start a new, empty database in
    ./var beside the real one.
    """
    source, text = resolve_path(explicit)
    if source != BUILTIN_SOURCE and not _has_settings(text):
        raise ConfigError(
            f"{source}: the config file has no settings ({'empty' if not text.strip() else 'only comments'}); "
            "the gateway would run on its built-in defaults with a new database in ./var. Put the settings there "
            "(`gateway show-config --defaults` prints a commented starting point) or leave --config out to run "
            "on the defaults on purpose."
        )
    return parse(text, source)


def _has_settings(text: str) -> bool:
    try:
        return bool(tomllib.loads(text))
    except tomllib.TOMLDecodeError:
        return True  # parse() reports the syntax error with its position


def parse(text: str, source: str = "<string>") -> Config:
    """Parse TOML text into a validated :class:`Config`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            f"{source}: not valid TOML: {err}. Fix the syntax there (strings need quotes, tables are [name], "
            "one key = value per line); `gateway check-config` re-checks it."
        ) from err
    types_ = _section_types()
    for name, value in raw.items():
        if name not in types_:
            raise ConfigError(f"{source}: unknown section [{name}]{_did_you_mean(name, types_)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name} must be a table ([{name}]), not {type(value).__name__}")
    built = {name: _build(source, name, cls, raw.get(name, {})) for name, cls in types_.items()}
    return Config(source=source, **built)


def _did_you_mean(word: str, choices: Mapping[str, Any] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known: {', '.join(sorted(choices))}"


def _build(source: str, section: str, cls: type, table: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{source}: unknown key {section}.{key}{_did_you_mean(key, fields)}")
        try:
            values[key] = _coerce(hints[key], value)
        except TypeError as err:
            raise ConfigError(
                f"{source}: {section}.{key} = {_show(value, hints[key])} is wrong: {err}. "
                f"Expected {_type_name(hints[key])} ({fields[key].metadata.get('doc', '')})."
            ) from err
    try:
        obj = cls(**values)
        validate = getattr(obj, "validate", None)
        if callable(validate):
            validate()
    except (ConfigError, ValueError, TypeError) as err:
        raise ConfigError(f"{source}: [{section}] is invalid: {err}") from err
    return obj


def _show(value: Any, hint: Any) -> str:
    if hint is Secret:
        return "********"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(hint: Any) -> str:
    if hint is Secret:
        return "a string (secret)"
    origin = typing.get_origin(hint)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}s"
    if origin is dict:
        return f"a table of {_type_name(typing.get_args(hint)[1])}s"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


def _coerce(hint: Any, value: Any) -> Any:  # noqa: PLR0912 - one branch per supported config type
    if hint is Secret:
        if not isinstance(value, str):
            raise TypeError("not a string")
        return Secret(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError("not true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("not an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("not a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("not a string (put it in quotes)")
        return value
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise TypeError("not a list ([...])")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError("not a table ({ key = value })")
        _, item = typing.get_args(hint)
        return {str(k): _coerce(item, v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(option, value)
            except TypeError:
                continue
        raise TypeError("not of an accepted type")
    raise TypeError(f"unsupported config type {hint!r}")


# -- rendering -------------------------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, Secret):
        # Never reveal a secret: a set one renders masked, an unset one as "".
        return json.dumps("********" if str.__len__(value) else "")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return (
            "{ "
            + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {_toml_value(v)}" for k, v in value.items())
            + " }"
        )
    raise TypeError(f"cannot render {value!r} as TOML")


def render(config: Config | None = None, *, with_docs: bool = True) -> str:
    """TOML for a config (secrets masked) or, without one, the commented defaults."""
    lines: list[str] = []
    for name, cls in _section_types().items():
        obj = getattr(config, name) if config is not None else cls()
        if lines:
            lines.append("")
        if with_docs and cls.__doc__:
            lines.append(f"# {cls.__doc__.strip().splitlines()[0]}")
        lines.append(f"[{name}]")
        for f in dataclasses.fields(cls):
            value = getattr(obj, f.name)
            if with_docs:
                lines.append(f"# {f.metadata.get('doc', '').strip()}")
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def documented_keys() -> list[tuple[str, str, str, str]]:
    """(section.key, type, default, doc) for every key: the README's configuration table."""
    rows = []
    for name, cls in _section_types().items():
        hints = typing.get_type_hints(cls)
        default_obj = cls()
        for f in dataclasses.fields(cls):
            default = getattr(default_obj, f.name)
            shown = '""' if isinstance(default, Secret) and not default else _toml_value(default)
            rows.append((f"{name}.{f.name}", _type_name(hints[f.name]), shown, f.metadata.get("doc", "")))
    return rows


def markdown_table() -> str:
    """The configuration table in Markdown."""
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, type_name, default, doc in documented_keys():
        shown = (default if len(default) <= 40 else default[:37] + "...").replace("|", "\\|")
        doc_text = doc.replace("|", "\\|")
        out.append(f"| `{key}` | {type_name} | `{shown}` | {doc_text} |")
    return "\n".join(out) + "\n"
