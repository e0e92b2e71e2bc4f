"""Message templates with named variables, checked at start.

A template is plain text with ``{variable}`` placeholders (``{{`` and ``}}`` for literal braces). Only the names in
:data:`VARIABLES` exist; anything else, a positional ``{}``, an attribute (``{a.b}``), an index or a format spec is
a configuration error naming the key. Rendering never fails: an unknown value renders empty, and the text is tidied
(double spaces, a space before punctuation) so optional phrases such as ``{intent_phrase}`` can be empty.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

from gateway.errors import ConfigError

VARIABLES: Mapping[str, str] = {
    "first_name": "the customer's first name, when known",
    "business_name": "the office's name",
    "intent_phrase": 'what the conversation is about, with a leading space: " about your estimate" (or empty)',
    "topic": 'the same without "about": "your estimate" (or "your call")',
    "next_slot": 'the next time we are open, in words: "today at 13:30", "tomorrow at 08:00"',
    "next_slots": 'the next three half-hour slots we are open: "at 13:30, at 14:00 or at 14:30"',
    "reopen_time": "when the office reopens, in words (after-hours reply)",
    "heard": "what the voicemail was about, from the transcript",
    "open_question": "the customer's open question from the chat",
    "quote": 'the open question as a sentence: You asked: "Do you handle emergencies?" (or empty)',
    "missing_ask": "a question for the wanted facts not captured yet (empty when all are known)",
    "next_step": "the conversation's next step",
    "next_step_due": 'the next step\'s due time with a leading comma: ", tomorrow at 10:00" (or empty)',
}
"""Every variable a template may use, with what it holds."""

_FORMATTER = string.Formatter()


def check_template(template: str, key: str) -> tuple[str, ...]:
    """The variables ``template`` uses; ConfigError naming ``key`` if one is unknown or the syntax is wrong."""
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as err:
        raise ConfigError(f"{key}: template is malformed ({err}); write literal braces as {{{{ and }}}}") from err
    used: list[str] = []
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name == "" or not name.isidentifier():
            raise ConfigError(f"{key}: {{{name}}} is not a named variable; use one of {', '.join(VARIABLES)}")
        if spec or conversion:
            raise ConfigError(f"{key}: {{{name}}} must be plain, without a format spec or conversion")
        if name not in VARIABLES:
            raise ConfigError(f"{key}: unknown template variable {{{name}}}; known: {', '.join(VARIABLES)}")
        used.append(name)
    return tuple(used)


_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:])")
_SPACES = re.compile(r"[ \t]{2,}")
_DOUBLE_STOP = re.compile(r"\.\s*\.")


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill ``template`` (already checked) and tidy the result."""
    filled = template.format_map({name: values.get(name, "") for name in VARIABLES})
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", filled)
    text = _DOUBLE_STOP.sub(".", text)
    return _SPACES.sub(" ", text).strip()
