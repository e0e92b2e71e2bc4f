"""What a message or voicemail is about: keyword spotting per intent, in Korean and English.

Theory of operation: the operator configures keyword lists per intent (``book``, ``cancel``, ``estimate``,
``urgent``...). Text is normalised (Unicode NFKC, case-folded, punctuation to spaces) and split into tokens. A keyword
matches a token that *starts* with it, because Korean attaches particles and endings to the word (``예약하고``,
``예약을``) and English inflects it (``booking``, ``cancelled``); a keyword of several words matches consecutive tokens.
Hits may also come from elsewhere (the recogniser's grammar pass reports keywords it heard with a confidence);
:func:`decide` merges all hits into one :class:`IntentDecision`: the intent with the most hits (ties go to the intent
listed first) and an urgency flag when any "urgent" intent was heard. The decision only ever *sets* urgency: a later
message without urgent words does not clear a flag staff or an earlier message set.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


def _default_keywords() -> dict[str, list[str]]:
    # Korean defaults are words the packaged small Korean model picks out reliably in its
    # keyword pass; short common words it confuses with ordinary speech there (가격, 비용, 빨리)
    # are left for operators to add.
    return {
        "book": ["예약", "book", "booking", "appointment", "reserve", "reservation", "schedule"],
        "cancel": ["취소", "cancel", "call off"],
        "estimate": ["견적", "estimate", "quote", "price", "how much"],
        "urgent": ["긴급", "급한", "응급", "urgent", "emergency", "emergencies", "asap", "right away"],
        "reschedule": ["reschedule", "move my appointment", "change my appointment", "another time", "different time"],
        "status": ["status", "any update", "any news", "is it ready", "still waiting"],
        "problem": ["problem", "broken", "chipped", "cracked", "leak", "pain", "hurts", "not working", "damage"],
    }


@dataclass(frozen=True)
class IntentConfig:
    """The ``[intent]`` configuration section."""

    keywords: dict[str, list[str]] = field(
        default_factory=_default_keywords,
        metadata={"doc": "keywords per intent; a keyword matches words starting with it (Korean and English)"},
    )
    urgent_intents: list[str] = field(
        default_factory=lambda: ["urgent"],
        metadata={"doc": "intents whose keywords mark the conversation urgent"},
    )


@dataclass(frozen=True, slots=True)
class KeywordHit:
    """One keyword heard or read."""

    intent: str
    keyword: str
    source: str
    """``text`` (found in the transcript or message) or ``grammar`` (the keyword pass)."""
    confidence: float = 1.0
    start: float | None = None
    """Seconds into the recording, when known."""


@dataclass(frozen=True, slots=True)
class IntentDecision:
    """What the spotted keywords say about the conversation."""

    intent: str | None
    urgent: bool
    hits: tuple[KeywordHit, ...] = ()

    @property
    def keywords(self) -> list[str]:
        """Distinct keywords heard, in order of first appearance."""
        return list(dict.fromkeys(h.keyword for h in self.hits))


_PUNCT = re.compile(r"[^\w\s]+", re.UNICODE)


def normalize(text: str) -> str:
    """NFKC, case-folded, punctuation replaced by spaces, whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", folded).replace("_", " ").split())


class IntentRules:
    """Compiled keyword lists. Build once from :class:`IntentConfig`, share freely (immutable)."""

    def __init__(self, keywords: Mapping[str, Sequence[str]], urgent_intents: Iterable[str] = ("urgent",)) -> None:
        self.urgent_intents = frozenset(urgent_intents)
        entries: list[tuple[str, str, tuple[str, ...]]] = []
        for intent, words in keywords.items():
            if not intent.strip():
                raise ValueError("intent names must not be empty: fix the [intent] keywords table")
            for word in words:
                tokens = tuple(normalize(word).split())
                if not tokens:
                    raise ValueError(f"intent {intent!r} has an empty keyword: remove it from the keywords list")
                entries.append((intent, " ".join(tokens), tokens))
        # Longest first, so "call off" is tried before a hypothetical "call".
        entries.sort(key=lambda e: -len(e[2]))
        self._entries = tuple(entries)
        self.intents = tuple(keywords)

    @classmethod
    def from_config(cls, config: IntentConfig) -> IntentRules:
        """Rules from the ``[intent]`` section."""
        return cls(config.keywords, config.urgent_intents)

    def intent_of(self, keyword: str) -> str | None:
        """The intent a keyword belongs to (exact keyword, after normalisation)."""
        norm = normalize(keyword)
        for intent, kw, _ in self._entries:
            if kw == norm:
                return intent
        return None

    def grammar_phrases(self) -> list[str]:
        """Every keyword, normalised, for a recogniser's restricted grammar."""
        return list(dict.fromkeys(kw for _, kw, _ in self._entries))

    def spot(self, text: str) -> list[KeywordHit]:
        """Keywords found in ``text``, in order (a token is consumed by one keyword at most)."""
        tokens = normalize(text).split()
        hits: list[KeywordHit] = []
        i = 0
        while i < len(tokens):
            for intent, kw, kw_tokens in self._entries:
                n = len(kw_tokens)
                window = tokens[i : i + n]
                if len(window) == n and all(
                    t == k if j < n - 1 else t.startswith(k)
                    for j, (t, k) in enumerate(zip(window, kw_tokens, strict=True))
                ):
                    hits.append(KeywordHit(intent, kw, "text"))
                    i += n
                    break
            else:
                i += 1
        return hits

    def decide(self, hits: Iterable[KeywordHit]) -> IntentDecision:
        """The intent with most hits (ties: configured first) and whether anything was urgent."""
        all_hits = tuple(hits)
        counts: dict[str, int] = {}
        for hit in all_hits:
            if hit.intent not in self.urgent_intents:
                counts[hit.intent] = counts.get(hit.intent, 0) + 1
        order = {name: n for n, name in enumerate(self.intents)}
        intent = min(counts, key=lambda k: (-counts[k], order.get(k, len(order)))) if counts else None
        urgent = any(h.intent in self.urgent_intents for h in all_hits)
        return IntentDecision(intent, urgent, all_hits)
