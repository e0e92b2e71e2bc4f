"""Turns what staff promise into proposed next steps, and tells which confirmed promises were not kept.

Theory of operation: :class:`PromiseKeeper` subscribes to timeline entries. In a live call transcript it reads only
the staff member's turns; in a staff reply (not an automated text) the whole text. Each commitment
(:func:`~gateway.continuity.promises.find_promises`) is stored once per (entry, step) as *proposed* and announced on
the timeline as a note, so the console shows it for confirmation. Confirming makes it the conversation's next step
with its due time and owner (through the spine, so the change is on the timeline with who made it); dismissing keeps
it out of every count. :meth:`PromiseKeeper.not_kept` lists confirmed promises whose due time passed with no staff
contact in between: the leakage view's "promises not kept".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.continuity.promises import Hours, PromiseFound, find_promises
from gateway.domain.bus import Bus, Subscription
from gateway.domain.events import TimelineEventAdded
from gateway.domain.models import Channel, EventKind, TimelineEvent
from gateway.domain.ports import StorePort
from gateway.domain.service import ConversationService
from gateway.domain.spine import SpineService
from gateway.errors import ValidationError
from gateway.store import promises as sql
from gateway.store.promises import PromiseRow
from gateway.supervise import cancel_and_wait

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger(__name__)


#: The recogniser ends an utterance at every pause; staff utterances closer than this, with nothing said by the
#: caller in between, are one sentence ("내일" ... "전화 할게요" is one promise made tomorrow).
SAME_SENTENCE_S = 1.5


def _staff_sentences(turns: list[dict[str, Any]]) -> str:
    """What staff said in a call transcript, one sentence per line."""
    out: list[str] = []
    last_end: float | None = None
    for turn in sorted(turns, key=lambda t: float(t.get("at") or 0.0)):
        if turn.get("side") != "staff":
            last_end = None
            continue
        text = str(turn.get("text", "")).strip()
        at = turn.get("at")
        close = last_end is not None and isinstance(at, int | float) and at - last_end < SAME_SENTENCE_S
        if close and out:
            out[-1] += " " + text
        else:
            out.append(text)
        end = turn.get("end")
        last_end = float(end) if isinstance(end, int | float) else None
    return "\n".join(out)


def _said_by_staff(event: TimelineEvent) -> tuple[str, str | None] | None:
    """(text staff said or wrote, who) of a timeline entry, or None when staff said nothing in it."""
    meta = event.meta or {}
    if event.kind == EventKind.TRANSCRIPT.value and meta.get("live"):
        text = _staff_sentences([t for t in meta.get("turns") or [] if isinstance(t, dict)])
        return (text, meta.get("extension")) if text.strip() else None
    if event.kind == EventKind.MESSAGE_OUT.value and not meta.get("automated") and event.author:
        return event.body, event.author
    return None


class PromiseKeeper:
    """A daemon part: proposes promises from what staff say and write; confirms, dismisses, lists broken ones."""

    def __init__(
        self,
        store: StorePort,
        service: ConversationService,
        spines: SpineService,
        bus: Bus,
        office: Hours,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.service = service
        self.spines = spines
        self.bus = bus
        self.office = office
        self.clock = clock
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self.proposed = 0

    async def start(self) -> None:
        """Listen to the timeline."""
        self._sub = self.bus.subscribe("promises", maxsize=5000, types=(TimelineEventAdded,))
        self._task = asyncio.create_task(self._run(self._sub), name="promise-keeper")

    async def stop(self) -> None:
        """Stop listening."""
        if self._sub is not None:
            self._sub.close()
        if self._task is not None:
            await cancel_and_wait(self._task, owner="promise-keeper")
            self._task = None

    async def _run(self, sub: Subscription) -> None:
        async for event in sub:
            if not isinstance(event, TimelineEventAdded):
                continue
            try:
                await self.consider(event.event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("promises: reading conversation %d failed", event.conversation_id)

    async def consider(self, event: TimelineEvent) -> list[int]:
        """Propose the promises in one timeline entry; returns the new promise ids."""
        said = _said_by_staff(event)
        if said is None:
            return []
        text, who = said
        now = self.clock()
        found = find_promises(text, now, self.office)
        ids: list[int] = []
        for promise in found:
            pid = await self.store.write(functools.partial(_insert, event, promise, who, now))
            if pid is None:
                continue
            ids.append(pid)
            self.proposed += 1
            await self.service.append_event(
                event.conversation_id,
                EventKind.NOTE,
                Channel.SYSTEM,
                _proposal_text(promise, self.office, now),
                {"promise_id": pid, "proposed": True, "step": promise.step, "due": promise.due},
                external_id=f"promise:{pid}",
                author="gateway",
            )
        return ids

    async def promises(self, conversation_id: int) -> list[PromiseRow]:
        """Promises heard in a conversation, newest first."""
        return await self.store.read(lambda c: sql.for_conversation(c, conversation_id))

    async def confirm(self, promise_id: int, *, staff: str) -> PromiseRow:
        """Staff confirm a proposed promise: it becomes the next step, due when promised, owned by who said it."""
        row = await self._decide(promise_id, "confirmed", staff)
        owner = row.said_by if row.said_by and not row.said_by.isdigit() else staff
        await self.spines.set_next_step(
            row.conversation_id, row.step, source="promise", set_by=staff, due=row.due, owner=owner
        )
        return row

    async def dismiss(self, promise_id: int, *, staff: str) -> PromiseRow:
        """Staff say it was not a promise (or no longer stands): it counts nowhere."""
        return await self._decide(promise_id, "dismissed", staff)

    async def _decide(self, promise_id: int, status: str, staff: str) -> PromiseRow:
        current = await self.store.read(lambda c: sql.get(c, promise_id))
        if current is None:
            raise LookupError(f"promise {promise_id} does not exist")
        if current.status != "proposed":
            raise ValidationError(f"promise {promise_id} was already {current.status} by {current.decided_by}")
        now = self.clock()
        row = await self.store.write(lambda c: sql.decide(c, promise_id, status, staff, now))
        assert row is not None
        return row

    async def not_kept(self, since: float = 0.0) -> list[PromiseRow]:
        """Confirmed promises past due with no staff contact in time (see the module docstring)."""
        now = self.clock()
        return await self.store.read(lambda c: sql.not_kept(c, now, since))


def _insert(
    event: TimelineEvent, promise: PromiseFound, who: str | None, now: float, conn: sqlite3.Connection
) -> int | None:
    return sql.insert(conn, event.conversation_id, event.id, promise.step, promise.due, promise.phrase, who, now)


def _proposal_text(promise: PromiseFound, office: Hours, now: float) -> str:
    from gateway.web import hours  # noqa: PLC0415 - formatting only

    when = ""
    if promise.due is not None:
        when = ", due " + hours.describe_moment(promise.due, office.timezone, now)
    return f'Promise heard: "{promise.phrase}" - {promise.step}{when}. Confirm it to make it the next step.'
