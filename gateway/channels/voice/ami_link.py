"""The AMI link: panoramisk's ``Manager`` under our own supervision.

Theory of operation ------------------- panoramisk 1.4 parses AMI well, but its connection management must not be used
as is: it reconnects on a fixed 2 s timer, its keep-alive ping never checks the reply, and after a reconnect it re-sends
every action that had no answer yet, so an ``Originate`` whose reply was lost can dial a customer twice.
:class:`AmiLink` keeps the parser and the action/response matching and replaces the rest:

* :class:`_Manager` (a ``Manager`` subclass) never reconnects by itself, never pings by itself and
  never re-sends: when the connection is lost, every action still waiting fails with
  :class:`~gateway.errors.TransientError` ("outcome unknown, not re-sent").
* ``_connect_once`` (run by :func:`gateway.supervise.reconnect_loop`, so backoff and logging are
  the same as every other link) opens the TCP connection, logs in (a refused login is a
  :class:`~gateway.errors.ConfigError` naming ``voice.ami_username``/``voice.ami_secret``), calls
  ``on_connected`` (the voice channel resyncs its calls from ``CoreShowChannels`` there), then
  pings every ``ping_interval`` seconds and treats a missing ``Pong`` within ``ping_timeout`` as a
  half-open link: it raises, the supervisor reconnects.
* Events are handed to ``on_event`` as plain ``dict[str, str]`` in arrival order.

``start()`` makes the first attempt itself so a wrong secret fails the daemon's start-up with a
clear message; when Asterisk is merely down, start-up continues and the supervisor keeps trying.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol

from gateway.errors import ConfigError, TransientError
from gateway.supervise import LinkState, cancel_and_wait, reconnect_loop

log = logging.getLogger(__name__)

AmiEventDict = dict[str, str]


def _flatten(message: Mapping[str, Any]) -> AmiEventDict:
    """A panoramisk Message (case-insensitive, repeated keys as lists) as a plain dict."""
    # The hot path: read CaseInsensitiveDict's backing store (lower key -> (key, value)) directly
    # instead of going through its per-key __getitem__ (half the CPU of the AMI path otherwise).
    store = getattr(message, "_store", None)
    pairs = store.values() if isinstance(store, dict) else ((k, message[k]) for k in message)
    out: AmiEventDict = {}
    for key, value in pairs:
        out[key] = value if isinstance(value, str) else "\n".join(map(str, value))
    return out


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager minus its reconnect timer, its unchecked ping and its re-sending."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def ping(self) -> None:
        """Disabled: :class:`AmiLink` sends its own pings and checks the replies."""

    async def send_awaiting_actions(self, *_: object) -> None:
        """Never re-send: a lost Originate must not dial twice."""
        self._fail_waiting("AMI link was re-established")

    def _fail_waiting(self, why: str) -> None:
        while self.awaiting_actions:
            action = self.awaiting_actions.popleft()
            if not action.future.done():
                action.future.set_exception(
                    TransientError(
                        f"AMI action {action.get('Action', '?')} got no reply before the link was "
                        f"lost ({why}); its outcome is unknown and it was not re-sent"
                    )
                )
        proto = getattr(self, "protocol", None)
        if proto is not None:
            for key in list(proto.responses):
                action = proto.responses.pop(key)
                if not action.future.done():
                    action.future.set_exception(TransientError(f"AMI link lost ({why}); action outcome unknown"))

    def connection_lost(self, exc: BaseException | None) -> None:
        """Called by the protocol: fail what is waiting and tell the owner, no reconnect timer."""
        self._connected = False
        pinger = getattr(self, "pinger", None)
        if pinger is not None:
            pinger.cancel()
            self.pinger = None
        self._fail_waiting("connection lost")
        if not self.lost.done():
            self.lost.set_result(exc)

    def close(self) -> None:
        """Close the connection and fail whatever still waits."""
        super().close()
        self._fail_waiting("closed")
        if not self.lost.done():
            self.lost.set_result(None)


class AmiLink:
    """A supervised AMI connection. See the module docstring."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        secret: str,
        on_event: Callable[[AmiEventDict], None],
        on_connected: Callable[[], Awaitable[None]] | None = None,
        ping_interval: float = 10.0,
        ping_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self._username = username
        self._secret = secret
        self._on_event = on_event
        self._on_connected = on_connected
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._connect_timeout = connect_timeout
        self._base = backoff_base
        self._cap = backoff_cap
        self.state = LinkState("ami")
        self._manager: _Manager | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.connects = 0
        self.events = 0

    @property
    def connected(self) -> bool:
        """True while logged in."""
        return self._ready.is_set()

    async def start(self) -> None:
        """First attempt inline (a refused login raises ConfigError), then supervise forever."""
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(first), name="ami-link")
        try:
            await first
        except ConfigError:
            await self.stop()
            raise
        except TransientError as err:
            log.warning("AMI at %s:%d not reachable yet (%s); will keep trying", self.host, self.port, err)

    async def stop(self) -> None:
        """Close the link and stop reconnecting."""
        await cancel_and_wait(self._task, owner="ami")
        self._task = None
        self._close_manager()

    async def wait_connected(self, timeout: float) -> None:  # noqa: ASYNC109 - a plain deadline
        """Wait until logged in; raise TransientError after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError as err:
            raise TransientError(f"AMI not connected within {timeout} s") from err

    async def _run(self, first: asyncio.Future[None]) -> None:
        async def once(state: LinkState) -> None:
            try:
                await self._connect_once(state, first)
            except BaseException as err:
                if not first.done():
                    if isinstance(err, (ConfigError, TransientError)):
                        first.set_exception(err)
                    else:
                        first.set_exception(TransientError(str(err) or type(err).__name__))
                raise

        try:
            await reconnect_loop("ami", once, base=self._base, cap=self._cap, state=self.state)
        finally:
            if not first.done():
                first.cancel()

    async def _connect_once(self, state: LinkState, first: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        mgr = _Manager(host=self.host, port=self.port, loop=loop, ping_delay=10**6, reconnect_timeout=10**6)
        mgr.register_event("*", self._dispatch)
        try:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    transport, protocol = await loop.create_connection(AMIProtocol, self.host, self.port)
            except (OSError, TimeoutError) as err:
                raise TransientError(f"cannot connect to AMI at {self.host}:{self.port}: {err}") from err
            done: asyncio.Future[tuple[Any, Any]] = loop.create_future()
            done.set_result((transport, protocol))
            mgr.connection_made(done)
            self._manager = mgr
            await self._login(mgr)
            self.connects += 1
            state.mark_up()
            self._ready.set()
            if not first.done():
                first.set_result(None)
            if self._on_connected is not None:
                await self._on_connected()
            await self._watch(mgr)
        finally:
            self._ready.clear()
            if self._manager is mgr:
                self._manager = None
            mgr.close()

    async def _login(self, mgr: _Manager) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                resp = await mgr.send_action(
                    {
                        "Action": "Login",
                        "Username": self._username,
                        "Secret": self._secret,
                        "Events": "on",
                    }
                )
        except TimeoutError as err:
            raise TransientError("AMI did not answer the Login action") from err
        if not resp.success and "shutting down" in str(resp.get("Message", "")).lower():
            # Asterisk answers the login while it restarts: not a wrong secret, the link comes back by itself.
            raise TransientError(f"AMI at {self.host}:{self.port}: Asterisk is shutting down (restarting?)")
        if not resp.success:
            raise ConfigError(
                f"AMI at {self.host}:{self.port} refused login for user {self._username!r}: "
                f"{resp.get('Message', 'no reason given')}. Check voice.ami_username and "
                "voice.ami_secret against the [user] section and its secret in manager.conf."
            )

    async def _watch(self, mgr: _Manager) -> None:
        """Ping and check the Pong; return/raise when the link is gone or half-open."""
        while True:
            try:
                async with asyncio.timeout(self.ping_interval):
                    exc = await asyncio.shield(mgr.lost)
                    raise TransientError(f"AMI connection lost: {exc or 'closed by Asterisk'}")
            except TimeoutError:
                pass
            try:
                async with asyncio.timeout(self.ping_timeout):
                    resp = await mgr.send_action({"Action": "Ping"})
            except TimeoutError as err:
                raise TransientError(f"AMI half-open: no reply to Ping within {self.ping_timeout} s") from err
            if not resp.success:
                raise TransientError(f"AMI Ping refused: {resp.get('Message', '')}")

    def _dispatch(self, _manager: object, message: Mapping[str, Any]) -> None:
        self.events += 1
        try:
            self._on_event(_flatten(message))
        except Exception:
            log.exception("AMI event handler failed on %s", message.get("Event", "?"))

    def _close_manager(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def _require(self) -> _Manager:
        mgr = self._manager
        if mgr is None or not self._ready.is_set():
            raise TransientError("AMI is not connected; try again shortly")
        return mgr

    async def action(
        self,
        fields: Mapping[str, str],
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - every AMI action needs its own deadline
        as_list: bool | None = None,
    ) -> Any:
        """Send an action and return panoramisk's response (a list for list actions).

        Raises TransientError when the link is down, drops while waiting, or no reply arrives.
        """
        for key, value in fields.items():
            if "\r" in key + value or "\n" in key + value:
                raise ValueError(f"AMI field {key!r} contains a line break")
        mgr = self._require()
        action = Action(dict(fields), as_list=as_list)
        try:
            async with asyncio.timeout(timeout):
                return await mgr.send_action(action, as_list=as_list)
        except TimeoutError as err:
            raise TransientError(f"no reply to AMI {fields.get('Action', '?')} within {timeout} s") from err

    async def core_show_channels(self, timeout: float = 10.0) -> list[AmiEventDict]:  # noqa: ASYNC109
        """The active channels, as CoreShowChannel event dicts (may be empty)."""
        resp = await self.action({"Action": "CoreShowChannels"}, timeout=timeout)
        items = resp if isinstance(resp, list) else [resp]
        out = [_flatten(m) for m in items]
        if out and not out[0].get("Event") and out[0].get("Response", "").lower() == "error":
            raise TransientError(f"CoreShowChannels refused: {out[0].get('Message', '')}")
        return [m for m in out if m.get("Event") == "CoreShowChannel"]
