"""Opt-out keywords for SMS (STOP / START / HELP), decided at ingest.

A message counts only when its whole body is the keyword (any case, any width, surrounding spaces, runs of spaces
inside "OPT OUT" collapsed, punctuation and emoji ignored): "please stop calling me" is a message for a person, not an
opt-out.
The caller stores the suppression in the same transaction as the message and sends one confirmation.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_STOP = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "OPT OUT",
)
DEFAULT_START = ("START", "UNSTOP")
DEFAULT_HELP = ("HELP",)

_SPACES = re.compile(r"\s+")


class Keyword(StrEnum):
    """What a keyword message asks for."""

    STOP = "stop"
    START = "start"
    HELP = "help"


def _norm(text: str) -> str:
    """Compare keywords the way people type them: compatibility forms folded (NFKC: full-width STOP is STOP),
    punctuation, symbols and emoji dropped ("Stop!", "STOP 🙏"), spaces collapsed, case ignored."""
    folded = unicodedata.normalize("NFKC", text)
    kept = "".join(ch if ch.isspace() or unicodedata.category(ch)[0] in "LN" else "" for ch in folded)
    return _SPACES.sub(" ", kept.strip()).casefold()


@dataclass(frozen=True)
class OptOutPolicy:
    """Keyword lists and the one confirmation each keyword gets."""

    stop: tuple[str, ...] = DEFAULT_STOP
    start: tuple[str, ...] = DEFAULT_START
    help: tuple[str, ...] = DEFAULT_HELP
    stop_reply: str = "You will not get more messages from us. Reply START to undo."
    start_reply: str = "You will get messages from us again. Reply STOP to opt out."
    help_reply: str = "This is our office's text line. Reply STOP to opt out."

    def classify(self, body: str) -> Keyword | None:
        """The keyword ``body`` is exactly, or None for an ordinary message."""
        text = _norm(body)
        if not text:
            return None
        for keyword, words in (
            (Keyword.STOP, self.stop),
            (Keyword.START, self.start),
            (Keyword.HELP, self.help),
        ):
            if any(text == _norm(w) for w in words):
                return keyword
        return None

    def reply(self, keyword: Keyword) -> str:
        """The confirmation text for ``keyword``."""
        return {
            Keyword.STOP: self.stop_reply,
            Keyword.START: self.start_reply,
            Keyword.HELP: self.help_reply,
        }[keyword]
