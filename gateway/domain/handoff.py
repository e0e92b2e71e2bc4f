"""The handoff card: what a person taking over a call, chat or text needs to know, in five lines.

Built offline and extractively (nothing is generated: every line is the customer's own words or a field staff or the
spine set) from the conversation spine and the recent timeline: what they want (intent, urgency and the customer's
latest words), what we know (captured facts with their source), what was promised (the next step and the promises
heard), the channel they prefer and why, and whether it is quiet hours now (so nobody texts at 22:00). It is a pure
function, so it costs a spine read and a timeline read, well inside the screen-pop's budget.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.models import EventKind, TimelineEvent
from gateway.domain.spine import Spine

_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff1f])\s")  # also the ideographic full stop and question mark
_WORDS_KINDS = (EventKind.MESSAGE_IN.value, EventKind.TRANSCRIPT.value)


class PromiseLike(Protocol):
    """A promise as the store keeps it."""

    @property
    def step(self) -> str: ...
    @property
    def due(self) -> float | None: ...
    @property
    def status(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PromiseLine:
    """A promise on the card."""

    step: str
    due: float | None
    status: str


@dataclass(frozen=True, slots=True)
class HandoffCard:
    """The card (see the module docstring)."""

    conversation_id: int
    headline: str
    wants: str
    customer_words: str | None
    open_question: str | None
    knows: tuple[str, ...]
    next_step: str | None
    next_step_due: float | None
    promises: tuple[PromiseLine, ...]
    preferred_channel: str | None
    preferred_because: str | None
    quiet_hours: bool


def _first_sentences(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    parts = _SENTENCE_END.split(text)
    out = ""
    for part in parts:
        if len(out) + len(part) + 1 > limit:
            break
        out = f"{out} {part}".strip()
    return out or text[: limit - 1].rstrip() + "…"


def _customer_words(event: TimelineEvent) -> str:
    if event.kind == EventKind.TRANSCRIPT.value and event.meta.get("live"):
        turns = event.meta.get("turns") or []
        said = [str(t.get("text", "")) for t in turns if isinstance(t, dict) and t.get("side") == "caller"]
        return " ".join(said)
    return event.body


def handoff_card(
    spine: Spine,
    recent: Sequence[TimelineEvent],
    *,
    quiet_hours: bool,
    promises: Sequence[PromiseLike] = (),
) -> HandoffCard:
    """The card for a conversation from its spine and its recent timeline (oldest first, as the service returns)."""
    words: str | None = None
    question: str | None = None
    for event in reversed(recent):
        if event.kind not in _WORDS_KINDS:
            continue
        said = _customer_words(event).strip()
        if not said:
            continue
        if words is None:
            words = _first_sentences(said)
        if question is None and event.kind == EventKind.MESSAGE_IN.value and "?" in said:
            question = _first_sentences(said[: said.rfind("?") + 1])
        if words is not None and question is not None:
            break
    intent = (spine.intent or "").replace("_", " ")
    wants = intent or "not known yet"
    if spine.urgent:
        wants = f"{wants} (urgent)"
    knows = tuple(f"{name.replace('_', ' ')}: {fact.text()} ({fact.source})" for name, fact in spine.facts.items())
    return HandoffCard(
        conversation_id=spine.conversation_id,
        headline=spine.summary,
        wants=wants,
        customer_words=words,
        open_question=question,
        knows=knows,
        next_step=spine.next_step,
        next_step_due=spine.next_step_due,
        promises=tuple(PromiseLine(p.step, p.due, p.status) for p in promises),
        preferred_channel=spine.channel_preference,
        preferred_because=spine.preference_why,
        quiet_hours=quiet_hours,
    )
