"""Inbound SMS: raw PDUs stored first, then decoded, reassembled and handed to the conversation.

Theory of operation: the modem session lists the SIM (``AT+CMGL=4``) and calls :meth:`store_listing`, which writes every
raw PDU in ONE durable transaction and returns; only then does the session delete those indexes, one ``AT+CMGD=<index>``
each. Everything after that works from the store, so a crash at any point replays safely on the next start:

1. ``stored`` parts are decoded. A single message is recorded at once; a part of a long message becomes ``waiting`` and,
   when the set is complete (parts in any order, duplicates ignored), the joined text is recorded. A set still
   incomplete after ``multipart_timeout`` is recorded marked incomplete: never dropped. Recording a message, marking its
   parts and applying a STOP/START keyword (the suppression) happen in one transaction.
2. ``pending`` messages go to :meth:`ConversationService.ingest` (idempotent by external id); a keyword is recorded
   and answered by :meth:`ConversationService.answer_keyword` (its timeline entry and exactly one confirmation in the
   outbox: the adapter never writes the timeline itself); then the message is ``ingested``.

The same PDU read twice (a crash between store and delete) is one row, so nothing is duplicated.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.domain.bus import Bus
from gateway.domain.models import (
    Channel,
    EventKind,
    IdentityKind,
    Inbound,
)
from gateway.domain.optout import Keyword, OptOutPolicy
from gateway.domain.phone import normalize_phone
from gateway.domain.ports import ConversationPort, StorePort
from gateway.protocols import at
from gateway.protocols import pdu as pducodec
from gateway.store import sms as db

log = logging.getLogger(__name__)

T = TypeVar("T")


_TRUNCATED = " [...] (shortened here; the full text is kept with the SMS)"


@dataclass(frozen=True)
class _Decoded:
    part: db.InboundPart
    msg: pducodec.SmsDeliver


class InboundPipeline:
    """Turns stored PDUs into conversation messages. See the module docstring."""

    def __init__(
        self,
        store: StorePort,
        service: ConversationPort,
        bus: Bus,
        *,
        policy: OptOutPolicy | None = None,
        multipart_timeout: float = 600.0,
        region: str = "US",
        reply_expiry_s: float = 24 * 3600.0,
        on_status_report: Callable[[pducodec.SmsStatusReport], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.bus = bus
        self.policy = policy or OptOutPolicy()
        self.multipart_timeout = multipart_timeout
        self.region = region
        self.reply_expiry_s = reply_expiry_s
        self.on_status_report = on_status_report
        self._wake = asyncio.Event()
        self.ingested = 0
        self._failing: set[int] = set()
        self.max_body_chars = service.settings.max_body_chars

    def wake(self) -> None:
        """New parts were stored: process them soon."""
        self._wake.set()

    async def store_listing(self, modem_id: str, storage: str, items: list[at.StoredPdu]) -> int:
        """Durably store every listed PDU (one transaction). Returns how many were new."""
        if not items:
            return 0
        now = time.time()

        def op(conn: sqlite3.Connection) -> int:
            new = 0
            for item in items:
                _, fresh = db.store_inbound_part(conn, modem_id, storage, item.index, pdu_hex=item.pdu, now=now)
                new += fresh
            return new

        new = await self.store.write(op)
        if new:
            self.wake()
        return new

    async def run(self) -> None:
        """Process forever: on every wake-up, and at least every few seconds for stale multipart."""
        tick = max(0.5, min(30.0, self.multipart_timeout / 4))
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep going; the rows stay and are retried next round
                log.exception("sms inbound: processing failed; will retry")
                await asyncio.sleep(1.0)
            self._wake.clear()
            try:
                async with asyncio.timeout(tick):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def run_once(self) -> int:
        """Decode stored parts, flush stale multipart sets, ingest pending messages. Returns
        ingested."""
        parts = await self.store.read(lambda c: db.parts_in_state(c, "stored"))
        for part in parts:
            await self._decode_part(part)
        cutoff = time.time() - self.multipart_timeout
        for key in await self.store.read(lambda c: db.stale_concat_keys(c, cutoff)):
            await self.store.write(lambda c, k=key: self._assemble(c, k, force=True))  # type: ignore[misc]
        done = 0
        for message in await self.store.read(db.pending_messages):
            try:
                await self._ingest(message)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - one bad message must not hold up the rest
                if message.id not in self._failing:
                    self._failing.add(message.id)
                    log.warning(
                        "sms inbound: message %d could not be added to its conversation (%s); "
                        "it stays stored and is retried",
                        message.id,
                        err,
                    )
                continue
            self._failing.discard(message.id)
            done += 1
        return done

    # -- decode and assemble (each in one transaction) ------------------------------------------

    async def _decode_part(self, part: db.InboundPart) -> None:
        try:
            msg = pducodec.decode(part.pdu)
        except pducodec.PduDecodeError as err:
            reason = str(err)
            log.warning("sms inbound: part %d cannot be decoded (%s); raw PDU kept", part.id, reason)
            await self.store.write(lambda c: db.mark_part_undecodable(c, part.id, reason))
            await self._unreadable(part, reason)
            return
        if isinstance(msg, pducodec.SmsStatusReport):
            await self.store.write(lambda c: db.mark_part_undecodable(c, part.id, "status report (handled)"))
            if self.on_status_report is not None:
                await self.on_status_report(msg)
            return
        if isinstance(msg, pducodec.SmsSubmit):
            await self.store.write(
                lambda c: db.mark_part_undecodable(c, part.id, "an outgoing message stored on the SIM")
            )
            return
        await self.store.write(lambda c: self._place(c, _Decoded(part, msg)))

    async def _unreadable(self, part: db.InboundPart, reason: str) -> None:
        """Staff see an unreadable text on the sender's timeline (the raw PDU stays in the store as part N)."""
        sender = pducodec.sender_of(part.pdu)
        who = sender or "an unknown sender"
        item = Inbound(
            Channel.SMS,
            EventKind.MESSAGE_IN,
            IdentityKind.PHONE,
            sender or "unknown sender",
            f"sms-unreadable-{part.id}",
            f"Unreadable text from {who}, kept as part {part.id}",
            meta={"unreadable": True, "part_id": part.id, "reason": reason},
        )
        try:
            await self.service.ingest(item)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - the raw part is kept either way; the entry is a courtesy
            log.warning("sms inbound: part %d: could not add the unreadable-text entry (%s)", part.id, err)

    def _place(self, conn: sqlite3.Connection, d: _Decoded) -> None:
        msg = d.msg
        if msg.concat is None:
            self._record(conn, [d], total=1)
            return
        key = f"{msg.sender}|{msg.concat.ref_bits}:{msg.concat.ref}|{msg.concat.total}"
        db.mark_part_waiting(
            conn,
            d.part.id,
            sender=msg.sender,
            concat_key=key,
            seq=msg.concat.seq,
            total=msg.concat.total,
        )
        self._assemble(conn, key, force=False)

    def _assemble(self, conn: sqlite3.Connection, key: str, *, force: bool) -> None:
        parts = db.waiting_parts(conn, key)
        if not parts:
            return
        decoded: dict[int, _Decoded] = {}
        extra: list[int] = []
        total = 1
        for part in parts:
            try:
                msg = pducodec.decode(part.pdu)
            except pducodec.PduDecodeError as err:  # it decoded before; keep it safe anyway
                db.mark_part_undecodable(conn, part.id, str(err))
                continue
            if not isinstance(msg, pducodec.SmsDeliver) or msg.concat is None:
                continue
            total = msg.concat.total
            if msg.concat.seq in decoded:
                extra.append(part.id)  # a duplicate part: assembled with the first copy
            else:
                decoded[msg.concat.seq] = _Decoded(part, msg)
        if not decoded or (len(decoded) < total and not force):
            return
        ordered = [decoded[s] for s in sorted(decoded)]
        self._record(conn, ordered, total=total, extra_part_ids=extra)

    def _record(
        self,
        conn: sqlite3.Connection,
        ordered: list[_Decoded],
        *,
        total: int,
        extra_part_ids: list[int] | None = None,
    ) -> None:
        first = ordered[0]
        seqs = [d.msg.concat.seq if d.msg.concat else 1 for d in ordered]
        missing = [s for s in range(1, total + 1) if s not in seqs]
        if missing:
            chunks: list[str] = []
            have = dict(zip(seqs, ordered, strict=True))
            run: list[pducodec.SmsDeliver] = []
            for s in range(1, total + 1):
                if s in have:
                    run.append(have[s].msg)
                else:
                    if run:
                        chunks.append(pducodec.join_parts(run))
                        run = []
                    chunks.append(f"[part {s} of {total} missing]")
            if run:
                chunks.append(pducodec.join_parts(run))
            body = " ".join(chunks)
        else:
            body = pducodec.join_parts([d.msg for d in ordered])
        sender = first.msg.sender
        keyword = self.policy.classify(body) if not missing else None
        address = normalize_phone(sender, self.region).key if keyword is not None else None
        db.record_message(
            conn,
            external_id=f"sms:{first.part.pdu_hash[:40]}",
            sender=sender,
            body=body,
            sent_at=first.msg.timestamp,
            parts=total,
            parts_missing=len(missing),
            keyword=keyword.value if keyword else None,
            part_ids=[d.part.id for d in ordered] + (extra_part_ids or []),
            suppress_address=address,
            now=time.time(),
        )
        if missing:
            log.warning(
                "sms inbound: message delivered incomplete after %.0f s: %d of %d part(s) missing",
                self.multipart_timeout,
                len(missing),
                total,
            )

    # -- ingest -----------------------------------------------------------------------------------

    async def _ingest(self, message: db.PendingMessage) -> None:
        meta: dict[str, Any] = {"parts": message.parts}
        if message.parts_missing:
            meta["incomplete"] = True
            meta["parts_missing"] = message.parts_missing
        if message.keyword:
            meta["keyword"] = message.keyword
        body = message.body
        if len(body) > self.max_body_chars:
            # Up to 255 parts can exceed what a timeline entry holds; the full text stays stored.
            body = body[: self.max_body_chars - len(_TRUNCATED)] + _TRUNCATED
            meta["truncated"] = True
            meta["sms_message_id"] = message.id
        result = await self.service.ingest(
            Inbound(
                channel=Channel.SMS,
                kind=EventKind.MESSAGE_IN,
                identity_kind=IdentityKind.PHONE,
                identity_value=message.sender,
                external_id=message.external_id,
                body=body,
                meta=meta,
                occurred_at=message.sent_at,
            )
        )
        log.info(
            "sms inbound: message %d (%d part(s)) in conversation %d%s",
            message.id,
            message.parts,
            result.conversation_id,
            " (duplicate)" if result.duplicate else "",
        )
        log.debug("sms inbound: message %d from %s: %r", message.id, message.sender, message.body)
        if message.keyword:
            await self._keyword(message, Keyword(message.keyword), result.conversation_id)
        await self.store.write(lambda c: db.mark_ingested(c, message.id, result.conversation_id, result.event_id))
        self.ingested += 1

    async def _keyword(self, message: db.PendingMessage, keyword: Keyword, conv: int) -> None:
        if message.confirmation_outbox_id is not None:
            return  # answered before a crash (the conversation service would not queue a second answer either)
        number = normalize_phone(message.sender, self.region)
        to = number.e164 if number.valid else None
        if to is None:
            log.info("sms inbound: keyword from a sender that cannot be answered; no confirmation")
        outbox_id = await self.service.answer_keyword(
            conv,
            keyword,
            to,
            self.policy.reply(keyword),
            source_id=message.external_id,
            expires_in=self.reply_expiry_s,
        )
        if outbox_id is not None:
            await self.store.write(lambda c: db.set_confirmation(c, message.id, outbox_id))
