"""Run the GSM modem emulator: ``python -m gateway.emulator --profile huawei-e3372 --link
/tmp/gateway-modem``.

Drive it from another process with ``--control SOCKET`` and :func:`gateway.emulator.control.call`,
e.g.
``python -m gateway.emulator.ctl /tmp/gateway-modem.ctl deliver sender=+15551234567 text='hi'``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from gateway.channels.sms.profiles import available_profiles
from gateway.emulator.control import ControlServer
from gateway.emulator.modem import ModemEmulator


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run until SIGINT/SIGTERM."""
    ap = argparse.ArgumentParser(prog="python -m gateway.emulator", description=__doc__)
    ap.add_argument("--profile", default="generic", help="one of: generic, " + ", ".join(available_profiles()))
    ap.add_argument("--link", help="symlink to create pointing at the pty (e.g. /tmp/gateway-modem)")
    ap.add_argument("--control", help="Unix socket for scripting (default: LINK.ctl)")
    ap.add_argument("--pin", help="SIM PIN the emulated SIM asks for")
    ap.add_argument("--command-delay", type=float, default=0.0, help="seconds before each answer")
    ap.add_argument("--send-delay", type=float, default=0.0, help="seconds an AT+CMGS takes")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    emulator = ModemEmulator(
        args.profile,
        link=args.link,
        sim_pin=args.pin,
        command_delay=args.command_delay,
        send_delay=args.send_delay,
    )
    emulator.start()
    control_path = args.control or (f"{args.link}.ctl" if args.link else None)
    control = ControlServer(emulator, control_path) if control_path else None
    if control is not None:
        control.start()
    print(f"emulated {emulator.profile.name} at {emulator.path}", flush=True)
    if args.link:
        print(f"link {args.link}", flush=True)
    if control_path:
        print(f"control {control_path}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    if control is not None:
        control.stop()
    emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
