"""A small scriptable AMI server for link tests (asterisk-marked tests use the real one)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


def packet(**fields: str) -> bytes:
    return ("".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in fields.items()) + "\r\n").encode()


def raw_packet(pairs: list[tuple[str, str]]) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n").encode()


@dataclass
class FakeAmi:
    """Accepts logins with ``secret``; answers Ping unless ``mute_pings``; records every action."""

    secret: str = "s3cret"
    shutting_down: bool = False
    mute_pings: bool = False
    answer_originate: bool = True
    drop_on_originate: bool = False
    channels: list[list[tuple[str, str]]] = field(default_factory=list)
    actions: list[dict[str, str]] = field(default_factory=list)
    logins: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", port)

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def drop_all(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()

    def broadcast(self, data: bytes) -> None:
        for w in self.writers:
            w.write(data)

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a.get("Action", "").lower() == action.lower())

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        buf = b""
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    block, buf = buf.split(b"\r\n\r\n", 1)
                    act: dict[str, str] = {}
                    for line in block.decode().split("\r\n"):
                        k, _, v = line.partition(": ")
                        act[k] = v
                    self.actions.append(act)
                    await self._answer(act, writer)
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    async def _answer(self, act: dict[str, str], w: asyncio.StreamWriter) -> None:
        name = act.get("Action", "").lower()
        aid = act.get("ActionID", "")
        if name == "login":
            if self.shutting_down:
                w.write(packet(Response="Error", ActionID=aid, Message="Asterisk is shutting down"))
            elif act.get("Secret") == self.secret:
                self.logins += 1
                w.write(packet(Response="Success", ActionID=aid, Message="Authentication accepted"))
                w.write(packet(Event="FullyBooted", Privilege="system,all", Status="Fully Booted"))
            else:
                w.write(packet(Response="Error", ActionID=aid, Message="Authentication failed"))
        elif name == "ping":
            if not self.mute_pings:
                w.write(packet(Response="Success", ActionID=aid, Ping="Pong", Timestamp="1.0"))
        elif name == "originate":
            if self.drop_on_originate:
                w.close()
            elif self.answer_originate:
                msg = "Originate successfully queued"
                w.write(packet(Response="Success", ActionID=aid, Message=msg))
        elif name == "coreshowchannels":
            w.write(
                packet(
                    Response="Success",
                    ActionID=aid,
                    EventList="start",
                    Message="Channels will follow",
                )
            )
            for ch in self.channels:
                w.write(raw_packet([("Event", "CoreShowChannel"), ("ActionID", aid), *ch]))
            w.write(
                packet(
                    Event="CoreShowChannelsComplete",
                    ActionID=aid,
                    EventList="Complete",
                    ListItems=str(len(self.channels)),
                )
            )
        await w.drain()
