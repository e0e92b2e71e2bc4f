"""The OpenAPI document, generated from the running route table with apispec.

Theory of operation: each API module keeps the documentation of its routes next to them, as ``openapi_paths()``
(path -> method -> :class:`~gateway.web.schema.Operation`). An operation names the Python types of its request and
response bodies, the same types its handler parses and answers with; :func:`document` derives their JSON Schemas
with msgspec (shared ones once, under ``components/schemas``) and adds, through apispec, one operation for every
documented (method, path) that is really routed. :func:`coverage` compares the two and names what is missing on
either side, so a new route without a doc (or a doc without a route) fails ``tests/web/test_openapi.py`` with the
exact method and path to fix.

Documented are the machine interfaces: every route under ``/api/`` plus :data:`MACHINE_ROUTES`. Pages, websockets
and static files are not part of the API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web
from apispec import APISpec

from gateway import __version__
from gateway.web.schema import JSON, ErrorBody, Operation

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

PathDocs = Mapping[str, Mapping[str, Operation]]

_REF = "#/components/schemas/{name}"


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


def merge_docs(sources: Iterable[Callable[[], PathDocs]]) -> dict[str, dict[str, Operation]]:
    """Join the modules' ``openapi_paths()``; two modules documenting the same operation is a mistake."""
    merged: dict[str, dict[str, Operation]] = {}
    for source in sources:
        for path, item in source().items():
            target = merged.setdefault(path, {})
            for method, operation in item.items():
                if method in target:
                    raise ValueError(f"{method.upper()} {path} is documented twice")
                target[method] = operation
    return merged


def body_types(docs: PathDocs) -> list[object]:
    """Every request and response body type the operations name (each once, in a stable order)."""
    found: dict[str, object] = {"ErrorBody": ErrorBody}
    for path in sorted(docs):
        for _method, op in sorted(docs[path].items()):
            for typ in (op.request, *(reply.body for _s, reply in sorted(op.responses.items()))):
                if typ is not None:
                    found.setdefault(repr(typ), typ)
    return list(found.values())


def _operation(op: Operation, schemas: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The OpenAPI operation object of ``op``, its bodies as references to the derived schemas."""
    responses: dict[str, Any] = {}
    for status, reply in sorted(op.responses.items()):
        content: dict[str, Any] = {}
        for media in reply.media:
            content[media] = {"schema": schemas[repr(reply.body)]} if media == JSON and reply.body is not None else {}
        responses[str(status)] = {"description": reply.description, **({"content": content} if content else {})}
    error = {"description": "error", "content": {JSON: {"schema": schemas[repr(ErrorBody)]}}}
    for status in op.errors:
        responses.setdefault(str(status), error)
    out: dict[str, Any] = {"summary": op.summary, "responses": responses}
    if op.parameters:
        out["parameters"] = [dict(p) for p in op.parameters]
    if op.request is not None:
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": schemas[repr(op.request)]}}}
    if op.public:
        out["security"] = []
    return out


def document(app: web.Application, docs: PathDocs) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes ``app`` really serves, built with apispec.

    The body schemas are derived from the operations' types (msgspec's JSON Schema, which OpenAPI 3.1 uses as it is).
    """
    spec = APISpec(
        title="gateway API",
        version=__version__,
        openapi_version="3.1.0",
        info={"description": DESCRIPTION},
        security=[{"bearer": []}],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    types = body_types(docs)
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    schemas = {repr(typ): ref for typ, ref in zip(types, refs, strict=True)}
    for name in sorted(components):
        spec.components.schema(name, components[name])
    routed = routed_operations(app)
    for path in sorted(docs):
        operations = {m: _operation(op, schemas) for m, op in docs[path].items() if (m, path) in routed}
        if operations:
            spec.path(path=path, operations=operations)
    out = spec.to_dict()
    out["x-webhooks"] = {"events": list(WEBHOOK_EVENTS)}
    return out
