"""Outbound SMS: the outbox worker and status-report matching.

Theory of operation: rows of the core ``outbox`` table with channel 'sms' move ``queued -> sending -> sent -> delivered
| failed | expired``. The worker takes the earliest due row, marks it ``sending`` (durably, counting the attempt) BEFORE
the first byte of ``AT+CMGS`` goes to the modem, sends its parts one at a time and records each part's message reference
as the modem accepts it, then marks it ``sent``. Outcomes:

* a transient ``+CMS ERROR`` (congestion, no network...) puts the row back to ``queued`` with a capped exponential
  backoff; parts already accepted are not sent again (the same concatenation reference keeps the rest joinable);
* a permanent error fails the row at once with the reason in words;
* a row not sent before ``expires_at`` becomes ``expired``;
* if the PDU reached the modem but no answer came (timeout, unplug), or the daemon died while the row was ``sending``,
  the row becomes ``unknown``: the message may or may not have gone out, and we never resend it silently (a customer
  texted twice is worse than staff deciding to resend);
* status reports (``+CDS``) are matched by message reference and recipient to the part; when every part is delivered the
  row becomes ``delivered``; a permanent network failure makes it ``failed``.

An automated message to a suppressed (opted-out) number is refused here too, as a last line of defence, except the one
confirmation of the STOP itself.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable

from gateway.channels.sms.link import SendOutcomeUnknownError, SerialLink
from gateway.domain.bus import Bus
from gateway.domain.events import SmsOutboundState
from gateway.domain.ports import StorePort
from gateway.protocols import at
from gateway.protocols import pdu as pducodec
from gateway.store import sms as db
from gateway.supervise import backoff_delay

log = logging.getLogger(__name__)

STATUS_MATCH_WINDOW_S = 7 * 24 * 3600.0
#: A pushed status report is stored with the next durable commit, or by itself after this many seconds.
REPORT_COALESCE_S = 1.0


class OutboxWorker:
    """Sends queued SMS through one :class:`SerialLink`, one message at a time."""

    def __init__(
        self,
        store: StorePort,
        bus: Bus,
        *,
        send_timeout: float = 120.0,
        retry_base: float = 5.0,
        retry_cap: float = 600.0,
        max_attempts: int = 8,
        status_reports: bool = True,
        validity_minutes: int = 1440,
    ) -> None:
        self.store = store
        self.bus = bus
        self.send_timeout = send_timeout
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.max_attempts = max_attempts
        self.status_reports = status_reports
        self.validity_minutes = validity_minutes
        self._wake = asyncio.Event()  # set when something was queued while no claim was parked
        self._parked: asyncio.Future[db.Claim] | None = None
        self._parked_reports: set[asyncio.Future[tuple[int, str] | None]] = set()
        self.sent_parts = 0

    def wake(self) -> None:
        """Something was queued: look now."""
        parked = self._parked
        if parked is not None and self.store.unpark(parked):
            return  # the parked claim runs now, after the commit that queued the message
        self._wake.set()

    async def recover(self) -> list[int]:
        """At start: rows a crash left in 'sending' become 'unknown' (never resent silently)."""
        ids = await self.store.write(lambda c: db.recover_interrupted_sends(c, time.time()))
        for outbox_id in ids:
            log.warning(
                "sms outbox: message %d was being sent when the gateway stopped; marked 'unknown'",
                outbox_id,
            )
            self.bus.publish(SmsOutboundState(outbox_id, None, "unknown", "interrupted"))
        return ids

    async def run(self, link: SerialLink) -> None:
        """Send due messages until cancelled or the link fails (the error propagates)."""
        look_first = True
        claim: db.Claim | None = None  # the next round, when a write already took it
        while True:
            if claim is None:
                if look_first:
                    due, next_at = await self.store.read(lambda c: db.peek_due(c, time.time()))
                    claim = await (self._claim() if due else self._claim_when_due(next_at))
                else:
                    # More may be due: claim again at once (a claim that finds nothing writes nothing, and
                    # measured cheaper than a read through the reader pool).
                    claim = await self._claim()
            current, claim = claim, None
            for outbox_id in current.expired:
                log.info("sms outbox: message %d expired", outbox_id)
                self.bus.publish(SmsOutboundState(outbox_id, None, "expired"))
            if current.row is None:
                claim = await self._claim_when_due(current.next_at)
                continue
            look_first = False
            if current.blocked:
                await self._final(current.row, "failed", "the recipient opted out (STOP); not sent")
                continue
            # The send's last write claims the next round too (one commit for 'sent' and the next 'sending').
            claim = await self._send(link, current.row, current.done_parts)

    async def _claim(self) -> db.Claim:
        self._wake.clear()  # before the claim: a message queued after it sets the flag again
        return await self.store.write(lambda c: db.claim_next(c, time.time()))

    async def _claim_when_due(self, next_at: float | None) -> db.Claim:
        """The next round, once something may be due: woken by :meth:`wake`, or at ``next_at`` (5 s at most).

        Meanwhile the claim waits parked in the store: it runs at the end of the next group commit, so the
        transaction that queues a message usually claims it too (one durable commit instead of two); one that
        found nothing just parks again.
        """
        if self._wake.is_set():  # queued since the last claim was taken
            return await self._claim()
        wait = 5.0 if next_at is None else max(0.0, min(5.0, next_at - time.time()))
        parked = self.store.park(lambda c: db.claim_next(c, time.time()))
        self._parked = parked
        timer = asyncio.get_running_loop().call_later(wait, self.store.unpark, parked)
        try:
            return await parked
        except asyncio.CancelledError:
            self.store.unpark(parked, run=False)  # still parked: it never runs
            raise
        finally:
            timer.cancel()
            self._parked = None

    async def _send(self, link: SerialLink, row: db.OutboundRow, done: dict[int, int]) -> db.Claim | None:
        """Send one claimed row. After its last part the same transaction that marks it 'sent' claims the next
        round (one durable commit and one trip to the writer instead of two); that claim is returned."""
        try:
            pdus = pducodec.encode_submit(
                row.to_addr,
                row.body,
                concat_ref=row.id & 0xFF,
                status_report=self.status_reports,
                validity_minutes=self.validity_minutes,
            )
        except pducodec.PduEncodeError as err:
            await self._final(row, "failed", str(err))
            return None
        self.bus.publish(SmsOutboundState(row.id, row.conversation_id, "sending"))
        total = len(pdus)
        claim: db.Claim | None = None
        try:
            for number, part in enumerate(pdus, start=1):
                if number in done:
                    continue
                reference = await link.send_pdu(part.tpdu_length, part.hex, timeout=self.send_timeout)
                self.sent_parts += 1
                if number == total:
                    self._wake.clear()  # before the claim: a message queued after it sets the flag again
                claim = await self.store.write(
                    lambda c, n=number, r=reference: db.record_part_and_maybe_sent(  # type: ignore[misc]
                        c,
                        row.id,
                        n,
                        parts=total,
                        reference=r,
                        recipient=row.to_addr,
                        now=time.time(),
                    )
                )
        except at.ModemPermanentError as err:
            await self._final(row, "failed", f"the modem refused it: {err.words}")
            return None
        except SendOutcomeUnknownError as err:
            await self._final(row, "unknown", str(err))
            raise
        except at.ModemTransientError as err:
            await self._retry(row, err.words)
            return None
        except BaseException:
            if link.pdu_in_modem:
                # Stopped while the modem held the PDU: it may have gone out.
                await asyncio.shield(self._final(row, "unknown", "stopped while the modem was sending it"))
            else:
                # The link died before this part's PDU was written: nothing of it went out.
                await asyncio.shield(self._retry(row, "the modem connection was lost before sending"))
            raise
        log.info("sms outbox: message %d sent (%d part(s))", row.id, total)
        self.bus.publish(SmsOutboundState(row.id, row.conversation_id, "sent"))
        return claim

    async def _retry(self, row: db.OutboundRow, reason: str) -> None:
        attempts = row.attempts + 1
        if attempts >= self.max_attempts:
            await self._final(row, "failed", f"gave up after {attempts} attempts: {reason}")
            return
        delay = max(self.retry_base, backoff_delay(attempts, base=self.retry_base, cap=self.retry_cap))
        retry_at = time.time() + delay
        if retry_at >= row.expires_at:
            await self._final(row, "expired", f"would expire before the next attempt: {reason}")
            return
        await self.store.write(lambda c: db.mark_retry(c, row.id, reason, retry_at, time.time()))
        log.info("sms outbox: message %d failed for now (%s); retry in %.0f s", row.id, reason, delay)
        self.bus.publish(SmsOutboundState(row.id, row.conversation_id, "queued", reason))

    async def _final(self, row: db.OutboundRow, state: str, reason: str) -> None:
        await self.store.write(lambda c: db.mark_final(c, row.id, state, reason, time.time()))
        log.warning("sms outbox: message %d %s: %s", row.id, state, reason)
        self.bus.publish(SmsOutboundState(row.id, row.conversation_id, state, reason))

    def _apply_report(self, report: pducodec.SmsStatusReport) -> Callable[[sqlite3.Connection], tuple[int, str] | None]:
        now = time.time()

        def apply(c: sqlite3.Connection) -> tuple[int, str] | None:
            return db.apply_status_report(
                c,
                report.reference,
                report.recipient,
                report.status,
                delivered=report.delivered,
                final=report.final,
                words=report.status_text,
                since=now - STATUS_MATCH_WINDOW_S,
                now=now,
            )

        return apply

    async def status_report(self, report: pducodec.SmsStatusReport) -> None:
        """Apply a status report read from the SIM to the part it belongs to, durably before it is deleted there."""
        self._report_applied(report, await self.store.write(self._apply_report(report)))

    def status_report_soon(self, report: pducodec.SmsStatusReport) -> None:
        """Apply a ``+CDS`` report the modem pushed (it needs no answer, and nobody waits for it).

        It is not worth a durable commit of its own: it rides along with the next one (usually the next message's)
        and goes by itself after :data:`REPORT_COALESCE_S` at most, or at :meth:`flush_reports`.
        """
        parked = self.store.park(self._apply_report(report))
        timer = asyncio.get_running_loop().call_later(REPORT_COALESCE_S, self.store.unpark, parked)
        self._parked_reports.add(parked)

        def applied(done: asyncio.Future[tuple[int, str] | None]) -> None:
            timer.cancel()
            self._parked_reports.discard(done)
            if done.cancelled():
                return
            err = done.exception()
            if err is not None:
                log.warning("sms outbox: status report for reference %d not stored: %s", report.reference, err)
                return
            self._report_applied(report, done.result())

        parked.add_done_callback(applied)

    def flush_reports(self) -> None:
        """Let every pushed report still waiting for a commit go now (the channel is stopping)."""
        for parked in list(self._parked_reports):
            self.store.unpark(parked)

    def _report_applied(self, report: pducodec.SmsStatusReport, result: tuple[int, str] | None) -> None:
        if result is None:
            log.info("sms outbox: status report for unknown reference %d ignored", report.reference)
            return
        outbox_id, state = result
        log.info("sms outbox: message %d status report: %s", outbox_id, report.status_text)
        self.bus.publish(SmsOutboundState(outbox_id, None, state, report.status_text))
