"""The voice channel's verdicts: the AMI link as the running channel sees it, and a one-shot probe for the doctor.

The probe speaks AMI itself (the sans-IO parser in gateway.protocols.ami over an asyncio stream): connect, read the
banner, log in, then try two actions the gateway never needs (``Command`` needs the ``command`` class, ``GetConfig``
the ``config`` class). If Asterisk runs either, the gateway's AMI user has rights broader than needed, which matters
because AMI rights are code execution in the wrong hands.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket

from gateway.channels.voice.settings import VoiceSettings
from gateway.protocols.ami import AmiBanner, AmiParser, AmiResponse, encode_action
from gateway.values import Health, degraded, down, ok

TITLE = "Asterisk (AMI)"
LOGIN_FIX = (
    "make voice.ami_username and voice.ami_secret in the gateway's config match the user's section and its "
    "`secret` in Asterisk's manager.conf, then run `asterisk -rx 'manager reload'` and restart the gateway"
)
UNREACHABLE_FIX = (
    "start Asterisk (`systemctl start asterisk`), and check that manager.conf has enabled = yes on the port in "
    "voice.ami_port"
)
BROAD_FIX = (
    "in manager.conf give the gateway's user only read = call,user and write = reporting,originate (remove "
    "command, system and config), then `asterisk -rx 'manager reload'`"
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ami_verdict(settings: VoiceSettings, *, up: bool, since: float | None, last_error: str | None) -> Health:
    """The AMI link's Health as the running voice channel sees it."""
    where = f"{settings.ami_host}:{settings.ami_port}"
    if not up:
        error = last_error or "not connected yet"
        fix = LOGIN_FIX if "refused login" in error or "Authentication" in error else UNREACHABLE_FIX
        return down("asterisk", TITLE, f"no AMI link to Asterisk at {where}: {error}", fix, since=since)
    if not _is_loopback(settings.ami_host):
        return degraded(
            "asterisk",
            TITLE,
            f"AMI runs over the network ({where}); its rights are code execution in the wrong hands",
            "run the gateway on the Asterisk box and set voice.ami_host = 127.0.0.1 (manager.conf bindaddr = "
            "127.0.0.1)",
            since=since,
        )
    return ok("asterisk", TITLE, f"AMI link up at {where}", since=since)


async def _read_response(reader: asyncio.StreamReader, parser: AmiParser, action_id: str) -> AmiResponse:
    while True:
        data = await reader.read(4096)
        if not data:
            raise ConnectionError("Asterisk closed the AMI connection")
        for packet in parser.feed(data):
            if isinstance(packet, AmiResponse) and packet.action_id == action_id:
                return packet


async def _banner(reader: asyncio.StreamReader, parser: AmiParser) -> str:
    pending: list[object] = []
    while True:
        data = await reader.read(4096)
        if not data:
            raise ConnectionError("Asterisk closed the AMI connection before its banner")
        pending.extend(parser.feed(data))
        for packet in pending:
            if isinstance(packet, AmiBanner):
                return packet.version


async def probe_ami(settings: VoiceSettings, *, timeout: float = 5.0) -> Health:  # noqa: ASYNC109 - one overall limit
    """Connect, log in and check the user's rights once (for ``gateway doctor``)."""
    where = f"{settings.ami_host}:{settings.ami_port}"
    if not str.__len__(settings.ami_secret):
        return down(
            "asterisk",
            TITLE,
            "voice.ami_secret is empty",
            "set voice.ami_secret to the secret of the gateway's user in Asterisk's manager.conf",
        )
    parser = AmiParser()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(settings.ami_host, settings.ami_port)
    except (OSError, TimeoutError) as err:
        return down("asterisk", TITLE, f"cannot reach AMI at {where}: {err or 'timed out'}", UNREACHABLE_FIX)
    try:
        async with asyncio.timeout(timeout):
            version = await _banner(reader, parser)
            writer.write(
                encode_action(
                    "Login",
                    {"Username": settings.ami_username, "Secret": settings.ami_secret.reveal(), "Events": "off"},
                    action_id="login",
                )
            )
            resp = await _read_response(reader, parser, "login")
            if not resp.success:
                return down(
                    "asterisk",
                    TITLE,
                    f"Asterisk refused the AMI login for user {settings.ami_username!r} at {where}: "
                    f"{resp.message or 'no reason given'}",
                    LOGIN_FIX,
                )
            broader: list[str] = []
            for action, fields, klass in (
                ("Command", {"Command": "core show version"}, "command"),
                ("GetConfig", {"Filename": "manager.conf"}, "config"),
            ):
                writer.write(encode_action(action, fields, action_id=klass))
                if (await _read_response(reader, parser, klass)).success:
                    broader.append(klass)
            writer.write(encode_action("Logoff", action_id="logoff"))
    except (OSError, ConnectionError, TimeoutError) as err:
        return down("asterisk", TITLE, f"AMI at {where} stopped answering: {err or 'timed out'}", UNREACHABLE_FIX)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
    if broader:
        return degraded(
            "asterisk",
            TITLE,
            f"the AMI user {settings.ami_username!r} may use {', '.join(broader)}: broader than the gateway needs",
            BROAD_FIX,
            details={"version": version},
        )
    if not _is_loopback(settings.ami_host):
        return degraded(
            "asterisk",
            TITLE,
            f"AMI runs over the network ({where}); its rights are code execution in the wrong hands",
            "run the gateway on the Asterisk box and set voice.ami_host = 127.0.0.1",
            details={"version": version},
        )
    return ok(
        "asterisk", TITLE, f"AMI login accepted at {where}, rights no broader than needed", details={"version": version}
    )


def probe_agi_port(settings: VoiceSettings, *, gateway_running: bool) -> Health:
    """Is the FastAGI port free for the gateway (or held by the running gateway)?"""
    title = "FastAGI port"
    where = f"{settings.agi_host}:{settings.agi_port}"
    if not _is_loopback(settings.agi_host):
        return degraded(
            "agi",
            title,
            f"FastAGI listens on {where}, not on loopback: anyone who can reach it can ask about callers",
            "set voice.agi_host = 127.0.0.1 and point the dialplan's AGI() at 127.0.0.1",
        )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.agi_host, settings.agi_port))
        except OSError:
            if gateway_running:
                return ok("agi", title, f"{where} is served by the running gateway")
            return down(
                "agi",
                title,
                f"another program listens on {where}",
                f"find it with `ss -ltnp 'sport = :{settings.agi_port}'` and stop it, or move voice.agi_port "
                "and the dialplan's AGI_ADDR to a free port",
            )
    if gateway_running:
        return down(
            "agi",
            title,
            f"the gateway runs but nothing listens on {where}",
            "look at the gateway's log for a FastAGI start error; restart the gateway",
        )
    return ok("agi", title, f"{where} is free for the gateway")
