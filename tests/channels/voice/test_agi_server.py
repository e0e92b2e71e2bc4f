"""FastAGI server against misbehaving clients, and the inbound router's variables and budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from gateway.channels.voice.agi_server import AgiServer, AgiSession, CallerContext, InboundRouter
from gateway.channels.voice.settings import VoiceSettings
from gateway.domain.models import ContactView, ConversationSummary, IdentityKind

HEADER_T = (
    "agi_network: yes\n"
    "agi_request: agi://127.0.0.1/inbound\n"
    "agi_channel: PJSIP/trunk-00000001\n"
    "agi_uniqueid: {uid}\n"
    "agi_callerid: {num}\n"
    "agi_calleridname: {name}\n"
    "agi_callingpres: 0\n"
    "agi_arg_1: 100\n"
    "\n"
)


def header(uid: str = "1.1", num: str = "+15551234567", name: str = "Maria") -> bytes:
    return HEADER_T.format(uid=uid, num=num, name=name).encode()


def summary(**kw: object) -> ConversationSummary:
    base: dict[str, object] = {
        "conversation_id": 7,
        "contact_id": 3,
        "display_name": "Maria Rodriguez",
        "status": "open",
        "intent": "roof estimate",
        "next_step": None,
        "urgent": False,
        "owner": None,
        "preferred_channel": None,
        "facts": {},
        "phone": "+15551234567",
        "last_by_channel": {},
        "latest_transcript": None,
        "last_staff_extension": "202",
        "awaiting_since": None,
    }
    base.update(kw)
    return ConversationSummary(**base)  # type: ignore[arg-type]


@dataclass
class FakeLookup:
    """Stands in for ConversationService's lookups; ``delay`` simulates a slow store."""

    known: dict[str, ConversationSummary] = field(default_factory=dict)
    delay: float = 0.0
    calls: list[str] = field(default_factory=list)

    async def find_contact(self, kind: IdentityKind, raw_value: str) -> ContactView | None:
        self.calls.append(raw_value)
        await asyncio.sleep(self.delay)
        s = self.known.get(raw_value)
        if s is None:
            return None
        return ContactView(s.contact_id, s.display_name, s.conversation_id, ())

    async def summary(self, conversation_id: int) -> ConversationSummary | None:
        return next((s for s in self.known.values() if s.conversation_id == conversation_id), None)


async def fake_asterisk(port: int, head: bytes, local: str | None = None) -> tuple[dict[str, str], float]:
    """Play Asterisk: send the header, answer every command with 200, collect SET VARIABLEs."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0) if local else None)
    t0 = time.perf_counter()
    writer.write(head)
    await writer.drain()
    got: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if not line:
            break
        text = line.decode().rstrip("\n")
        assert text.startswith("SET VARIABLE "), text
        _, _, rest = text.partition("SET VARIABLE ")
        name, _, value = rest.partition(" ")
        assert value.startswith('"')
        assert value.endswith('"')
        got[name] = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        writer.write(b"200 result=1\n")
        await writer.drain()
    elapsed = time.perf_counter() - t0
    writer.close()
    return got, elapsed


@pytest.fixture
async def router_server() -> AsyncIterator[tuple[AgiServer, FakeLookup, list[CallerContext]]]:
    lookup = FakeLookup(known={"+15551234567": summary()})
    contexts: list[CallerContext] = []
    settings = VoiceSettings(staff_group="PJSIP/201&PJSIP/202", lookup_budget_ms=100)
    router = InboundRouter(lookup, settings, on_context=contexts.append)  # type: ignore[arg-type]  # a fake with the two lookups routing uses
    server = AgiServer({"inbound": router}, port=0, header_timeout=0.5, reply_timeout=1.0)
    await server.start()
    yield server, lookup, contexts
    await server.stop()
    await router.stop()


async def test_known_caller_gets_context(
    router_server: tuple[AgiServer, FakeLookup, list[CallerContext]],
) -> None:
    server, _lookup, contexts = router_server
    got, elapsed = await fake_asterisk(server.port, header())
    assert got == {
        "GW_KNOWN": "1",
        "GW_CONTACT_ID": "3",
        "GW_CONVERSATION_ID": "7",
        "GW_PRIORITY": "normal",
        "GW_FIRST": "202",
        "GW_GROUP": "PJSIP/201&PJSIP/202",
        "CALLERID(name)": "Maria R - roof estimate",
    }
    assert elapsed < 0.2
    assert contexts[0].conversation_id == 7
    assert contexts[0].summary is not None


async def test_unknown_caller_default_routing(
    router_server: tuple[AgiServer, FakeLookup, list[CallerContext]],
) -> None:
    server, _, _ = router_server
    got, _ = await fake_asterisk(server.port, header(num="+15550000000", name='Evil"; Dial(x)'))
    assert got["GW_KNOWN"] == "0"
    assert "GW_FIRST" not in got  # empty: the dialplan's default stands
    assert "GW_CONTACT_ID" not in got
    assert got["CALLERID(name)"] == "Evil Dial(x)"


@pytest.mark.parametrize("num", ["", "anonymous", "Anonymous", "<unknown>"])
async def test_withheld_caller_not_looked_up(
    router_server: tuple[AgiServer, FakeLookup, list[CallerContext]], num: str
) -> None:
    server, lookup, _ = router_server
    got, _ = await fake_asterisk(server.port, header(num=num, name="anonymous"))
    assert got["GW_KNOWN"] == "0"
    assert got["CALLERID(name)"] == "Withheld number"
    assert lookup.calls == []


async def test_slow_lookup_answers_within_200ms_and_reports_late() -> None:
    lookup = FakeLookup(known={"+15551234567": summary()}, delay=1.0)
    contexts: list[CallerContext] = []
    router = InboundRouter(lookup, VoiceSettings(lookup_budget_ms=120), on_context=contexts.append)  # type: ignore[arg-type]  # a fake with the two lookups routing uses
    server = AgiServer({"inbound": router}, port=0)
    await server.start()
    try:
        got, elapsed = await fake_asterisk(server.port, header())
        assert elapsed < 0.2, elapsed
        assert got["GW_KNOWN"] == "0"
        assert router.timeouts == 1
        await asyncio.sleep(1.1)
        # The lookup finished in the background and still reached the screen-pop path.
        assert [c.timed_out for c in contexts] == [True, True]
        assert contexts[1].conversation_id == 7
    finally:
        await server.stop()
        await router.stop()


async def test_sticky_extension_skipped_when_busy() -> None:
    lookup = FakeLookup(known={"+15551234567": summary()})
    router = InboundRouter(lookup, VoiceSettings(), busy_extensions=lambda: frozenset({"202"}))  # type: ignore[arg-type]  # a fake with the two lookups routing uses
    server = AgiServer({"inbound": router}, port=0)
    await server.start()
    try:
        got, _ = await fake_asterisk(server.port, header())
        assert "GW_FIRST" not in got
        assert got["GW_KNOWN"] == "1"
    finally:
        await server.stop()


async def _flood(w: asyncio.StreamWriter, chunks: int) -> int:
    """Write 64 KiB chunks until the server hangs up; return the bytes it took."""
    sent = 0
    try:
        for _ in range(chunks):
            w.write(b"x" * 65536)
            await w.drain()
            sent += 65536
            await asyncio.sleep(0)
    except ConnectionError:
        return sent
    raise AssertionError(f"server accepted {sent} bytes of garbage without closing")


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_bad_clients_never_block_good_ones(
    router_server: tuple[AgiServer, FakeLookup, list[CallerContext]],
) -> None:
    server, _, _ = router_server
    # 1. half a header, then hang up
    _, w1 = await _open(server.port)
    w1.write(header()[:40])
    await w1.drain()
    w1.close()
    # 2. never sends the blank line (stalls)
    _, w2 = await _open(server.port)
    w2.write(header()[:-1])
    await w2.drain()
    # 3. megabytes of garbage
    r3, w3 = await _open(server.port)
    sent = await _flood(w3, 64)
    assert sent < 8 * 1024 * 1024
    # 4. connects and says nothing at all
    _, w4 = await _open(server.port)
    # Meanwhile a real call is served at full speed.
    got, elapsed = await fake_asterisk(server.port, header())
    assert got["GW_KNOWN"] == "1"
    assert elapsed < 0.2
    # The stalled ones are closed after the header timeout.
    await asyncio.sleep(0.8)
    assert server.active == 0
    assert server.refused >= 3
    for w in (w2, w3, w4):
        w.close()
    del r3


async def test_unknown_path_closed() -> None:
    server = AgiServer({}, port=0)
    await server.start()
    try:
        r, w = await _open(server.port)
        w.write(header())
        await w.drain()
        assert await asyncio.wait_for(r.read(), 2) == b""
        w.close()
    finally:
        await server.stop()


async def test_max_clients() -> None:
    async def slow(session: AgiSession) -> None:
        await asyncio.sleep(5)

    server = AgiServer({"inbound": slow}, port=0, max_clients=2)
    await server.start()
    try:
        writers = []
        for _ in range(2):
            _, w = await _open(server.port)
            w.write(header())
            writers.append(w)
        await asyncio.sleep(0.1)
        r, w = await _open(server.port)
        assert await asyncio.wait_for(r.read(), 2) == b""
        assert server.refused == 1
        for x in [*writers, w]:
            x.close()
    finally:
        await server.stop()


async def test_caller_hangs_up_mid_session(router_server: tuple[AgiServer, FakeLookup, list[CallerContext]]) -> None:
    server, _, _ = router_server
    # Asterisk reports the hang-up, then refuses the next command on the dead channel.
    r, w = await _open(server.port)
    w.write(header(uid="9.9"))
    await r.readline()
    w.write(b"HANGUP\n511 Command Not Permitted on a dead channel or intercept routine\n")
    await w.drain()
    assert await asyncio.wait_for(r.read(), 2) == b""  # the server ends the session
    w.close()
    # A client that vanishes between commands costs nothing either.
    r2, w2 = await _open(server.port)
    w2.write(header(uid="9.8"))
    await r2.readline()
    w2.close()
    await asyncio.sleep(0.1)
    got, elapsed = await fake_asterisk(server.port, header())
    assert got["GW_KNOWN"] == "1"
    assert elapsed < 0.2
    assert server.active == 0


async def test_fastagi_refuses_peers_outside_the_allowed_addresses() -> None:
    lookup = FakeLookup(known={"+15551234567": summary()})
    router = InboundRouter(lookup, VoiceSettings())  # type: ignore[arg-type]  # a fake with the two lookups routing uses
    # Only 127.0.0.2 plays Asterisk here; 127.0.0.1 is "someone else on the network".
    server = AgiServer({"inbound": router}, host="0.0.0.0", port=0, allowed_peers=["127.0.0.2/32"])
    await server.start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(header())
        await w.drain()
        try:
            answer = await asyncio.wait_for(r.read(), timeout=5)
        except ConnectionResetError:  # closed with our header still unread
            answer = b""
        assert answer == b""  # closed without a word
        w.close()
        assert server.refused == 1
        assert server.served == 0
        assert lookup.calls == []
        got, _ = await fake_asterisk(server.port, header(), local="127.0.0.2")
        assert got["GW_KNOWN"] == "1"
        assert server.served == 1
        assert VoiceSettings().agi_allowed_peers == ["127.0.0.0/8", "::1/128"]  # loopback only by default
    finally:
        await server.stop()


def test_agi_allowed_peers_are_validated() -> None:
    from gateway.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match="agi_allowed_peers"):
        VoiceSettings(agi_allowed_peers=["asterisk.local"]).validate()
