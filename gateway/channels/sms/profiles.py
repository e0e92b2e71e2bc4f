"""Modem profiles: per-model quirks kept as data files (``hardware/modems/*.toml``).

The driver reads ``init_quirks``, ``storages``, ``cnmi`` and ``iccid_command``; the emulator also reads the
``[emulator]`` table and the noise it should make. Installers read the USB ids and port hints.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import ConfigError

PROFILES_DIR = Path(__file__).resolve().parents[3] / "hardware" / "modems"


@dataclass(frozen=True)
class EmulatorIdentity:
    """How the emulated modem describes itself (``AT+CGMI``, ``AT+CGMM``, ``AT+CGMR``) and its
    storages."""

    manufacturer: str = "generic"
    model: str = "GSM modem"
    revision: str = "1.0"
    sm_capacity: int = 30
    me_capacity: int = 0


@dataclass(frozen=True)
class ModemProfile:
    """One supported modem model."""

    name: str
    vendor: str = "generic"
    model: str = "generic"
    usb_ids: tuple[str, ...] = ()
    at_interface: str = "00"
    port_hint: str = ""
    init_quirks: tuple[str, ...] = ()
    storages: tuple[str, ...] = ("SM",)
    cnmi: str = "AT+CNMI=2,1,0,1,0"
    iccid_command: str = "AT+CCID"
    boot_noise: tuple[str, ...] = ()
    vendor_noise: tuple[str, ...] = ()
    emulator: EmulatorIdentity = field(default_factory=EmulatorIdentity)


GENERIC = ModemProfile(name="generic")


def available_profiles(directory: Path = PROFILES_DIR) -> list[str]:
    """Names of the profiles shipped in ``directory``."""
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_profile(name: str, directory: Path = PROFILES_DIR) -> ModemProfile:
    """Load a profile by name (``huawei-e3372``) or by path to a TOML file; ``generic`` is built
    in."""
    if name == "generic":
        return GENERIC
    path = Path(name) if name.endswith(".toml") else directory / f"{name}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        known = ", ".join(["generic", *available_profiles(directory)])
        raise ConfigError(f"sms.profile = {name!r}: no such modem profile ({path}). Known profiles: {known}") from err
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"modem profile {path} cannot be read: {err}") from err
    try:
        emu = EmulatorIdentity(**data.pop("emulator", {}))
        tuples = {k: tuple(v) for k, v in data.items() if isinstance(v, list)}
        return ModemProfile(**{**data, **tuples, "emulator": emu})
    except TypeError as err:
        raise ConfigError(f"modem profile {path} has an unknown or missing key: {err}") from err
