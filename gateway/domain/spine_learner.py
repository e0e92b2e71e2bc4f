"""Keeps spines up to date from what lands on the timeline: the one bus subscriber that writes spines automatically.

Theory of operation: the learner subscribes to :class:`TimelineEventAdded` and, for each customer message (SMS,
chat) and each voicemail transcript, runs the :class:`~gateway.domain.extract.SpineReader` and applies the result
through :class:`~gateway.domain.spine.SpineService` with ``set_by="extractor"`` and the channel as source, so every
change is a timeline entry and a value staff set is never overwritten. What it applies:

* intent: a keyword intent always (it may revise its own earlier guess); the "question" fallback only when the
  conversation has no intent yet. A transcript's own keyword decision (which includes the recogniser's keyword pass)
  comes first;
* urgent: only ever set, never cleared automatically;
* facts: every fact found (an unchanged value writes nothing);
* channel preference: what the customer *said* ("text me", "call me", "can't talk") replaces anything learned;
  otherwise the channel they last used (SMS, or a call) is recorded as a weak preference, which never replaces
  something they said or staff set. A failed SMS delivery (:meth:`SpineLearner.delivery_failed`) records "cannot
  receive texts" and prefers calls.

The bus may drop events for a slow subscriber (it counts them); a dropped message only means a fact is not read
automatically, and staff can still set it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any

from gateway.domain.bus import Bus, Subscription
from gateway.domain.events import SmsOutboundState, TimelineEventAdded
from gateway.domain.extract import SpineReader
from gateway.domain.models import Channel, EventKind, TimelineEvent
from gateway.domain.spine import EXTRACTOR, SpineService
from gateway.store import spine as spine_sql

log = logging.getLogger(__name__)

USE_SOURCE = "last_used"
"""Provenance source of a preference learned from the channel the customer used (the weak kind)."""

_READ_CHANNELS = frozenset({Channel.SMS.value, Channel.CHAT.value})


class SpineLearner:
    """Reads inbound messages and transcripts into spines. Start after the bus, stop before it."""

    def __init__(self, spines: SpineService, reader: SpineReader, bus: Bus) -> None:
        self.spines = spines
        self.reader = reader
        self.seen_upto = 0
        """The newest timeline entry id handled (read, or not for the spine)."""
        self._progress = asyncio.Condition()
        self.bus = bus
        self.learned = 0
        self.failures = 0
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe and start reading."""
        self._sub = self.bus.subscribe("spine-learner", maxsize=5000, types=(TimelineEventAdded, SmsOutboundState))
        self._task = asyncio.create_task(self._run(self._sub), name="spine-learner")

    async def _warm(self) -> None:
        # dateparser loads its language data on first use (over a second): in a worker thread, before the first
        # message is read, never on the event loop.
        try:
            await asyncio.to_thread(self.reader.warm)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("spine: warming up the readers failed; messages are still read")
            return
        # dateparser's and pyap's data stay for good: out of the collector's way (gateway.supervise.
        # freeze_startup_objects says why).
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        """Stop reading; a message being applied finishes first."""
        if self._sub is not None:
            self._sub.close()
        if self._task is not None:
            await asyncio.wait([self._task])  # ends by itself once the subscription is closed and drained
            self._task = None

    async def _run(self, sub: Subscription) -> None:
        await self._warm()
        async for item in sub:
            try:
                match item:
                    case TimelineEventAdded():
                        await self.learn(item.event)
                    case SmsOutboundState():
                        await self._delivery(item)
            except asyncio.CancelledError:
                raise
            except LookupError:
                log.debug("spine: the conversation vanished before its spine was updated")
            except Exception:
                self.failures += 1
                log.exception("spine: updating a spine from a bus event failed")
            finally:
                if isinstance(item, TimelineEventAdded) and item.event.id > self.seen_upto:
                    self.seen_upto = item.event.id
                    async with self._progress:
                        self._progress.notify_all()

    async def read_up_to_date(self, conversation_id: int, limit_s: float = 3.0) -> bool:
        """Wait (at most ``limit_s``) until the conversation's newest message or transcript has been read.

        A rule about to text the customer composes from the spine ("asks nothing twice"); the message that made it
        act may still be in the reader's queue (the customer's answer that confirmed their number, with their name in
        it). False when it was not read in time: the rule goes ahead with what is known.
        """
        newest = await self.spines.store.read(
            lambda c: spine_sql.last_read_event_id(c, spine_sql.chain(c, conversation_id))
        )
        if self.seen_upto >= newest:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s), self._progress:
                await self._progress.wait_for(lambda: self.seen_upto >= newest)
        return self.seen_upto >= newest

    async def learn(self, event: TimelineEvent) -> None:
        """Apply what one timeline event says to its conversation's spine."""
        conv = event.conversation_id
        if event.kind == EventKind.MESSAGE_IN.value and event.channel in _READ_CHANNELS:
            await self._read(conv, event, event.channel, None, None)
            if event.channel == Channel.SMS.value:
                await self._used(conv, "sms", "last wrote by text")
        elif event.kind == EventKind.TRANSCRIPT.value:
            meta_intent = event.meta.get("intent")
            await self._read(
                conv,
                event,
                "voicemail",
                meta_intent if isinstance(meta_intent, str) else None,
                bool(event.meta.get("urgent")),
            )
        elif event.kind in (EventKind.CALL_ANSWERED.value, EventKind.CALL_MISSED.value) and (
            event.meta.get("direction") != "outbound"
        ):
            await self._used(conv, "voice", "last called")
        else:
            return
        self.learned += 1

    async def delivery_failed(self, conversation_id: int, detail: str) -> None:
        """An SMS to this customer could not be delivered: prefer calls and say why."""
        why = "cannot receive texts (delivery failed" + (f": {detail[:80]})" if detail else ")")
        await self.spines.set_channel_preference(conversation_id, "voice", why, source="sms", set_by=EXTRACTOR)

    async def _delivery(self, item: SmsOutboundState) -> None:
        if item.state != "failed":
            return
        conv = item.conversation_id
        if conv is None:
            conv = await self.spines.conversation_of_outbox(item.outbox_id)
        if conv is None:
            return
        if "opted out" in (item.detail or ""):
            return  # not a delivery problem: the customer asked for no texts, which the outbox enforces
        await self.delivery_failed(conv, item.detail or "")

    async def _read(
        self, conv: int, event: TimelineEvent, source: str, meta_intent: str | None, meta_urgent: bool | None
    ) -> None:
        if not event.body.strip():
            return
        reading = await asyncio.to_thread(self.reader.read, event.body, event.occurred_at)
        spines = self.spines
        kw: dict[str, Any] = {"source": source, "set_by": EXTRACTOR}
        intent = meta_intent if meta_intent in spines.intents else None
        if (
            intent is None
            and reading.intent is not None
            and (reading.intent_from_keywords or (await spines.spine(conv)).intent is None)
        ):
            intent = reading.intent
        if intent is not None:
            await spines.set_intent(conv, intent, **kw)
        if reading.urgent or meta_urgent:
            await spines.set_urgent(conv, True, **kw)
        for name, found in reading.facts.items():
            await spines.set_fact(conv, name, found.value, confidence=found.confidence, event_id=event.id, **kw)
        if reading.preference is not None:
            channel, why = reading.preference
            await spines.set_channel_preference(conv, channel, why, **kw)

    async def _used(self, conv: int, channel: str, why: str) -> None:
        spine = await self.spines.spine(conv)
        prov = spine.provenance.get("preferred_channel")
        if prov is not None and prov.source != USE_SOURCE:
            return  # something the customer said, a delivery failure, or staff: stronger than habit
        await self.spines.set_channel_preference(conv, channel, why, source=USE_SOURCE, set_by=EXTRACTOR)
