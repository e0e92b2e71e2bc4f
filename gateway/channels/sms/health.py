"""The modem's verdict: one :class:`~gateway.values.Health` from what the channel (or a doctor probe) saw.

A pure function of the observed state, so the running channel, ``gateway doctor`` and the tests give the same words
for the same situation.
"""

from __future__ import annotations

import glob
import os

from gateway.domain.events import ModemHealth
from gateway.values import Health, degraded, down, ok

#: Weaker than this (dBm) and SMS gets unreliable.
WEAK_SIGNAL_DBM = -105
PIN_FIX = (
    "put the SIM's PIN into sms.pin in the config file and restart the gateway, or remove the PIN with a phone; "
    "the gateway tries a PIN only once so it can never lock the SIM"
)
NO_DEVICE_FIX = (
    "plug the USB modem in and wait 10 seconds; if it still does not show, check `dmesg`, the udev rule "
    "(udev/README.md) and sms.device in the config file"
)


def is_emulated(device: str | None) -> bool:
    """True when the modem device is a pseudo-terminal (the modem emulator), not real hardware."""
    if not device:
        return False
    return os.path.realpath(device).startswith("/dev/pts/")


def modem_title(device: str | None) -> str:
    """What the status surfaces call the modem ("emulated modem" when it is the emulator on a pty)."""
    return "SMS modem (emulated modem)" if is_emulated(device) else "SMS modem"


def modem_verdict(
    state: ModemHealth,
    *,
    configured_device: str,
    up: bool,
    since: float | None,
    last_error: str | None,
    pin_problem: str | None,
    storage_warn_percent: int,
) -> Health:
    """The modem's Health from its last observed state."""
    device = state.device or next(iter(sorted(glob.glob(configured_device))), None)
    title = modem_title(device)
    details: dict[str, str | int | float | bool | None] = {
        "device": device or configured_device,
        "emulated": is_emulated(device),
        "signal_dbm": state.signal_dbm,
        "registration": state.registration_text,
        "operator": state.operator,
        "sim_used": state.sim_used,
        "sim_total": state.sim_total,
        "storage_percent": state.storage_percent,
        "reopen_count": state.reopen_count,
    }
    if pin_problem:
        return down("modem", title, f"the SIM is locked: {pin_problem}", PIN_FIX, since=since, details=details)
    if not up:
        if device is None:
            return down("modem", title, f"no modem at {configured_device}", NO_DEVICE_FIX, since=since, details=details)
        return down(
            "modem",
            title,
            f"the modem at {device} does not answer ({last_error or 'not connected yet'})",
            "unplug the modem and plug it in again; make sure no other program (ModemManager, another gateway) "
            "uses it; see udev/README.md",
            since=since,
            details=details,
        )
    if state.registration in (0, 3):
        return down(
            "modem",
            title,
            f"the SIM is not on the mobile network ({state.registration_text})",
            "check that the SIM is activated and has credit (ask the operator), and that the network is available here",
            since=since,
            details=details,
        )
    if state.registration in (2, 4, None):
        return degraded(
            "modem",
            title,
            f"the modem is still looking for the mobile network ({state.registration_text or 'unknown'})",
            "wait a minute; if it stays like this move the modem or its antenna, or check the SIM with a phone",
            since=since,
            details=details,
        )
    if state.signal_dbm is None or state.signal_dbm < WEAK_SIGNAL_DBM:
        shown = "no signal" if state.signal_dbm is None else f"weak signal ({state.signal_dbm} dBm)"
        return degraded(
            "modem",
            title,
            f"{shown}: texts may be delayed",
            "move the modem or its antenna near a window, or use a USB extension cable",
            since=since,
            details=details,
        )
    if state.storage_percent is not None and state.storage_percent >= storage_warn_percent:
        return degraded(
            "modem",
            title,
            f"the SIM's message storage is {state.storage_percent}% full",
            "nothing to do if it drains within minutes; if it stays full, check the gateway's log for messages "
            "it cannot read",
            since=since,
            details=details,
        )
    where = f" on {state.operator}" if state.operator else ""
    return ok("modem", title, f"registered{where}, signal {state.signal_dbm} dBm", since=since, details=details)
