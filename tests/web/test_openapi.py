"""The OpenAPI document is generated from the route table: every API route documented, every documented route real."""

from __future__ import annotations

import re

from aiohttp import web

from gateway.web import openapi
from gateway.web.api import api_docs

from .conftest import WebEnv


async def test_every_route_is_documented_and_every_documented_route_exists(web_env: WebEnv) -> None:
    app = web_env.client.app
    assert app is not None
    found = openapi.coverage(app, api_docs())
    assert found.undocumented == (), (
        "routes without an OpenAPI entry; add them to the openapi_paths() of the module that routes them: "
        + ", ".join(found.undocumented)
    )
    assert found.unrouted == (), "documented but not routed (remove or fix the entry): " + ", ".join(found.unrouted)


async def test_the_served_document_lists_exactly_the_routed_operations(web_env: WebEnv) -> None:
    app = web_env.client.app
    assert app is not None
    doc = await (await web_env.client.get("/api/openapi.json")).json()
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    served = {
        (m, p) for p, item in doc["paths"].items() for m in item if m in ("get", "post", "put", "patch", "delete")
    }
    assert served == openapi.routed_operations(app)


async def test_every_documented_route_answers(web_env: WebEnv) -> None:
    """Each documented operation reaches its handler: never the router's 404/405, never a server error."""
    await web_env.login()
    doc = await (await web_env.client.get("/api/openapi.json")).json()
    answered = 0
    for path, item in doc["paths"].items():
        url = re.sub(r"\{[^}]+\}", "999999", path)
        for method in item:
            headers = dict(web_env.headers(), Origin=web_env.origin)
            payload: dict[str, object] | None = {} if method in ("post", "put", "patch") else None
            resp = await web_env.client.request(method.upper(), url, headers=headers, json=payload)
            body = await resp.read()
            where = f"{method.upper()} {path} answered {resp.status}: {body[:200]!r}"
            assert resp.status < 500, where
            assert resp.status != 405, where
            if resp.status == 404:  # the handler's own "no such conversation", not the router's
                assert body != b"404: Not Found", where
            answered += 1
    assert answered == len(openapi.documented_operations(api_docs()))


def test_coverage_names_what_is_missing_on_either_side() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.add_routes([web.get("/api/v1/new", handler), web.get("/page", handler)])
    docs = {"/api/v1/gone": {"get": {"summary": "x", "responses": {}}}}
    found = openapi.coverage(app, docs)
    assert found.undocumented == ("GET /api/v1/new",)
    assert found.unrouted == ("GET /api/v1/gone",)
