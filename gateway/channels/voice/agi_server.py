"""Our own FastAGI server and the ``inbound`` handler that routes calls with conversation context.

Theory of operation
-------------------
:class:`AgiServer` accepts TCP connections from Asterisk (loopback by default). Each connection
runs in its own owned task: it must deliver a complete header block within ``header_timeout``
(the :class:`~gateway.protocols.agi.AgiParser` caps its size), then the handler for the request
path runs with an :class:`AgiSession` whose every command waits at most ``reply_timeout``. A
client that stalls, half-closes or sends garbage only ever costs its own task: it is timed out or
refused and closed, and nothing else waits on it. Above ``max_clients`` sessions new connections
are closed at once.

:class:`InboundRouter` handles ``agi://.../inbound``: it looks up the caller in the conversation
store, but waits at most ``lookup_budget_ms``; a slower lookup keeps running in the background
(its result still feeds the screen-pop) while the call gets default routing at once. It then sets
GW_KNOWN, GW_CONTACT_ID, GW_CONVERSATION_ID, GW_PRIORITY, GW_FIRST (the last staff extension who
handled the caller, if that phone is free), GW_GROUP and a sanitized CALLERID(name) label;
empty values are not sent (the dialplan sets the defaults before it calls us).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.channels.voice.label import context_label
from gateway.channels.voice.settings import VoiceSettings
from gateway.channels.voice.tracker import is_withheld
from gateway.channels.voice.whisper import WhisperMaker, whisper_text
from gateway.domain.models import ContactView, ConversationSummary, IdentityKind
from gateway.domain.ports import ConversationPort
from gateway.errors import ConfigError, ProtocolError, TransientError
from gateway.protocols import agi
from gateway.supervise import cancel_and_wait

log = logging.getLogger(__name__)

AgiHandler = Callable[["AgiSession"], Awaitable[None]]


class AgiSession:
    """One FastAGI conversation with Asterisk about one channel."""

    def __init__(
        self,
        request: agi.AgiRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: agi.AgiParser,
        *,
        reply_timeout: float,
        pending: list[agi.AgiEvent] | None = None,
    ) -> None:
        self.request = request
        self._reader = reader
        self._writer = writer
        self._parser = parser
        self._pending: list[agi.AgiEvent] = list(pending or ())
        self._timeout = reply_timeout
        self.hung_up = False

    async def command(self, line: bytes) -> agi.AgiResult:
        """Send one command line and return its ``200`` result; raise the mapped error otherwise."""
        if self.hung_up:
            raise agi.AgiDeadChannelError("channel hung up", line="HANGUP")
        try:
            self._writer.write(line)
            async with asyncio.timeout(self._timeout):
                await self._writer.drain()
                while True:
                    while self._pending:
                        ev = self._pending.pop(0)
                        if isinstance(ev, agi.AgiHangup):
                            self.hung_up = True
                            continue
                        if isinstance(ev, agi.AgiResult):
                            return agi.raise_for_result(ev)
                    data = await self._reader.read(4096)
                    if not data:
                        raise TransientError("Asterisk closed the AGI session mid-command")
                    self._pending.extend(self._parser.feed(data))
        except TimeoutError as err:
            raise TransientError(f"no AGI reply within {self._timeout} s") from err

    async def set_variable(self, name: str, value: str) -> agi.AgiResult:
        """``SET VARIABLE``; ``value`` must be sanitized (control characters are refused)."""
        return await self.command(agi.set_variable(name, value))


class AgiServer:
    """Asyncio FastAGI server dispatching on the request path. ``start``/``stop`` own everything."""

    def __init__(
        self,
        handlers: Mapping[str, AgiHandler],
        *,
        host: str = "127.0.0.1",
        port: int = 4573,
        header_timeout: float = 5.0,
        reply_timeout: float = 5.0,
        max_clients: int = 200,
        allowed_peers: Sequence[str] = ("127.0.0.0/8", "::1/128"),
    ) -> None:
        self._handlers = dict(handlers)
        self._allowed = tuple(ipaddress.ip_network(p, strict=False) for p in allowed_peers)
        self._host = host
        self._port = port
        self._header_timeout = header_timeout
        self._reply_timeout = reply_timeout
        self._max_clients = max_clients
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.refused = 0
        self.served = 0

    @property
    def port(self) -> int:
        """The bound port (useful with port 0 in tests)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active(self) -> int:
        """Sessions in progress."""
        return len(self._tasks)

    async def start(self) -> None:
        """Listen. Raises :class:`ConfigError` naming the keys if the address cannot be bound."""
        try:
            self._server = await asyncio.start_server(self._accept, self._host, self._port, limit=agi.MAX_LINE_BYTES)
        except OSError as err:
            raise ConfigError(
                f"voice.agi_host/voice.agi_port: cannot listen on {self._host}:{self._port}: "
                f"{err.strerror or err}. Another program uses the port, or the address is not "
                "local; choose a free port and use the same address in the dialplan (AGI_ADDR)."
            ) from err
        log.info("FastAGI server listening on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        """Stop listening and end every session."""
        if self._server is not None:
            self._server.close()
        await cancel_and_wait(*self._tasks, owner="fastagi")
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            self._server = None

    def _peer_allowed(self, writer: asyncio.StreamWriter) -> bool:
        peer = writer.get_extra_info("peername")
        try:
            address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
        except (TypeError, IndexError, ValueError):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._allowed)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._peer_allowed(writer):
            # Only Asterisk may ask the gateway how to route calls; a stranger must not even get to send a header.
            self.refused += 1
            log.warning("FastAGI: refused a connection from an address not in voice.agi_allowed_peers")
            writer.close()
            return
        if len(self._tasks) >= self._max_clients:
            self.refused += 1
            log.warning("FastAGI: %d sessions already open, refusing a new one", len(self._tasks))
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._session(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        parser = agi.AgiParser()
        try:
            try:
                async with asyncio.timeout(self._header_timeout):
                    request, rest = await _read_request(reader, parser)
            except TimeoutError:
                self.refused += 1
                log.info("FastAGI %s: no complete header within %.1f s", peer, self._header_timeout)
                return
            handler = self._handlers.get(request.path.split("/")[0])
            if handler is None:
                log.warning("FastAGI %s: no handler for path %r", peer, request.path[:64])
                return
            session = AgiSession(request, reader, writer, parser, reply_timeout=self._reply_timeout, pending=rest)
            self.served += 1
            await handler(session)
        except agi.AgiDeadChannelError:
            log.debug("FastAGI %s: the caller hung up during routing", peer)
        except ProtocolError as err:
            self.refused += 1
            log.info("FastAGI %s: closing: %s", peer, err)
        except (TransientError, ConnectionError) as err:
            log.info("FastAGI %s: session ended: %s", peer, err)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("FastAGI %s: handler failed", peer)
        finally:
            writer.close()


async def _read_request(
    reader: asyncio.StreamReader, parser: agi.AgiParser
) -> tuple[agi.AgiRequest, list[agi.AgiEvent]]:
    while True:
        data = await reader.read(4096)
        if not data:
            raise ProtocolError("client closed before the end of the AGI header")
        events = parser.feed(data)
        if events:
            first = events[0]
            if not isinstance(first, agi.AgiRequest):
                raise ProtocolError("AGI header did not come first")
            return first, events[1:]


# --- the inbound call router ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallerContext:
    """What routing learned about the caller of channel ``uniqueid``."""

    uniqueid: str
    caller: str
    withheld: bool
    contact_id: int | None
    conversation_id: int | None
    summary: ConversationSummary | None
    label: str
    first: str
    timed_out: bool
    caller_name: str = ""


class InboundRouter:
    """The ``inbound`` FastAGI handler (see the module docstring)."""

    def __init__(
        self,
        lookup: ConversationPort,
        settings: VoiceSettings,
        *,
        busy_extensions: Callable[[], frozenset[str]] = frozenset,
        on_context: Callable[[CallerContext], None] | None = None,
        whisper: WhisperMaker | None = None,
        clock: Callable[[], float] = time.time,
        fallback_recording: Callable[[str], str | None] | None = None,
    ) -> None:
        self._lookup = lookup
        self._settings = settings
        self._whisper = whisper
        self._fallback_recording = fallback_recording
        self._clock = clock
        self._busy = busy_extensions
        self._on_context = on_context
        self._background: set[asyncio.Task[tuple[ContactView | None, ConversationSummary | None]]]
        self._background = set()
        self.timeouts = 0
        self.answered = 0
        self.last_answer_ms = 0.0

    async def stop(self) -> None:
        """Cancel lookups still running in the background."""
        await cancel_and_wait(*self._background, owner="fastagi-router")

    async def _find(self, number: str) -> tuple[ContactView | None, ConversationSummary | None]:
        contact = await self._lookup.find_contact(IdentityKind.PHONE, number)
        if contact is None:
            return None, None
        return contact, await self._lookup.summary(contact.conversation_id)

    async def __call__(self, session: AgiSession) -> None:
        """Route one inbound call."""
        started = time.perf_counter()
        req = session.request
        number = req.get("callerid")
        name = req.get("calleridname")
        withheld = is_withheld(number) or req.get("callingpres") in ("32", "33", "34", "35", "67")
        contact: ContactView | None = None
        summary: ConversationSummary | None = None
        timed_out = False
        if not withheld:
            task = asyncio.create_task(self._find(number), name=f"agi-lookup-{req.uniqueid}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            try:
                async with asyncio.timeout(self._settings.lookup_budget_ms / 1000):
                    contact, summary = await asyncio.shield(task)
            except TimeoutError:
                timed_out = True
                self.timeouts += 1
                log.warning(
                    "call %s: caller lookup slower than %d ms, default routing",
                    req.uniqueid,
                    self._settings.lookup_budget_ms,
                )
                task.add_done_callback(
                    functools.partial(self._late_result, uniqueid=req.uniqueid, number=number, name=name)
                )
            except Exception:  # a failed lookup must never hold the call
                log.exception("call %s: caller lookup failed, default routing", req.uniqueid)
        ctx = self._context(req.uniqueid, number, name, withheld, contact, summary, timed_out=timed_out)
        if self._on_context is not None:
            self._on_context(ctx)
        await self._apply(session, ctx)
        self.answered += 1
        self.last_answer_ms = (time.perf_counter() - started) * 1000
        log.debug("call %s: routed in %.1f ms", req.uniqueid, self.last_answer_ms)

    def _context(
        self,
        uniqueid: str,
        number: str,
        name: str,
        withheld: bool,
        contact: ContactView | None,
        summary: ConversationSummary | None,
        *,
        timed_out: bool,
    ) -> CallerContext:
        first = ""
        if summary is not None and summary.last_staff_extension:
            ext = summary.last_staff_extension
            if ext.isalnum() and len(ext) <= 32 and ext not in self._busy():
                first = ext
        label = context_label(
            summary,
            caller_number=number,
            caller_name=name,
            withheld=withheld,
            max_chars=self._settings.label_max_chars,
        )
        return CallerContext(
            uniqueid=uniqueid,
            caller="" if withheld else number,
            withheld=withheld,
            contact_id=contact.id if contact else None,
            conversation_id=contact.conversation_id if contact else None,
            summary=summary,
            label=label,
            first=first,
            timed_out=timed_out,
            caller_name=name,
        )

    def _late_result(
        self,
        task: asyncio.Task[tuple[ContactView | None, ConversationSummary | None]],
        *,
        uniqueid: str,
        number: str,
        name: str,
    ) -> None:
        if task.cancelled() or task.exception() is not None or self._on_context is None:
            return
        contact, summary = task.result()
        self._on_context(self._context(uniqueid, number, name, False, contact, summary, timed_out=True))

    async def _apply(self, session: AgiSession, ctx: CallerContext) -> None:
        # Each command is a round trip to Asterisk, so empty values are not sent: the dialplan
        # sets every GW_* variable to its default before calling us, and empty equals unset.
        s = ctx.summary
        values = [
            ("GW_KNOWN", "1" if ctx.contact_id is not None else "0"),
            ("GW_CONTACT_ID", str(ctx.contact_id or "")),
            ("GW_CONVERSATION_ID", str(ctx.conversation_id or "")),
            ("GW_PRIORITY", "high" if s is not None and s.urgent else "normal"),
            ("GW_FIRST", ctx.first),
            ("GW_GROUP", self._settings.staff_group),
            ("CALLERID(name)", ctx.label),
            *self._whisper_values(ctx),
            ("GW_MIXMON", (self._fallback_recording(ctx.uniqueid) or "") if self._fallback_recording else ""),
        ]
        for name, value in values:
            if value or name == "CALLERID(name)":
                await session.set_variable(name, value)

    def _whisper_values(self, ctx: CallerContext) -> list[tuple[str, str]]:
        """GW_WHISPER (file path without ".wav", as Playback wants it) and who must not hear it.

        The file may not exist yet: synthesis runs in the background and the dialplan plays it only if it is
        there when a phone answers, so the call never waits for speech.
        """
        if self._whisper is None or not self._settings.whisper:
            return []
        text = whisper_text(ctx.summary, withheld=ctx.withheld, now=self._clock())
        path = self._whisper.prepare(text)
        values = [("GW_WHISPER", str(path.with_suffix("")))]
        if self._settings.whisper_off_extensions:
            values.append(("GW_WHISPER_SKIP", ",".join(self._settings.whisper_off_extensions)))
        if not self._settings.whisper_ring_group:
            values.append(("GW_WHISPER_GROUP", "0"))
        return values
