"""A small client for Asterisk's REST interface (ARI), only what live transcription needs.

Theory of operation: ARI creates snoop and media channels inside a Stasis application, and Asterisk knows an
application only while a websocket is subscribed to it. :class:`AriClient` therefore keeps one websocket open to
``/ari/events?app=<app>`` through the shared reconnect helper (a WARNING once when the link drops, an INFO once
when it is back) and hands the events it reads to ``on_event`` (``on_up``/``on_lost`` when the link comes and
goes); the REST calls go over one HTTP session with basic auth on loopback. Every call has a timeout; a failure
raises :class:`AriError` and the caller decides (live transcription falls back to transcribing a recording).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.errors import TransientError
from gateway.supervise import LinkState, cancel_and_wait, reconnect_loop

log = logging.getLogger(__name__)


class AriError(TransientError):
    """An ARI request failed or Asterisk's HTTP server is not reachable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status Asterisk answered with (None: no answer)."""


class AriClient:
    """REST calls plus the websocket that keeps the Stasis application registered."""

    def __init__(self, base_url: str, username: str, password: str, *, app: str = "gateway", timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.app = app
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._ws_task: asyncio.Task[None] | None = None
        self._registered = asyncio.Event()
        self.state = LinkState("ari")
        self.on_up: Callable[[], None] | None = None
        """Called each time the application is registered (the link came up)."""
        self.on_lost: Callable[[], None] | None = None
        """Called each time a registered link drops."""
        self.on_event: Callable[[dict[str, Any]], None] | None = None
        """Called with each event of the application (decoded JSON)."""

    @property
    def connected(self) -> bool:
        """True while the event websocket is open (the application is registered)."""
        return self._registered.is_set()

    async def start(self) -> None:
        """Open the HTTP session and start keeping the event websocket open."""
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        self._ws_task = asyncio.create_task(reconnect_loop("ari", self._events, state=self.state, cap=15.0))

    async def stop(self) -> None:
        """Close the websocket and the session."""
        await cancel_and_wait(self._ws_task, owner="ari")
        self._ws_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._registered.clear()

    async def wait_connected(self, limit_s: float) -> bool:
        """Wait until the application is registered; False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                await self._registered.wait()
        return self._registered.is_set()

    async def _events(self, state: LinkState) -> None:
        assert self._session is not None
        url = self.base_url.replace("http://", "ws://", 1) + "/ari/events"
        async with self._session.ws_connect(url, params={"app": self.app}, heartbeat=20.0) as ws:
            state.mark_up()
            self._registered.set()
            if self.on_up is not None:
                self.on_up()
            try:
                async for msg in ws:
                    if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                    if msg.type is aiohttp.WSMsgType.TEXT and self.on_event is not None:
                        self._dispatch(msg.data)
            finally:
                self._registered.clear()
                if self.on_lost is not None:
                    self.on_lost()

    def _dispatch(self, data: str) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            log.warning("ARI sent an event that is not JSON; ignored")
            return
        if isinstance(event, dict) and self.on_event is not None:
            self.on_event(event)

    async def _call(self, method: str, path: str, **params: str) -> Any:
        if self._session is None:
            raise AriError("ARI client is not started")
        try:
            async with self._session.request(method, self.base_url + "/ari" + path, params=params) as resp:
                if resp.status >= 300:
                    text = (await resp.text())[:200]
                    raise AriError(f"ARI {method} {path} answered {resp.status}: {text}", resp.status)
                if resp.status == 204:
                    return None
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise AriError(f"ARI {method} {path} failed: {type(err).__name__}: {err}") from err

    async def snoop(self, channel_id: str, spy: str) -> str:
        """A snoop channel hearing ``spy`` ("in": what the channel sends, "out": what it receives)."""
        data = await self._call("POST", f"/channels/{channel_id}/snoop", spy=spy, whisper="none", app=self.app)
        return str(data["id"])

    async def whisper_to(self, channel_id: str) -> str:
        """A snoop channel that can speak into ``channel_id`` (what it plays, that channel hears)."""
        data = await self._call("POST", f"/channels/{channel_id}/snoop", spy="none", whisper="out", app=self.app)
        return str(data["id"])

    async def play(self, channel_id: str, sound_path: str) -> None:
        """Play a sound file (absolute path without extension) on a channel of the application.

        A snoop channel joins the application a moment after it is created (409 until then): retried for a second.
        """
        for attempt in range(20):
            try:
                await self._call("POST", f"/channels/{channel_id}/play", media=f"sound:{sound_path}")
            except AriError as err:
                if err.status != 409 or attempt == 19:
                    raise
                await asyncio.sleep(0.05)
            else:
                return

    async def external_media(self, host_port: str, fmt: str = "slin16") -> str:
        """A media channel sending its audio as RTP to ``host_port``."""
        data = await self._call(
            "POST",
            "/channels/externalMedia",
            app=self.app,
            external_host=host_port,
            format=fmt,
            encapsulation="rtp",
            transport="udp",
            direction="both",
        )
        return str(data["id"])

    async def bridge(self) -> str:
        """A new mixing bridge."""
        data = await self._call("POST", "/bridges", type="mixing")
        return str(data["id"])

    async def add_to_bridge(self, bridge_id: str, *channel_ids: str) -> None:
        """Put channels into a bridge.

        A media channel joins the Stasis application a moment after ``externalMedia`` returns, and until then
        Asterisk answers 422; so a 422 is retried for up to a second.
        """
        for attempt in range(20):
            try:
                await self._call("POST", f"/bridges/{bridge_id}/addChannel", channel=",".join(channel_ids))
            except AriError as err:
                if err.status != 422 or attempt == 19:
                    raise
                await asyncio.sleep(0.05)
            else:
                return

    async def hangup(self, channel_id: str) -> None:
        """Hang a channel up (gone already is fine)."""
        with contextlib.suppress(AriError):
            await self._call("DELETE", f"/channels/{channel_id}")

    async def destroy_bridge(self, bridge_id: str) -> None:
        """Destroy a bridge (gone already is fine)."""
        with contextlib.suppress(AriError):
            await self._call("DELETE", f"/bridges/{bridge_id}")
