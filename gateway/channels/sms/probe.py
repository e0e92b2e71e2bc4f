"""A one-shot modem probe for ``gateway doctor``: present, answering, SIM ready, registered, signal, SIM storage.

It never enters the SIM PIN (the daemon does that, once per start, so a wrong PIN cannot lock the SIM) and never
reads or deletes messages: it only asks. The verdict comes from the same function the running channel uses.
"""

from __future__ import annotations

import contextlib
import glob

from gateway.channels.sms.config import SmsConfig
from gateway.channels.sms.health import NO_DEVICE_FIX, PIN_FIX, modem_title, modem_verdict
from gateway.channels.sms.link import SerialLink
from gateway.domain.events import ModemHealth
from gateway.errors import GatewayError
from gateway.protocols import at
from gateway.values import Health, degraded, down


async def probe_modem(config: SmsConfig, *, timeout: float = 5.0) -> Health:  # noqa: ASYNC109 - per-command limit
    """Open the modem's port, ask it what it knows, close it again."""
    matches = sorted(glob.glob(config.device))
    if not matches:
        return down(
            "modem", modem_title(None), f"no modem at {config.device}", NO_DEVICE_FIX, details={"device": config.device}
        )
    device = matches[0]
    title = modem_title(device)
    link = SerialLink(device, baudrate=config.baudrate)
    try:
        await link.open()
    except GatewayError as err:
        return down(
            "modem",
            title,
            f"cannot open {device}: {err}",
            "make sure no other program (ModemManager, a running gateway) holds the port and that the gateway's "
            "user may open it (udev/README.md)",
            details={"device": device},
        )
    try:
        await link.resync(quiet=0.2, limit=2.0)
        await link.command("ATE0", timeout=timeout)
        with contextlib.suppress(at.ModemCommandError):
            await link.command("AT+CMEE=1", timeout=timeout)
        pin_lines = await link.command("AT+CPIN?", timeout=timeout)
        pin = next((f[0] for f in (at.field(x, "+CPIN") for x in pin_lines) if f), "READY").upper()
        if pin != "READY":
            if pin == "SIM PIN" and str.__len__(config.pin):
                return degraded(
                    "modem",
                    title,
                    "the SIM asks for its PIN; the gateway enters sms.pin (once) when it starts",
                    "nothing to do if the gateway starts fine; if sms.pin is wrong, fix it before starting, "
                    "since the SIM locks after three wrong PINs",
                    details={"device": device},
                )
            return down(
                "modem", title, f"the SIM is locked ({pin}) and sms.pin is empty", PIN_FIX, details={"device": device}
            )
        dbm: int | None = None
        for line in await link.command("AT+CSQ", timeout=timeout):
            if line.startswith("+CSQ"):
                dbm = at.parse_csq(line)[0]
        reg: int | None = None
        for line in await link.command("AT+CREG?", timeout=timeout):
            if at.field(line, "+CREG") is not None:
                reg = at.parse_creg(line.split(":", 1)[1], solicited=True)
        used = total = percent = None
        with contextlib.suppress(at.ModemCommandError):
            for line in await link.command("AT+CPMS?", timeout=timeout):
                pairs = at.parse_cpms(line)
                if pairs:
                    used, total = pairs[0]
                    percent = round(100 * used / total) if total else None
        state = ModemHealth(
            device=device,
            connected=True,
            connected_since=None,
            profile=config.profile,
            signal_dbm=dbm,
            registration=reg,
            registration_text=at.REGISTRATION_WORDS.get(reg) if reg is not None else None,
            sim_used=used,
            sim_total=total,
            storage_percent=percent,
        )
        return modem_verdict(
            state,
            configured_device=config.device,
            up=True,
            since=None,
            last_error=None,
            pin_problem=None,
            storage_warn_percent=config.sim_warn_percent,
        )
    except GatewayError as err:
        return down(
            "modem",
            title,
            f"the modem at {device} does not answer properly: {err}",
            "unplug the modem and plug it in again; if it persists, check sms.profile against hardware/modems",
            details={"device": device},
        )
    finally:
        link.close()
