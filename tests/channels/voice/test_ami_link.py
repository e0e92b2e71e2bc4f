"""AMI link: refused login, events, half-open detection, no re-sent Originate, resync list."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from voice_fake_ami import FakeAmi, packet

from gateway.channels.voice.ami_link import AmiLink
from gateway.errors import ConfigError, TransientError


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmi]:
    server = FakeAmi()
    await server.start()
    yield server
    await server.stop()


def make_link(
    port: int,
    secret: str = "s3cret",
    **kw: object,
) -> tuple[AmiLink, list[dict[str, str]]]:
    events: list[dict[str, str]] = []
    link = AmiLink(
        host="127.0.0.1",
        port=port,
        username="gateway",
        secret=secret,
        on_event=events.append,
        backoff_base=0.05,
        backoff_cap=0.2,
        **kw,  # type: ignore[arg-type]
    )
    return link, events


async def until(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_login_refused_is_a_config_error_naming_the_keys(ami: FakeAmi) -> None:
    link, _ = make_link(ami.port, secret="wrong")
    with pytest.raises(ConfigError, match=r"voice\.ami_secret") as info:
        await link.start()
    assert "Authentication failed" in str(info.value)
    assert "manager.conf" in str(info.value)
    assert not link.connected


async def test_login_while_asterisk_shuts_down_is_retried_not_a_config_error(ami: FakeAmi) -> None:
    """Found by the fault soak: during an Asterisk restart the login is refused with "Asterisk is shutting down";
    that is not a wrong secret, and the link must come back once Asterisk is up again."""
    ami.shutting_down = True
    link, _ = make_link(ami.port)
    await link.start()  # no ConfigError: the supervisor keeps trying
    try:
        await asyncio.sleep(0.3)
        assert not link.connected
        assert "shutting down" in (link.state.last_error or "")
        ami.shutting_down = False
        await until(lambda: link.connected)
    finally:
        await link.stop()


async def test_events_arrive_as_dicts_and_on_connected_runs(ami: FakeAmi) -> None:
    connected: list[bool] = []

    async def on_connected() -> None:
        connected.append(True)

    link, events = make_link(ami.port, on_connected=on_connected)
    await link.start()
    try:
        assert link.connected
        assert connected == [True]
        ami.broadcast(packet(Event="Newchannel", Channel="PJSIP/trunk-1", Uniqueid="1.1", Linkedid="1.1"))
        await until(lambda: any(e.get("Event") == "Newchannel" for e in events))
        nc = next(e for e in events if e.get("Event") == "Newchannel")
        assert nc["Uniqueid"] == "1.1"
        assert isinstance(nc, dict)
    finally:
        await link.stop()


async def test_half_open_link_detected_and_reconnected(ami: FakeAmi) -> None:
    link, _ = make_link(ami.port, ping_interval=0.3, ping_timeout=1.0)
    await link.start()
    try:
        assert ami.logins == 1
        await asyncio.sleep(0.5)
        assert link.connected  # pings answered: stays up
        ami.mute_pings = True
        t0 = time.monotonic()
        await until(lambda: "half-open" in (link.state.last_error or ""), timeout=5)
        detected = time.monotonic() - t0
        assert detected < 3.0  # interval + timeout = 1.3 s, with slack for a loaded machine
        ami.mute_pings = False
        await until(lambda: link.connected and link.connects >= 2, timeout=5)
        await asyncio.sleep(1.2)  # a Ping sent while muted may still time out once
        settled = link.connects
        await asyncio.sleep(1.0)
        assert link.connected  # answered pings again: stays up
        assert link.connects == settled
        assert ami.logins == link.connects
    finally:
        await link.stop()


async def test_lost_originate_is_never_resent(ami: FakeAmi) -> None:
    ami.drop_on_originate = True
    link, _ = make_link(ami.port)
    await link.start()
    try:
        with pytest.raises(TransientError, match=r"unknown|lost"):
            await link.action(
                {"Action": "Originate", "Channel": "PJSIP/201", "Exten": "5551234"},
                as_list=False,
            )
        ami.drop_on_originate = False
        await until(lambda: ami.logins == 2 and link.connected, timeout=5)
        await asyncio.sleep(0.3)
        # One Originate reached the server; the reconnect did not send it again.
        assert ami.count("Originate") == 1
    finally:
        await link.stop()


async def test_action_while_down_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link, _ = make_link(port)
    await link.start()  # Asterisk down: start-up continues, the supervisor keeps trying
    try:
        assert not link.connected
        with pytest.raises(TransientError, match="not connected"):
            await link.action({"Action": "Ping"})
        server = FakeAmi()
        await server.start(port)
        try:
            await until(lambda: link.connected, timeout=5)
        finally:
            await link.stop()
            await server.stop()
    finally:
        await link.stop()


async def test_core_show_channels(ami: FakeAmi) -> None:
    ami.channels = [
        [("Channel", "PJSIP/trunk-1"), ("Uniqueid", "1.1"), ("Linkedid", "1.1")],
        [("Channel", "PJSIP/201-2"), ("Uniqueid", "1.2"), ("Linkedid", "1.1"), ("BridgeId", "b")],
    ]
    link, events = make_link(ami.port)
    await link.start()
    try:
        chans = await link.core_show_channels()
        assert [c["Uniqueid"] for c in chans] == ["1.1", "1.2"]
        assert all(c["Event"] == "CoreShowChannel" for c in chans)
        # List items went to the action, not to the event callback.
        assert not any(e.get("Event") == "CoreShowChannel" for e in events)
    finally:
        await link.stop()


async def test_line_breaks_refused(ami: FakeAmi) -> None:
    link, _ = make_link(ami.port)
    await link.start()
    try:
        with pytest.raises(ValueError, match="line break"):
            await link.action({"Action": "Originate", "CallerID": "x\r\nAction: Command"})
    finally:
        await link.stop()
