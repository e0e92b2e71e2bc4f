"""GSM modem emulator on a pseudo-terminal (used by the tests, the benchmark and the demo)."""

from gateway.emulator.modem import ModemEmulator, SentMessage

__all__ = ["ModemEmulator", "SentMessage"]
