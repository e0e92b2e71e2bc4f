"""The short context label a ringing SIP phone shows as caller name ("Maria R - roof estimate").

Whatever the caller or the store hands us goes through :func:`sanitize_label` before it reaches
``CALLERID(name)``: quotes, semicolons, backslashes, angle brackets and control characters could
break the SIP From header or the dialplan, and most desk phones show only ASCII. Letters of any
script are transliterated (``é`` -> ``e``, ``김민수`` -> ``GimMinSu``, with ``anyascii``); emoji and
other symbols are dropped. This is only the phone's display: stored names keep every character
(:func:`stored_name`).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from anyascii import anyascii

from gateway.domain.models import ConversationSummary

#: Characters allowed on the display. Everything else is dropped or turned into a space.
_ALLOWED: Final = re.compile(r"[^A-Za-z0-9 .,/&+#()!?:@_-]")
_SPACES: Final = re.compile(r"\s+")
_SPECIAL: Final = str.maketrans(
    {"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D"}
)
WITHHELD_LABEL: Final = "Withheld number"
UNKNOWN_LABEL: Final = "Unknown caller"


def sanitize_label(text: str, max_chars: int = 32) -> str:
    """ASCII-only, no quotes/semicolons/control characters, single spaces, at most ``max_chars``.

    Cuts at a word boundary when that keeps most of the text. May return ``""``.
    """
    if max_chars <= 0:
        return ""
    # Bound the work on absurd input before normalising (NFKD can expand a string).
    text = text[: max_chars * 8].translate(_SPECIAL)
    text = unicodedata.normalize("NFC", text)  # composed: Hangul syllables, not jamo, reach anyascii
    text = "".join(" " if (ord(c) < 32 or ord(c) == 127 or c.isspace()) else c for c in text)
    # Symbols (emoji, dingbats) have no place on a desk phone; letters of other scripts are transliterated.
    text = "".join(c for c in text if ord(c) < 128 or unicodedata.category(c)[0] in "LNPZ")
    text = anyascii(text)
    text = _ALLOWED.sub("", text)
    text = _SPACES.sub(" ", text).strip(" -,.:/")
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    if space >= max_chars * 2 // 3:
        cut = cut[:space]
    return cut.rstrip(" -,.:/")


def stored_name(text: str, max_chars: int = 120) -> str:
    """A caller's name as written (Korean, emoji, accents kept) for the contact, minus control and bidi
    formatting characters (a right-to-left override must not reverse the text around it) and runs of spaces."""
    out = "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf") or c == "\u200d")
    return " ".join(out.split())[:max_chars]


def short_name(display_name: str) -> str:
    """ "Maria Rodriguez" -> "Maria R"; one word stays as it is."""
    parts = display_name.split()
    if len(parts) <= 1:
        return display_name.strip()
    return f"{parts[0]} {parts[-1][0]}"


def context_label(
    summary: ConversationSummary | None,
    *,
    caller_number: str,
    caller_name: str,
    withheld: bool,
    max_chars: int = 32,
) -> str:
    """The label for ``CALLERID(name)``: who it is and what it is about, sanitized.

    Known caller: short name plus what the conversation is about (the spine's ``topic`` fact, else the intent, else
    the next step), then ", urgent" (or "!" first when that does not fit). Unknown caller:
    the caller's own name if it has one, else the number. Withheld: a fixed text.
    """
    if withheld:
        return WITHHELD_LABEL[:max_chars]
    if summary is not None:
        captured = summary.facts.get("name")  # the spine's captured name, when the contact has no display name
        who = short_name(
            sanitize_label(summary.display_name or (captured if isinstance(captured, str) else ""), 64)
        ) or sanitize_label(caller_name, 64)
        topic = summary.facts.get("topic")
        about = sanitize_label(
            (topic if isinstance(topic, str) else "") or summary.intent or summary.next_step or "", 64
        )
        label = who or sanitize_label(caller_number, 32)
        if about:
            label = f"{label} - {about}" if label else about
        if summary.urgent:
            # The spine's words ("Maria R - chipped tooth, urgent") when they fit; else "!" first, so a short
            # display still shows the urgency.
            spelled = f"{label}, urgent" if label else "urgent"
            label = spelled if len(sanitize_label(spelled, 200)) <= max_chars else f"! {label}"
        out = sanitize_label(label, max_chars)
        if out:
            return out
    name = sanitize_label(caller_name, max_chars)
    if name and name.lower() not in ("anonymous", "unknown", "restricted", "private"):
        return name
    number = sanitize_label(caller_number, max_chars)
    return number or UNKNOWN_LABEL[:max_chars]
