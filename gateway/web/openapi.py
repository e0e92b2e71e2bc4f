"""The OpenAPI document, generated from the running route table with apispec.

Theory of operation: each API module keeps the documentation of its routes next to them, as ``openapi_paths()``
(path -> method -> operation). :func:`document` walks the application's router and adds, through apispec, one
operation for every documented (method, path) that is really routed; :func:`coverage` compares the two and names
what is missing on either side, so a new route without a doc (or a doc without a route) fails
``tests/web/test_openapi.py`` with the exact method and path to fix.

Documented are the machine interfaces: every route under ``/api/`` plus :data:`MACHINE_ROUTES`. Pages, websockets
and static files are not part of the API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from apispec import APISpec

from gateway import __version__

#: Routes outside ``/api/`` that integrations use and that the document covers.
MACHINE_ROUTES = frozenset({"/status.json", "/metrics", "/media/voicemail/{event_id}"})

_METHODS = ("get", "post", "put", "patch", "delete")

DESCRIPTION = (
    "Conversations across chat, SMS, calls and voicemail. Authenticate with `Authorization: Bearer <token>`. "
    "Webhooks are POSTed with `X-Gateway-Signature: sha256=<hex>` = HMAC-SHA256(secret, "
    "`<X-Gateway-Timestamp>.<body>`)."
)

WEBHOOK_EVENTS = (
    "message.received",
    "voicemail.received",
    "voicemail.recorded",
    "call.missed",
    "call.answered",
    "call.ended",
    "call.completed",
    "leakage.weekly",
)

PathDocs = Mapping[str, Mapping[str, Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class Coverage:
    """Routes without a document, and documented operations without a route (``METHOD /path`` each)."""

    undocumented: tuple[str, ...]
    unrouted: tuple[str, ...]


def is_api_route(path: str) -> bool:
    """True for a path the OpenAPI document must describe."""
    return path.startswith("/api/") or path in MACHINE_ROUTES


def routed_operations(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every API route the application serves (lower-case method, HEAD left out)."""
    found: set[tuple[str, str]] = set()
    for route in app.router.routes():
        method = route.method.lower()
        info = route.resource.get_info() if route.resource is not None else {}
        path = str(info.get("formatter") or info.get("path") or "")
        if method in _METHODS and is_api_route(path):
            found.add((method, path))
    return found


def documented_operations(docs: PathDocs) -> set[tuple[str, str]]:
    """(method, path) of every documented operation."""
    return {(method, path) for path, item in docs.items() for method in item if method in _METHODS}


def coverage(app: web.Application, docs: PathDocs) -> Coverage:
    """What is routed but not documented, and documented but not routed."""
    routed, documented = routed_operations(app), documented_operations(docs)
    return Coverage(
        tuple(f"{m.upper()} {p}" for m, p in sorted(routed - documented, key=lambda x: (x[1], x[0]))),
        tuple(f"{m.upper()} {p}" for m, p in sorted(documented - routed, key=lambda x: (x[1], x[0]))),
    )


def merge_docs(sources: Iterable[Callable[[], PathDocs]]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Join the modules' ``openapi_paths()``; two modules documenting the same operation is a mistake."""
    merged: dict[str, dict[str, Mapping[str, Any]]] = {}
    for source in sources:
        for path, item in source().items():
            target = merged.setdefault(path, {})
            for method, operation in item.items():
                if method in target:
                    raise ValueError(f"{method.upper()} {path} is documented twice")
                target[method] = operation
    return merged


def document(app: web.Application, docs: PathDocs) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes ``app`` really serves, built with apispec."""
    spec = APISpec(
        title="gateway API",
        version=__version__,
        openapi_version="3.1.0",
        info={"description": DESCRIPTION},
        security=[{"bearer": []}],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", {"type": "object", "properties": {"error": {"type": "string"}}})
    routed = routed_operations(app)
    for path in sorted(docs):
        operations = {m: dict(op) for m, op in docs[path].items() if (m, path) in routed}
        if operations:
            spec.path(path=path, operations=operations)
    out = spec.to_dict()
    out["x-webhooks"] = {"events": list(WEBHOOK_EVENTS)}
    return out
