"""The ports between the parts, each defined once: what the domain needs from the store (``StorePort``, which
``gateway.store.db.Store`` fits) and what every adapter needs from the conversation service (``ConversationPort``,
which ``gateway.domain.service.ConversationService`` fits).

Channels and services take a port instead of the concrete class so unit tests can pass a small fake; the daemon
always passes the real one. Adapters never write the timeline themselves: they call the conversation port.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gateway.domain.claims import ClaimVerified, CodeCheck, IdentityClaim
from gateway.domain.limits import NumberVerdict
from gateway.domain.models import (
    Channel,
    ContactView,
    ConversationSummary,
    EventKind,
    IdentityKind,
    Inbound,
    IngestResult,
)
from gateway.domain.optout import Keyword

if TYPE_CHECKING:
    from gateway.domain.service import ServiceSettings

T = TypeVar("T")
ItemT = TypeVar("ItemT")


class StorePort(Protocol):
    """Run a function in the single writer's group-commit transaction, or on a read connection."""

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def write_grouped(self, group: Callable[[sqlite3.Connection, list[ItemT]], list[T]], item: ItemT) -> T:
        """Like ``write``; consecutive items of the same ``group`` in one transaction reach it as one list."""
        ...

    def park(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run ``fn`` last in the next group commit other writes start; resolves once committed."""
        ...

    def unpark(self, future: asyncio.Future[Any], *, run: bool = True) -> bool:
        """Let a parked write go now, or drop it unrun; False when it already went."""
        ...

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...


class ConversationPort(Protocol):
    """What the channel adapters and transcription need from the conversation service (the timeline's only writer)."""

    @property
    def settings(self) -> ServiceSettings:
        """Limits and defaults (body size, region)."""
        ...

    async def ingest(self, item: Inbound) -> IngestResult:
        """Store one inbound item in the right conversation and publish it (idempotent per external id)."""
        ...

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
        """Append an entry to a known conversation; with ``external_id`` idempotent."""
        ...

    async def update_event_meta(self, event_id: int, patch: Mapping[str, Any]) -> None:
        """Merge keys into an entry's meta."""
        ...

    async def update_conversation(
        self,
        conversation_id: int,
        *,
        intent: str | None = None,
        next_step: str | None = None,
        urgent: bool | None = None,
        preferred_channel: str | None = None,
    ) -> None:
        """Set conversation fields (None leaves a field as it is)."""
        ...

    async def enqueue_outbound(
        self,
        conversation_id: int,
        channel: Channel | str,
        to: str,
        body: str,
        *,
        automated: bool,
        author: str | None = None,
        event_meta: Mapping[str, Any] | None = None,
    ) -> int:
        """Record an outbound message and queue it (opt-out, number policy and budget checked); the outbox id."""
        ...

    async def claim_identity(
        self,
        conversation_id: int,
        kind: IdentityKind | str,
        raw: str,
        *,
        visitor_hash: str | None = None,
        author: str | None = None,
    ) -> IdentityClaim:
        """Record that someone in this conversation says an identity is theirs (nothing else changes)."""
        ...

    async def set_claim_code(self, claim_id: int, code: str, ttl_s: float) -> None:
        """Remember the hash of a one-time code sent to the claimed number."""
        ...

    async def mark_claim_texted(self, claim_id: int) -> None:
        """A text to the claimed number left the claimant's conversation."""
        ...

    async def verify_claim_code(
        self, claim_id: int, code: str, *, max_attempts: int, by: str | None = None
    ) -> tuple[CodeCheck, ClaimVerified | None]:
        """Check a typed one-time code (every attempt counts)."""
        ...

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
        """Record a STOP/START/HELP keyword and queue its one automated answer (to ``to``); None if none queued."""
        ...

    async def find_contact(self, kind: IdentityKind, raw_value: str) -> ContactView | None:
        """The contact owning an identity, if any."""
        ...

    def check_number(
        self, number: str, *, purpose: str = "sms", staff: bool = False, confirmed: bool = False
    ) -> NumberVerdict:
        """Apply the number policy before texting or dialling ``number`` (raises when it forbids it)."""
        ...

    async def summary(self, conversation_id: int) -> ConversationSummary | None:
        """What staff see first about a conversation."""
        ...
