"""What a sipp phone hears: RTP packets to one UDP port on loopback, captured with a packet socket (root).

sipp binds the phone's media port itself, so the test cannot read it; a ``AF_PACKET`` socket on ``lo`` sees every
datagram Asterisk sends there. Each PCMU payload is decoded to linear samples so a test can tell speech from silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import time
from dataclasses import dataclass, field

_ETH_P_IP = 0x0800
_PACKET_HOST = 0


def ulaw_to_linear(byte: int) -> int:
    """G.711 mu-law byte -> 16-bit linear sample."""
    u = ~byte & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if (u & 0x80) else (t - 0x84)


def rms(payload: bytes) -> float:
    """Root mean square of a PCMU payload's samples."""
    if not payload:
        return 0.0
    return math.sqrt(sum(ulaw_to_linear(b) ** 2 for b in payload) / len(payload))


@dataclass
class RtpPacket:
    at: float
    payload_type: int
    payload: bytes


@dataclass
class RtpSniffer:
    """Collects RTP datagrams sent to ``port`` on loopback while running."""

    port: int
    """Destination UDP port; 0 = any port (then give ``address``)."""
    address: str = ""
    """Destination IPv4 address to keep (empty = any)."""
    packets: list[RtpPacket] = field(default_factory=list)
    _sock: socket.socket | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP))
        sock.bind(("lo", 0))
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)

    def _read(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, addr = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            if addr[2] != _PACKET_HOST or len(data) < 20 or data[9] != socket.IPPROTO_UDP:
                continue
            ihl = (data[0] & 0x0F) * 4
            _src, dst, length = struct.unpack("!HHH", data[ihl : ihl + 6])
            if (self.port and dst != self.port) or (self.address and socket.inet_ntoa(data[16:20]) != self.address):
                continue
            rtp = data[ihl + 8 : ihl + length]
            if len(rtp) < 12 or rtp[0] >> 6 != 2:
                continue
            csrc = (rtp[0] & 0x0F) * 4
            self.packets.append(RtpPacket(time.time(), rtp[1] & 0x7F, rtp[12 + csrc :]))

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def voiced_seconds(self, *, until: float | None = None, threshold: float = 300.0) -> float:
        """Seconds of PCMU audio louder than ``threshold`` (RMS) received before ``until``."""
        samples = sum(
            len(p.payload)
            for p in self.packets
            if p.payload_type == 0 and (until is None or p.at <= until) and rms(p.payload) > threshold
        )
        return samples / 8000.0
