"""The conversation service: everything inbound becomes part of ONE conversation per customer.

Theory of operation: an adapter (SMS driver, call tracker, chat socket) hands an :class:`Inbound` to
:meth:`ConversationService.ingest`. The service normalizes the identity (E.164 phone numbers via libphonenumber,
lower-case e-mail), then, in one write transaction of the store, (1) returns the earlier result if this
(channel, external_id) was already stored (idempotent ingest: retries and replays are harmless), (2) finds the
contact owning the identity, following merges, or creates contact + identity + conversation, (3) appends the timeline
event. Only after the durable commit does it publish :class:`TimelineEventAdded` on the bus. Outbound messages are
recorded as events and queued in the outbox in the same transaction, after the opt-out check.

Identity trust (see :mod:`gateway.domain.claims`): identities a channel observes own contacts; a number someone
typed is only a claim, recorded with :meth:`ConversationService.claim_identity` on the claimant's own conversation.
A claim is verified by an SMS answer from that number (handled inside ``ingest``: the answer joins the conversation
that texted the number), by a one-time code, or by staff; only then is the number attached or, when a known contact
owns it, the two contacts merged (recorded, undoable with ``unmerge``, also along chains). ``link_identity`` and
``merge`` are for identities a person already vouched for (staff).

Replies: :meth:`ConversationService.reply` is the one call for answering a customer on any channel; it picks the
route (chat push or SMS outbox) and refuses a reply no one could receive (:class:`NoRouteError`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.domain import spine
from gateway.domain.bus import Bus
from gateway.domain.claims import ClaimMethod, ClaimVerified, CodeCheck, IdentityClaim, code_hash, code_matches
from gateway.domain.events import ContactsMerged, ConversationUpdated, OutboxQueued, TimelineEventAdded
from gateway.domain.limits import (
    BudgetSpentError,
    BudgetState,
    ClaimedNumberError,
    NumberNeedsConfirmationError,
    NumberPolicy,
    NumberVerdict,
    budget_error,
    refusal,
)
from gateway.domain.models import (
    Channel,
    ContactView,
    ConversationSummary,
    EventKind,
    IdentityKind,
    Inbound,
    InboxRow,
    IngestResult,
    ReplyResult,
    ReplyRoutes,
    SearchHit,
    StaffUser,
    TimelineEvent,
)
from gateway.domain.optout import Keyword
from gateway.domain.phone import normalize_phone
from gateway.domain.ports import StorePort
from gateway.domain.spine import SpineChange
from gateway.errors import NoRouteError, OptedOutError, PermanentError, ValidationError
from gateway.protocols.pdu import segment_count
from gateway.store import claims as cq
from gateway.store import limits as limits_sql
from gateway.store import queries as q

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Domain settings taken from the config."""

    default_region: str = "US"
    max_body_chars: int = 10_000
    outbox_expiry_s: float = 24 * 3600.0
    #: False when no SMS channel runs: replies by SMS are refused as undeliverable and the widget offers no text.
    sms_enabled: bool = True
    #: How long after a claimed number was texted an SMS answer from it still verifies the claim.
    claim_reply_window_s: float = 24 * 3600.0
    number_policy: NumberPolicy | None = None  # None: the default policy for ``default_region``
    staff_number_check: str = "warn"  # staff sends outside the policy: 'warn', 'confirm' or 'refuse'
    automated_sms_per_hour: int = 30
    automated_sms_per_day: int = 200


@dataclass(frozen=True, slots=True)
class NormalizedIdentity:
    """An identity value ready to store."""

    kind: str
    value: str
    raw: str
    valid: bool


@dataclass(frozen=True, slots=True)
class OpenedConversation:
    """Where a staff-started thread lands."""

    contact_id: int
    conversation_id: int
    created: bool


_SMS = Channel.SMS.value
_MESSAGE_IN = EventKind.MESSAGE_IN.value
#: (contact_id, conversation_id, event_id, inserted) of one ingest.
_Ingested = tuple[int, int, int, bool]


@dataclass(slots=True)
class _IngestJob:
    """One ``ingest`` as the writer thread needs it: plain values, computed on the event loop."""

    id_kind: str
    id_value: str
    raw: str
    valid: bool
    display_name: str | None
    kind: str
    channel: str
    body: str
    meta_json: str
    external_id: str
    occurred: float
    now: float
    may_verify: bool  # an SMS from a number that was texted because someone claimed it may verify that claim
    announcements: list[ContactsMerged] = field(default_factory=list)


_SPINE_FIELDS = frozenset({"intent", "next_step", "urgent", "owner", "preferred_channel"})


class ConversationService:
    """Ingest, record and query conversations. One instance per daemon."""

    def __init__(self, store: StorePort, bus: Bus, settings: ServiceSettings | None = None) -> None:
        self.store = store
        self.bus = bus
        self.settings = settings or ServiceSettings()
        # (kind, value) -> (live contact, live conversation). Touched only by write functions, which all run on
        # the store's single writer thread; cleared on any rollback, merge or unmerge, so it is never stale.
        self._identity_cache: dict[tuple[str, str], tuple[int, int, int]] = {}
        # Creation time of the newest pending claim (None: not read yet). Written only on the writer thread.
        self._latest_claim_at: float | None = None
        register = getattr(store, "add_rollback_hook", None)
        self._cache_enabled = callable(register)
        if callable(register):
            register(self._identity_cache.clear)
        self.number_policy = self.settings.number_policy or NumberPolicy(home_region=self.settings.default_region)
        # The window ('hour'/'day') whose spent budget was last announced, so the WARNING comes once per spell.
        self._budget_announced: str | None = None
        # One bound method object, so the store sees consecutive ingests as one group.
        self._ingest_group = self._ingest_many

    def _resolve_cached(self, conn: sqlite3.Connection, kind: str, value: str) -> tuple[int, int, int] | None:
        key = (kind, value)
        hit = self._identity_cache.get(key)
        if hit is not None:
            return hit
        found = q.resolve_identity(conn, kind, value)
        if found is not None and self._cache_enabled:
            if len(self._identity_cache) >= 100_000:
                self._identity_cache.clear()
            self._identity_cache[key] = found
        return found

    # -- identities --------------------------------------------------------------------------------------------------

    def normalize(self, kind: IdentityKind | str, raw: str) -> NormalizedIdentity:
        """Normalize an identity value for storage and lookup."""
        kind = IdentityKind(kind)
        if kind is IdentityKind.PHONE:
            number = normalize_phone(raw, self.settings.default_region)
            if not number.valid:
                log.info("identity: phone number could not be normalized; kept raw and flagged")
                log.debug("identity: unparsable phone number %r", raw)
            return NormalizedIdentity(kind.value, number.key, raw, number.valid)
        value = raw.strip()
        if kind is IdentityKind.EMAIL:
            value = value.lower()
            valid = "@" in value and "." in value.rsplit("@", 1)[-1]
            return NormalizedIdentity(kind.value, value, raw, valid)
        if not value:
            raise ValidationError(f"an empty {kind.value} identity cannot be stored")
        if len(value) > 200:
            raise ValidationError(f"{kind.value} identity is {len(value)} characters long; the limit is 200")
        return NormalizedIdentity(kind.value, value, raw, True)

    def _check_body(self, body: str) -> None:
        limit = self.settings.max_body_chars
        if len(body) > limit:
            raise ValidationError(
                f"message body is {len(body)} characters long; the limit is {limit} (store.max_body_chars). "
                "Split the message or raise the limit."
            )

    # -- ingest ------------------------------------------------------------------------------------------------------

    async def ingest(self, item: Inbound) -> IngestResult:
        """Store one inbound item in the right conversation and publish it. Idempotent per (channel, external_id)."""
        self._check_body(item.body)
        if not item.external_id:
            raise ValidationError("inbound item has no external_id; every channel must give one for idempotency")
        ident = self.normalize(item.identity_kind, item.identity_value)
        meta = dict(item.meta)
        if not ident.valid:
            meta.setdefault("identity_flag", "unparsed")
        meta_json = q.dumps(meta)
        now = q.now()
        occurred = item.occurred_at if item.occurred_at is not None else now
        display_name = (item.display_name or "").strip()[:120] or None

        # Plain strings, computed here: the write runs on the store's single writer thread, which is the bottleneck
        # under load, so it does nothing there that the event loop can do. Ingests that meet in one group commit are
        # written together (``_ingest_many``).
        kind_s, channel_s, body, external_id = (
            str(item.kind.value),
            str(item.channel.value),
            item.body,
            item.external_id,
        )
        job = _IngestJob(
            ident.kind,
            ident.value,
            ident.raw,
            ident.valid,
            display_name,
            kind_s,
            channel_s,
            body,
            meta_json,
            external_id,
            occurred,
            now,
            channel_s == _SMS and kind_s == _MESSAGE_IN and ident.valid,
        )
        contact_id, conv_id, event_id, inserted = await self.store.write_grouped(self._ingest_group, job)
        for announcement in job.announcements:
            self.bus.publish(announcement)
        if not inserted:
            return IngestResult(contact_id, conv_id, event_id, True)
        event = TimelineEvent(event_id, conv_id, kind_s, channel_s, body, meta, external_id, None, occurred)
        self.bus.publish(TimelineEventAdded(conv_id, contact_id, event))
        return IngestResult(contact_id, conv_id, event_id, False)

    def _ingest_many(self, conn: sqlite3.Connection, jobs: list[_IngestJob]) -> list[_Ingested]:
        """The writer-thread half of ``ingest`` for every ingest of one group commit, in order.

        Each job resolves its identity (or creates the contact) as it comes; the timeline rows of consecutive
        ordinary jobs are then written together (:func:`queries.insert_events`). Anything whose outcome could depend
        on those rows being stored first (a second item with the same external id, an SMS answering a claim, which
        may merge contacts) writes the rows gathered so far before it runs, so the result is the same as one job
        after the other.
        """
        results: list[_Ingested | None] = [None] * len(jobs)
        held: list[tuple[int, _IngestJob, int, int, int, bool]] = []  # (index, job, contact, conv, origin, known)
        held_keys: set[tuple[str, str]] = set()

        def write_held() -> None:
            if not held:
                return
            rows = [
                (conv, origin, j.kind, j.channel, j.body, j.meta_json, j.external_id, None, j.occurred, j.now)
                for _, j, _, conv, origin, _ in held
            ]
            try:
                ids = q.insert_events(conn, rows) if len(rows) > 1 else None
            except sqlite3.IntegrityError:  # a duplicate among them: let each row meet the unique index alone
                ids = None
            for n, (i, j, contact_id, conv_id, origin, known) in enumerate(held):
                if ids is not None:
                    event_id, stored_conv, inserted = ids[n], conv_id, True
                else:
                    event_id, stored_conv, inserted = q.insert_event_once(
                        conn, conv_id, j.kind, j.channel, j.body, j.meta_json, j.external_id, None, j.occurred,
                        j.now, origin,
                    )  # fmt: skip
                if not inserted:
                    results[i] = (q.contact_of(conn, stored_conv), stored_conv, event_id, False)
                    continue
                if known and j.display_name:
                    q.set_display_name_if_empty(conn, contact_id, j.display_name, j.now)
                results[i] = (contact_id, conv_id, event_id, True)
            held.clear()
            held_keys.clear()

        for i, job in enumerate(jobs):
            job.announcements.clear()  # a re-run after a rollback starts afresh
            key = (job.channel, job.external_id)
            if key in held_keys:
                write_held()
            if job.may_verify:
                answered = self._claim_answered(conn, job.id_kind, job.id_value, job.external_id, job.now)
                if answered is not None:
                    write_held()
                    results[i] = self._ingest_claim_answer(
                        conn,
                        answered,
                        job.kind,
                        job.channel,
                        job.body,
                        job.meta_json,
                        job.external_id,
                        job.occurred,
                        job.now,
                        job.announcements,
                    )
                    continue
            found = self._resolve_cached(conn, job.id_kind, job.id_value)
            if found is None:
                existing = q.find_event_by_external(conn, job.channel, job.external_id)
                if existing is not None:  # a replay whose identity was since merged away: still a duplicate
                    results[i] = (q.contact_of(conn, existing[1]), existing[1], existing[0], False)
                    continue
                contact_id, conv_id = q.create_contact(
                    conn, job.id_kind, job.id_value, job.raw, job.valid, job.display_name, job.now
                )
                held.append((i, job, contact_id, conv_id, conv_id, False))
            else:
                contact_id, conv_id, origin = found
                held.append((i, job, contact_id, conv_id, origin, True))
            held_keys.add(key)
        write_held()
        done = [r for r in results if r is not None]
        if len(done) != len(jobs):
            raise RuntimeError("ingest group left an item without a result")
        return done

    def _claim_answered(
        self, conn: sqlite3.Connection, kind: str, value: str, external_id: str, now: float
    ) -> IdentityClaim | None:
        """The pending claim this SMS answers (its number was texted from the claimant's conversation), if any."""
        since = now - self.settings.claim_reply_window_s
        if self._latest_claim_at is None:  # learnt once from the store; kept up to date by claim_identity
            self._latest_claim_at = cq.latest_pending_claim_at(conn)
        if self._latest_claim_at < since:  # no hand-off in the window: the usual inbound text costs no query
            return None
        claim = cq.texted_claim_for(conn, kind, value, since)
        if claim is None or q.find_event_by_external(conn, Channel.SMS.value, external_id) is not None:
            return None
        return claim

    def _ingest_claim_answer(
        self,
        conn: sqlite3.Connection,
        claim: IdentityClaim,
        kind_s: str,
        channel_s: str,
        body: str,
        meta_json: str,
        external_id: str,
        occurred: float,
        now: float,
        announcements: list[ContactsMerged],
    ) -> tuple[int, int, int, bool]:
        """The answer joins the conversation that texted the number; then the claim is verified (maybe a merge).

        When a known contact owns the number, the answer still belongs to that contact (undoing the merge gives it
        back to them); otherwise the number becomes the claimant's, and so does the answer.
        """
        owned = q.resolve_identity(conn, claim.kind, claim.value)
        origin = owned[2] if owned is not None else claim.conversation_id
        verified = self._verify_claim(conn, claim, ClaimMethod.SMS_REPLY, None, now, announcements)
        event_id = q.insert_event(
            conn,
            verified.conversation_id,
            kind_s,
            channel_s,
            body,
            meta_json,
            external_id,
            None,
            occurred,
            now,
            origin,
        )
        return verified.contact_id, verified.conversation_id, event_id, True

    async def append_event(
        self,
        conversation_id: int,
        kind: EventKind | str,
        channel: Channel | str,
        body: str = "",
        meta: Mapping[str, Any] | None = None,
        external_id: str | None = None,
        author: str | None = None,
        occurred_at: float | None = None,
    ) -> int:
        """Append an event to a known conversation (notes, call outcomes, transcripts, automated actions).

        With an ``external_id`` the call is idempotent and returns the first event's id.
        """
        self._check_body(body)
        kind_s, channel_s = EventKind(kind).value, Channel(channel).value
        meta_d = dict(meta or {})
        meta_json = q.dumps(meta_d)
        now = q.now()
        occurred = occurred_at if occurred_at is not None else now

        def op(conn: sqlite3.Connection) -> tuple[int, int, TimelineEvent | None]:
            if external_id is not None:
                existing = q.find_event_by_external(conn, channel_s, external_id)
                if existing is not None:
                    return existing[0], q.contact_of(conn, existing[1]), None
            conv = q.live_conversation(conn, conversation_id)
            event_id = q.insert_event(
                conn, conv, kind_s, channel_s, body, meta_json, external_id, author, occurred, now
            )
            event = TimelineEvent(event_id, conv, kind_s, channel_s, body, meta_d, external_id, author, occurred)
            return event_id, q.contact_of(conn, conv), event

        event_id, contact_id, event = await self.store.write(op)
        if event is not None:
            self.bus.publish(TimelineEventAdded(event.conversation_id, contact_id, event))
        return event_id

    async def update_event_meta(self, event_id: int, patch: Mapping[str, Any]) -> None:
        """Merge keys into an event's meta (e.g. transcription state of a voicemail)."""
        await self.store.write(lambda c: q.update_event_meta(c, event_id, patch))

    # -- outbound ----------------------------------------------------------------------------------------------------

    async def enqueue_outbound(
        self,
        conversation_id: int,
        channel: Channel | str,
        to: str,
        body: str,
        *,
        automated: bool,
        override_optout: bool = False,
        author: str | None = None,
        confirm_number: bool = False,
        event_meta: Mapping[str, Any] | None = None,
    ) -> int:
        """Record an outbound message on the timeline and queue it in the outbox. Returns the outbox id.

        Refuses with :class:`PermanentError` when the recipient opted out, unless a person explicitly overrides it
        (automated messages can never override). An automated (or visitor-triggered) SMS must also pass the number
        policy (:class:`~gateway.domain.limits.NumberRefusedError`) and fit the global automated-SMS budget
        (:class:`~gateway.domain.limits.BudgetSpentError`), checked in the same transaction that queues it. A staff
        SMS to a number outside the policy is handled as ``staff_number_check`` says: sent with a warning on the
        timeline, sent only with ``confirm_number=True``, or refused. ``event_meta`` adds keys to the event's meta
        (an automated message's ``rule`` and ``job_id``); it cannot change ``to``, ``parts`` or ``automated``.
        """
        self._check_body(body)
        if not body.strip():
            raise ValidationError("an empty message cannot be sent")
        channel_s = Channel(channel).value
        address = to
        meta: dict[str, Any] = {}
        if channel_s == Channel.SMS.value:
            number = normalize_phone(to, self.settings.default_region)
            if not number.valid or number.e164 is None:
                raise ValidationError(f"cannot send an SMS to {to!r}: not a complete phone number")
            address = number.e164
            verdict = self.check_number(address, purpose="sms", staff=not automated, confirmed=confirm_number)
            if not verdict.allowed:
                meta["number_warning"] = verdict.reason
                if confirm_number:
                    meta["number_confirmed_by"] = author or "staff"
        parts = segment_count(body)[1] if channel_s == Channel.SMS.value else 1
        now = q.now()
        expires = now + self.settings.outbox_expiry_s
        meta = {**dict(event_meta or {}), "to": address, "parts": parts, "automated": automated, **meta}
        budgeted = automated and channel_s == Channel.SMS.value

        def op(conn: sqlite3.Connection) -> tuple[int, TimelineEvent, int]:
            if q.is_suppressed(conn, address) and (automated or not override_optout):
                raise OptedOutError(
                    "the recipient opted out (STOP); automated messages are never sent to them, and a staff reply "
                    "needs an explicit override"
                )
            if budgeted:
                state = self._budget(conn, now)
                if state.left <= 0:
                    raise budget_error(state)
            conv = q.live_conversation(conn, conversation_id)
            # A staff text to a number someone only typed needs a confirmation; the visitor's own hand-off text to
            # their claimed number is how a claim gets verified, and the number policy and budget bound it.
            claimed = (
                not automated
                and channel_s == Channel.SMS.value
                and _only_claimed(conn, conv, address, confirmed=confirm_number)
            )
            meta_d = dict(meta, override_optout=True) if override_optout else dict(meta)
            if claimed:
                meta_d.setdefault("number_confirmed_by", author or "staff")
                meta_d.setdefault("number_warning", "a claimed number, not verified")
            event_id = q.insert_event(
                conn, conv, EventKind.MESSAGE_OUT.value, channel_s, body, q.dumps(meta_d), None, author, now, now
            )
            outbox_id = q.insert_outbox(
                conn, conv, channel_s, address, body, parts, automated, author, event_id, now, expires
            )
            if override_optout:
                q.audit(conn, author or "system", "optout_override", address, {"outbox_id": outbox_id}, now)
            if "number_confirmed_by" in meta_d:
                q.audit(
                    conn,
                    author or "staff",
                    "number_policy_override",
                    address,
                    {"reason": meta_d["number_warning"]},
                    now,
                )
            event = TimelineEvent(
                event_id, conv, EventKind.MESSAGE_OUT.value, channel_s, body, meta_d, None, author, now, "queued"
            )
            return outbox_id, event, q.contact_of(conn, conv)

        try:
            outbox_id, event, contact_id = await self.store.write(op)
        except PermanentError as err:
            if isinstance(err, BudgetSpentError):
                self._announce_budget_spent(str(err), err.window)
            raise
        self.bus.publish(TimelineEventAdded(event.conversation_id, contact_id, event))
        self.bus.publish(OutboxQueued(outbox_id, event.conversation_id, channel_s))
        return outbox_id

    async def answer_keyword(
        self,
        conversation_id: int,
        keyword: Keyword,
        to: str | None,
        reply: str,
        *,
        source_id: str,
        expires_in: float,
    ) -> int | None:
        """Record a STOP/START/HELP keyword a customer sent and queue its one automated answer to ``to``.

        STOP and START get an opt-out / opt-in entry; without ``to`` (a sender that cannot be answered) that is all.
        The answer is queued even to a suppressed number: the
        confirmation of the STOP itself is the one message an opted-out number receives. Both writes are idempotent
        per ``source_id`` (the inbound message's external id), so a replay after a crash queues nothing twice.
        Returns the outbox id, or None when nothing was queued now.
        """
        if keyword is not Keyword.HELP:
            kind = EventKind.OPT_OUT if keyword is Keyword.STOP else EventKind.OPT_IN
            note = (
                "Opted out of text messages (replied STOP)"
                if keyword is Keyword.STOP
                else "Opted in to text messages again (replied START)"
            )
            await self.append_event(conversation_id, kind, Channel.SMS, note, external_id=f"{source_id}:keyword")
        if to is None:
            return None
        self._check_body(reply)
        parts = segment_count(reply)[1]
        now = q.now()
        meta = {"to": to, "parts": parts, "automated": True, "rule": "keyword_reply", "keyword_reply": True}
        meta_json = q.dumps(meta)
        kind_s, channel_s, author = EventKind.MESSAGE_OUT.value, Channel.SMS.value, "system"

        def op(conn: sqlite3.Connection) -> tuple[int, TimelineEvent, int] | None:
            conv = q.live_conversation(conn, conversation_id)
            event_id, _, inserted = q.insert_event_once(
                conn, conv, kind_s, channel_s, reply, meta_json, f"{source_id}:reply", author, now, now
            )
            if not inserted:
                return None
            outbox_id = q.insert_outbox(
                conn, conv, channel_s, to, reply, parts, True, author, event_id, now, now + expires_in
            )
            event = TimelineEvent(
                event_id, conv, kind_s, channel_s, reply, meta, f"{source_id}:reply", author, now, "queued"
            )
            return outbox_id, event, q.contact_of(conn, conv)

        queued = await self.store.write(op)
        if queued is None:
            return None
        outbox_id, event, contact_id = queued
        self.bus.publish(TimelineEventAdded(event.conversation_id, contact_id, event))
        self.bus.publish(OutboxQueued(outbox_id, event.conversation_id, channel_s))
        return outbox_id

    # -- limits ------------------------------------------------------------------------------------------------------

    def check_number(
        self, number: str, *, purpose: str = "sms", staff: bool = False, confirmed: bool = False
    ) -> NumberVerdict:
        """Apply the number policy before texting (``purpose='sms'``) or dialling (``'dial'``) ``number``.

        Raises :class:`~gateway.domain.limits.NumberRefusedError` for an automated or visitor-triggered send to a
        number outside the policy. For staff (``staff=True``) ``staff_number_check`` decides: 'warn' returns the
        verdict (the caller records the warning), 'confirm' raises
        :class:`~gateway.domain.limits.NumberNeedsConfirmationError` unless ``confirmed``, 'refuse' raises.
        """
        verdict = self.number_policy.check(number, purpose=purpose)
        if verdict.allowed:
            return verdict
        mode = self.settings.staff_number_check if staff else "refuse"
        if mode == "warn":
            log.warning("number policy: staff %s a number outside the policy (%s)", _VERB[purpose], verdict.kind)
            return verdict
        if mode == "confirm" and confirmed:
            log.warning("number policy: staff confirmed a %s to a %s number", purpose, verdict.kind)
            return verdict
        err = refusal(verdict, purpose=purpose)
        if mode == "confirm":
            raise NumberNeedsConfirmationError(
                f"{err} Confirm to {'call' if purpose == 'dial' else 'send'} anyway.",
                kind=verdict.kind,
                region=verdict.region,
            )
        log.info("number policy: refused to %s a %s number", "dial" if purpose == "dial" else "text", verdict.kind)
        raise err

    def _budget(self, conn: sqlite3.Connection, now: float) -> BudgetState:
        used_hour, used_day = limits_sql.automated_sms_counts(conn, now)
        per_hour, per_day = self.settings.automated_sms_per_hour, self.settings.automated_sms_per_day
        return BudgetState(per_hour, per_day, used_hour, used_day)

    def _announce_budget_spent(self, words: str, window: str) -> None:
        if self._budget_announced != window:
            self._budget_announced = window
            log.warning("automated SMS budget: %s", words)

    async def budget_left(self) -> BudgetState:
        """The automated-SMS budget now: how many automated texts may still be queued this hour and today."""
        now = q.now()
        state = await self.store.read(lambda c: self._budget(c, now))
        if state.spent_window is None and self._budget_announced is not None:
            log.info("automated SMS budget: available again (%d left this hour)", state.left)
            self._budget_announced = None
        return state

    # -- stitching ---------------------------------------------------------------------------------------------------

    async def link_identity(
        self, conversation_id: int, kind: IdentityKind | str, raw: str, *, author: str | None = None
    ) -> tuple[int, int | None]:
        """Attach an identity to the conversation's contact, merging with its owner if it is already known.

        Returns (conversation_id to use from now on, merge_id or None). The kept contact is the one that already
        owned the identity (the long-known customer); the other one is merged into it.
        """
        ident = self.normalize(kind, raw)
        if not ident.valid:
            raise ValidationError(f"{raw!r} is not a usable {ident.kind}; ask for the full number with area code")
        now = q.now()

        def op(conn: sqlite3.Connection) -> tuple[int, int | None, ContactsMerged | None]:
            conv = q.live_conversation(conn, conversation_id)
            contact = q.contact_of(conn, conv)
            owner = q.find_identity(conn, ident.kind, ident.value)
            if owner is None:
                q.add_identity(conn, contact, ident.kind, ident.value, ident.raw, ident.valid, now)
                return conv, None, None
            if owner == contact:
                return conv, None, None
            self._identity_cache.clear()
            merge_id, keep_conv, merged_conv = q.merge_contacts(conn, owner, contact, f"same {ident.kind}", author, now)
            q.insert_event(
                conn,
                keep_conv,
                EventKind.MERGE.value,
                Channel.SYSTEM.value,
                f"Merged with another contact: same {ident.kind}",
                q.dumps({"merge_id": merge_id, "merged_contact_id": contact, "identity_kind": ident.kind}),
                None,
                author,
                now,
                now,
            )
            q.audit(conn, author or "system", "merge", str(merge_id), {"keep": owner, "merged": contact}, now)
            return keep_conv, merge_id, ContactsMerged(merge_id, owner, contact, keep_conv, merged_conv)

        new_conv, merge_id, announcement = await self.store.write(op)
        if announcement is not None:
            self.bus.publish(announcement)
        return new_conv, merge_id

    async def merge(self, keep_contact_id: int, merged_contact_id: int, *, author: str, reason: str) -> int:
        """Staff merge two contacts by hand. Returns the merge id."""
        if keep_contact_id == merged_contact_id:
            raise ValidationError("a contact cannot be merged with itself")
        now = q.now()

        def op(conn: sqlite3.Connection) -> ContactsMerged:
            keep = q.resolve_contact(conn, keep_contact_id)
            merged = q.resolve_contact(conn, merged_contact_id)
            if keep == merged:
                raise ValidationError("these contacts are already one")
            self._identity_cache.clear()
            merge_id, keep_conv, merged_conv = q.merge_contacts(conn, keep, merged, reason, author, now)
            q.insert_event(
                conn,
                keep_conv,
                EventKind.MERGE.value,
                Channel.SYSTEM.value,
                f"Merged by {author}: {reason}",
                q.dumps({"merge_id": merge_id, "merged_contact_id": merged}),
                None,
                author,
                now,
                now,
            )
            q.audit(conn, author, "merge", str(merge_id), {"keep": keep, "merged": merged}, now)
            return ContactsMerged(merge_id, keep, merged, keep_conv, merged_conv)

        result = await self.store.write(op)
        self.bus.publish(result)
        return result.merge_id

    async def unmerge(self, merge_id: int, *, author: str) -> ContactsMerged:
        """Staff undo a merge: both contacts get their own timelines back."""
        now = q.now()

        def op(conn: sqlite3.Connection) -> ContactsMerged:
            self._identity_cache.clear()
            keep, merged, keep_conv, merged_conv = q.unmerge(conn, merge_id, author, now)
            for conv in (keep_conv, merged_conv):
                q.insert_event(
                    conn,
                    conv,
                    EventKind.UNMERGE.value,
                    Channel.SYSTEM.value,
                    f"Merge undone by {author}",
                    q.dumps({"merge_id": merge_id}),
                    None,
                    author,
                    now,
                    now,
                )
            q.audit(conn, author, "unmerge", str(merge_id), {"keep": keep, "merged": merged}, now)
            return ContactsMerged(merge_id, keep, merged, keep_conv, merged_conv, undone=True)

        result = await self.store.write(op)
        self.bus.publish(result)
        return result

    # -- claims ------------------------------------------------------------------------------------------------------

    async def claim_identity(
        self,
        conversation_id: int,
        kind: IdentityKind | str,
        raw: str,
        *,
        visitor_hash: str | None = None,
        author: str | None = None,
    ) -> IdentityClaim:
        """Record that someone in this conversation SAYS an identity is theirs. Changes nothing else.

        The claim lands on the claimant's own conversation (and its timeline, as "says they are ..., not
        verified"); it never merges contacts and never makes the number a reply route. Idempotent per
        (conversation, value) while pending.
        """
        ident = self.normalize(kind, raw)
        if not ident.valid:
            raise ValidationError(f"{raw!r} is not a usable {ident.kind}; ask for the full number with area code")
        now = q.now()

        def op(conn: sqlite3.Connection) -> tuple[IdentityClaim, TimelineEvent | None, int]:
            conv = q.live_conversation(conn, conversation_id)
            contact = q.contact_of(conn, conv)
            before = cq.claims_for_conversations(conn, [conv])
            claim = cq.add_claim(conn, conv, contact, visitor_hash, ident.kind, ident.value, ident.raw, now)
            self._latest_claim_at = max(self._latest_claim_at or 0.0, now)
            if any(c.id == claim.id for c in before):
                return claim, None, contact
            text = f"Says they are {ident.value}, not verified"
            meta = {"claim_id": claim.id, "identity_kind": ident.kind, "value": ident.value, "verified": False}
            event_id = q.insert_event(
                conn, conv, EventKind.CLAIM.value, Channel.SYSTEM.value, text, q.dumps(meta), None, author, now, now
            )
            event = TimelineEvent(
                event_id, conv, EventKind.CLAIM.value, Channel.SYSTEM.value, text, meta, None, author, now
            )
            return claim, event, contact

        claim, event, contact = await self.store.write(op)
        if event is not None:
            self.bus.publish(TimelineEventAdded(event.conversation_id, contact, event))
        return claim

    async def claims(self, conversation_id: int) -> list[IdentityClaim]:
        """Claims made in a conversation or in any conversation merged into it, newest first."""

        def op(conn: sqlite3.Connection) -> list[IdentityClaim]:
            conv = q.live_conversation(conn, conversation_id)
            return cq.claims_for_conversations(conn, q.subtree_conversations(conn, q.contact_of(conn, conv)))

        return await self.store.read(op)

    async def claim(self, claim_id: int) -> IdentityClaim | None:
        """One claim by id."""
        return await self.store.read(lambda c: cq.get_claim(c, claim_id))

    async def set_claim_code(self, claim_id: int, code: str, ttl_s: float) -> None:
        """Remember the hash of a one-time code sent to the claimed number (valid ``ttl_s`` seconds)."""
        expires = q.now() + ttl_s
        digest = code_hash(claim_id, code)
        await self.store.write(lambda c: cq.set_code(c, claim_id, digest, expires))

    async def mark_claim_texted(self, claim_id: int) -> None:
        """A text to the claimed number was queued from the claimant's conversation: its answer may verify it."""
        now = q.now()
        await self.store.write(lambda c: cq.mark_texted(c, claim_id, now))

    async def verify_claim_code(
        self, claim_id: int, code: str, *, max_attempts: int, by: str | None = None
    ) -> tuple[CodeCheck, ClaimVerified | None]:
        """Check a typed one-time code. Every attempt counts (kept even when the code is wrong)."""
        now = q.now()
        announcements: list[ContactsMerged] = []

        def op(conn: sqlite3.Connection) -> tuple[CodeCheck, ClaimVerified | None]:
            claim = cq.get_claim(conn, claim_id)
            if claim is None or claim.state != "pending":
                return CodeCheck.NONE, None
            stored, expires, attempts = cq.code_state(conn, claim_id)
            if stored is None:
                return CodeCheck.NONE, None
            if attempts >= max_attempts:
                return CodeCheck.EXHAUSTED, None
            if expires is not None and now > expires:
                return CodeCheck.EXPIRED, None
            cq.count_code_attempt(conn, claim_id)
            if not code_matches(claim_id, code, stored):
                return CodeCheck.WRONG, None
            return CodeCheck.OK, self._verify_claim(conn, claim, ClaimMethod.CODE, by, now, announcements)

        result = await self.store.write(op)
        for announcement in announcements:
            self.bus.publish(announcement)
        return result

    async def confirm_claim(self, claim_id: int, *, author: str) -> ClaimVerified:
        """Staff confirm a claim in the console (one click; a resulting merge is undoable)."""
        now = q.now()
        announcements: list[ContactsMerged] = []

        def op(conn: sqlite3.Connection) -> ClaimVerified:
            claim = cq.get_claim(conn, claim_id)
            if claim is None:
                raise LookupError(f"claim {claim_id} does not exist")
            if claim.state != "pending":
                raise ValueError(f"claim {claim_id} is already {claim.state}")
            return self._verify_claim(conn, claim, ClaimMethod.STAFF, author, now, announcements)

        result = await self.store.write(op)
        for announcement in announcements:
            self.bus.publish(announcement)
        return result

    def _verify_claim(
        self,
        conn: sqlite3.Connection,
        claim: IdentityClaim,
        method: ClaimMethod,
        by: str | None,
        now: float,
        announcements: list[ContactsMerged],
    ) -> ClaimVerified:
        """Inside a write: the claim is proven. Attach the identity, or merge the claimant into its known owner."""
        self._identity_cache.clear()
        claimant = q.resolve_contact(conn, claim.contact_id)
        claimant_conv = q.conversation_of(conn, claimant)
        owner = q.find_identity(conn, claim.kind, claim.value)
        merge_id: int | None = None
        keep, keep_conv = claimant, claimant_conv
        if owner is None:
            q.add_identity(conn, claim.contact_id, claim.kind, claim.value, claim.raw, True, now)
        elif owner != claimant:
            reason = f"claimed {claim.kind} verified ({method.value})"
            merge_id, keep_conv, merged_conv = q.merge_contacts(conn, owner, claimant, reason, by, now)
            keep = owner
            q.insert_event(
                conn,
                keep_conv,
                EventKind.MERGE.value,
                Channel.SYSTEM.value,
                f"Merged with another contact: {reason}",
                q.dumps({"merge_id": merge_id, "merged_contact_id": claimant, "claim_id": claim.id}),
                None,
                by,
                now,
                now,
            )
            q.audit(conn, by or "system", "merge", str(merge_id), {"keep": owner, "merged": claimant}, now)
            announcements.append(ContactsMerged(merge_id, owner, claimant, keep_conv, merged_conv))
        cq.mark_verified(conn, claim.id, method.value, by, merge_id, now)
        how = {"sms_reply": "by an SMS answer", "code": "by a one-time code", "staff": f"by {by or 'staff'}"}
        q.insert_event(
            conn,
            keep_conv,
            EventKind.CLAIM.value,
            Channel.SYSTEM.value,
            f"{claim.value} verified {how[method.value]}",
            q.dumps({"claim_id": claim.id, "value": claim.value, "verified": True, "method": method.value}),
            None,
            by,
            now,
            now,
        )
        q.audit(conn, by or "system", "claim_verified", str(claim.id), {"method": method.value}, now)
        return ClaimVerified(claim.id, method.value, keep_conv, keep, merge_id)

    # -- replies -----------------------------------------------------------------------------------------------------

    async def routes(self, conversation_id: int) -> ReplyRoutes:
        """Which channels can reach this conversation's customer (the console offers only these)."""
        return await self.store.read(lambda c: self._routes(c, q.live_conversation(c, conversation_id)))

    def _routes(self, conn: sqlite3.Connection, conv: int) -> ReplyRoutes:
        contact = q.contact_of(conn, conv)
        phone = q.reply_phone(conn, contact)
        visitor = cq.latest_chat_visitor(conn, conv, contact)
        channels: list[str] = []
        unavailable: dict[str, str] = {}
        if visitor is not None:
            channels.append(Channel.CHAT.value)
        else:
            unavailable[Channel.CHAT.value] = "this customer never wrote through the website chat"
        if not self.settings.sms_enabled:
            unavailable[Channel.SMS.value] = "SMS is turned off on this gateway ([sms] enabled = false)"
        elif phone is None:
            unavailable[Channel.SMS.value] = cq.no_phone_reason(conn, contact)
        else:
            channels.append(Channel.SMS.value)
        return ReplyRoutes(tuple(channels), phone, visitor, unavailable)

    async def reply(
        self,
        conversation_id: int,
        channel: Channel | str,
        body: str,
        author: str,
        *,
        to: str | None = None,
        override_optout: bool = False,
        confirm_number: bool = False,
    ) -> ReplyResult:
        """A staff reply to a customer, on any channel: the one domain call the console and the API use.

        Chat replies are stored on the timeline addressed to the visitor who wrote last (the chat channel pushes
        them, or the visitor sees them on return); SMS replies go through the outbox to the contact's reply number.
        A reply that could reach no one raises :class:`NoRouteError` with what to do instead.
        """
        channel_s = Channel(channel).value
        if channel_s not in (Channel.CHAT.value, Channel.SMS.value):
            raise ValidationError(f"cannot reply by {channel_s}: use chat or sms")
        routes = await self.routes(conversation_id)
        if channel_s == Channel.CHAT.value:
            if routes.chat_visitor is None:
                raise NoRouteError(f"cannot reply by chat: {routes.unavailable.get('chat', '')}; reply by SMS or call")
            event_id = await self.append_event(
                conversation_id,
                EventKind.MESSAGE_OUT,
                Channel.CHAT,
                body,
                meta={"to": routes.chat_visitor},
                author=author,
            )
            return ReplyResult(channel_s, event_id, None, routes.chat_visitor)
        if not self.settings.sms_enabled:
            raise NoRouteError(f"cannot reply by SMS: {routes.unavailable.get('sms', 'SMS is off')}")
        target = to or routes.phone
        if target is None:
            other = "reply by chat" if routes.chat_visitor else "call them or write a note"
            raise NoRouteError(f"cannot reply by SMS: {routes.unavailable.get('sms', '')}; {other}")
        number = normalize_phone(target, self.settings.default_region)
        if not number.valid or number.e164 is None:
            raise NoRouteError(f"cannot reply by SMS to {target!r}: not a complete phone number")
        outbox_id = await self.enqueue_outbound(
            conversation_id,
            Channel.SMS,
            number.e164,
            body,
            automated=False,
            override_optout=override_optout,
            author=author,
            confirm_number=confirm_number,
        )
        event_id = await self.store.read(lambda c: q.outbox_event_id(c, outbox_id))
        return ReplyResult(channel_s, event_id, outbox_id, number.e164)

    # -- conversation fields ---------------------------------------------------------------------------------------

    async def update_conversation(
        self,
        conversation_id: int,
        *,
        intent: str | None = None,
        next_step: str | None = None,
        urgent: bool | None = None,
        owner: str | None = None,
        preferred_channel: str | None = None,
        status: str | None = None,
        facts: Mapping[str, Any] | None = None,
        author: str | None = None,
    ) -> None:
        """Set the fields given (None leaves a field as it is).

        Spine fields (intent, next step, urgent, owner, preferred channel) are written by the spine's one writer, so
        each change is a timeline entry naming ``author`` (or "the gateway" when there is none)."""
        fields: dict[str, Any] = {
            k: v
            for k, v in {
                "intent": intent,
                "next_step": next_step,
                "urgent": urgent,
                "owner": owner,
                "preferred_channel": preferred_channel,
                "status": status,
                "facts": facts,
            }.items()
            if v is not None
        }
        if not fields:
            return
        now = q.now()

        spine_fields = {k: v for k, v in fields.items() if k in _SPINE_FIELDS}
        other = {k: v for k, v in fields.items() if k not in _SPINE_FIELDS}

        def op(conn: sqlite3.Connection) -> tuple[int, SpineChange | None]:
            conv = q.live_conversation(conn, conversation_id)
            change = None
            if spine_fields:
                set_by = author or spine.SYSTEM
                source = "staff" if author else spine.SYSTEM
                change = spine.write_fields(conn, conv, spine_fields, source=source, set_by=set_by, now=now)
            if other:
                q.update_conversation(conn, conv, other, now)
            if author is not None:
                q.audit(conn, author, "update_conversation", str(conv), fields, now)
            return conv, change

        conv, change = await self.store.write(op)
        if change is not None:
            self.bus.publish(TimelineEventAdded(conv, change.contact_id, change.event))
        self.bus.publish(ConversationUpdated(conv, fields))

    async def open_conversation(
        self, kind: IdentityKind | str, raw: str, *, display_name: str | None = None
    ) -> OpenedConversation:
        """The conversation that owns an identity, created (contact + identity + conversation) when there is none.

        For staff who reach out first: a text or a call to a number nobody has written from yet still lands in that
        number's one conversation, and the customer's answer joins it.
        """
        ident = self.normalize(kind, raw)
        if not ident.valid:
            raise ValidationError(f"{raw[:40]!r} is not a usable {ident.kind}; give the full number with area code")
        name = (display_name or "").strip()[:120] or None
        now = q.now()

        def op(conn: sqlite3.Connection) -> OpenedConversation:
            found = q.resolve_identity(conn, ident.kind, ident.value)
            if found is not None:
                return OpenedConversation(found[0], found[1], False)
            contact_id, conv_id = q.create_contact(conn, ident.kind, ident.value, ident.raw, ident.valid, name, now)
            return OpenedConversation(contact_id, conv_id, True)

        return await self.store.write(op)

    async def rename_contact(self, contact_id: int, name: str | None, *, author: str) -> None:
        """Staff set a contact's display name."""
        now = q.now()
        clean = (name or "").strip()[:120] or None

        def op(conn: sqlite3.Connection) -> None:
            q.set_display_name(conn, contact_id, clean, now)
            q.audit(conn, author, "rename_contact", str(contact_id), {"name": clean}, now)

        await self.store.write(op)

    # -- queries -----------------------------------------------------------------------------------------------------

    async def find_contact(self, kind: IdentityKind | str, raw_value: str) -> ContactView | None:
        """The contact owning an identity (following merges), or None."""
        try:
            ident = self.normalize(kind, raw_value)
        except ValidationError:
            return None

        def op(conn: sqlite3.Connection) -> ContactView | None:
            contact = q.find_identity(conn, ident.kind, ident.value)
            return q.contact_view(conn, contact) if contact is not None else None

        return await self.store.read(op)

    async def contact(self, contact_id: int) -> ContactView | None:
        """A contact by id (following merges)."""
        return await self.store.read(lambda c: q.contact_view(c, q.resolve_contact(c, contact_id)))

    async def summary(self, conversation_id: int) -> ConversationSummary | None:
        """What staff need at a glance (screen-pop, phone display label)."""
        return await self.store.read(lambda c: q.summary(c, q.live_conversation(c, conversation_id)))

    async def timeline(
        self, conversation_id: int, limit: int = 50, before_id: int | None = None
    ) -> list[TimelineEvent]:
        """The last events of a conversation, oldest first."""
        limit = max(1, min(limit, 500))
        return await self.store.read(lambda c: q.timeline(c, q.live_conversation(c, conversation_id), limit, before_id))

    async def inbox(self, limit: int = 100, owner: str | None = None) -> list[InboxRow]:
        """Open conversations, longest-waiting customer first."""
        return await self.store.read(lambda c: q.inbox(c, limit, owner))

    async def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        """Full-text search over messages, notes and transcripts."""
        return await self.store.read(lambda c: q.search(c, text, limit))

    async def is_suppressed(self, address: str) -> bool:
        """True when the address (a phone number in any format) opted out."""
        number = normalize_phone(address, self.settings.default_region)
        return await self.store.read(lambda c: q.is_suppressed(c, number.key))

    async def staff_by_extension(self, extension: str) -> StaffUser | None:
        """The staff member bound to a SIP extension."""
        return await self.store.read(lambda c: q.staff_by_extension(c, extension))

    async def staff_by_username(self, username: str) -> StaffUser | None:
        """A staff member by login name."""
        return await self.store.read(lambda c: q.staff_by_username(c, username))


_VERB = {"sms": "texted", "dial": "dialled"}


def _only_claimed(conn: sqlite3.Connection, conversation_id: int, address: str, *, confirmed: bool) -> bool:
    """True when ``address`` is only an unverified claim on the conversation; raises unless a person confirmed."""
    if not limits_sql.only_claimed(conn, conversation_id, address):
        return False
    if not confirmed:
        raise ClaimedNumberError(
            "this number was only typed in (a claim, not verified): confirm it is the customer's before texting "
            "it, or verify the claim first",
            kind="claimed",
            region=None,
        )
    return True
