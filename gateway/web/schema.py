"""Typed JSON bodies of the API: one Python type per request and response body, used three ways.

Theory of operation: a handler reads its request with :func:`parse` (the JSON object checked against the request
class, then returned as an instance of it) and answers with :func:`respond` (an instance of the response class
encoded as it is). The route's :class:`Operation` names the same classes, and ``gateway.web.openapi`` derives the
JSON Schema of each from its type hints with msgspec. Changing a field of a body class therefore changes what the
handler accepts or returns and what the OpenAPI document says, together; there is no second, hand-written schema to
forget. Domain records (frozen dataclasses such as ``TimelineEvent``) are response fields as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

import msgspec
from aiohttp import web

from gateway.errors import ValidationError

T = TypeVar("T")

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """What every error answer carries: one line that says what is wrong and how to fix it."""

    error: str


CONFIRM_FIX = 'send again with "confirm_number": true'


class NumberConflict(TypedDict):
    """409: the number needs a confirmation (``needs_confirmation``) before it is texted or called."""

    error: str
    needs_confirmation: bool
    fix: str


@dataclass(frozen=True, slots=True)
class Ok:
    """A change that has no other result to report."""

    ok: bool = True


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented answer of an operation: its description, and the type of its JSON body (None: no JSON body).

    ``media`` names the content types when the answer is not (only) JSON, e.g. ``("text/csv",)``.
    """

    description: str
    body: object = None
    media: tuple[str, ...] = (JSON,)


@dataclass(frozen=True, slots=True)
class Operation:
    """The documentation of one (method, path): the request body type, the answers, the parameters.

    ``errors`` are the statuses answered with :class:`ErrorBody`; ``public`` operations need no token.
    """

    summary: str
    responses: Mapping[int, Reply]
    request: object = None
    parameters: tuple[Mapping[str, Any], ...] = ()
    errors: tuple[int, ...] = (400, 401)
    public: bool = False


def path_id(request: web.Request, key: str) -> int:
    """The integer path parameter ``key`` (e.g. ``conversation_id``), or a 400 that says it is not a number."""
    raw = request.match_info[key]
    try:
        return int(raw)
    except ValueError as err:
        raise ValidationError(f"{key.replace('_', ' ')} {raw[:20]!r} is not a number") from err


def path_int(name: str) -> Mapping[str, Any]:
    """A required integer path parameter such as ``conversation_id``."""
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


def _fallback(value: Any) -> Any:
    """What msgspec cannot encode itself: read-only mappings become objects, anything else its text."""
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


_ENCODER = msgspec.json.Encoder(enc_hook=_fallback)

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$\.(?P<where>[^`]+)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")


def encode(body: object) -> bytes:
    """The JSON text of a response body (a body class instance, a domain record, or plain JSON values)."""
    return _ENCODER.encode(body)


def respond(body: object, *, status: int = 200) -> web.Response:
    """A JSON response whose body is ``body`` encoded as its type says."""
    return web.Response(body=encode(body), status=status, content_type=JSON)


def problem(message: str) -> str:
    """msgspec's validation message as one line that names the field: "field 'to': expected str, got int"."""
    missing = _MISSING.match(message)
    if missing is not None:
        where = missing.group("name")
        rest = message[missing.end() :]
        inner = re.search(r"`\$\.([^`]+)`", rest)
        path = f"{inner.group(1)}.{where}" if inner else where
        return f"field {path!r} is required"
    match = _AT.match(message)
    assert match is not None  # the pattern matches any text
    what = match.group("what").replace("`", "")
    what = what[:1].lower() + what[1:]
    where = match.group("where")
    return f"field {where!r}: {what}" if where else f"the body: {what}"


def parse(data: Mapping[str, Any], cls: type[T]) -> T:
    """``data`` (a JSON object) as an instance of the request class ``cls``, or a 400 that names the field."""
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as err:
        raise ValidationError(problem(str(err))) from err
