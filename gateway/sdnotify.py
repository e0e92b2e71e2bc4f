"""The systemd notification protocol (sd_notify), without a dependency: READY, STOPPING and the watchdog.

systemd passes ``$NOTIFY_SOCKET`` (a Unix datagram socket; a leading ``@`` means the abstract namespace) to a
``Type=notify`` service, and with ``WatchdogSec=`` also ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``). The daemon says
``READY=1`` once every part started and ``STOPPING=1`` when it begins to stop. The watchdog ping ``WATCHDOG=1`` is
sent from a task on the event loop every half period, so a loop that stalls (a blocking call, a busy coroutine)
stops the pings and systemd restarts the service, which is the point.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

from gateway.supervise import cancel_and_wait

log = logging.getLogger(__name__)


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one notification; False when there is no socket (not under systemd) or it cannot be reached."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as err:
        log.debug("sd_notify %s failed: %s", state, err)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec=), or None when systemd asked for none."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


async def watchdog(interval: float) -> None:
    """Ping forever from the event loop (cancel to stop)."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel the watchdog task and wait for it."""
    await cancel_and_wait(task, owner="watchdog")
