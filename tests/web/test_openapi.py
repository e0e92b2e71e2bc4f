"""The OpenAPI document is generated from the route table: every API route documented, every documented route real,
and the bodies the API really returns valid against the schemas the document derives from the handlers' types."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.leakage.metrics import METRICS
from gateway.web import openapi
from gateway.web.api import api_docs
from gateway.web.schema import Operation, Reply, problem

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
    docs = {"/api/v1/gone": {"get": Operation("x", responses={200: Reply("ok")})}}
    found = openapi.coverage(app, docs)
    assert found.undocumented == ("GET /api/v1/new",)
    assert found.unrouted == ("GET /api/v1/gone",)


class Documented:
    """The served document, and a check of one real answer against the schema it documents for that answer."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.checked: set[tuple[str, str]] = set()

    def schema(self, method: str, path: str, status: int | None = None) -> dict[str, Any]:
        op = self.doc["paths"][path][method]
        part = op["requestBody"] if status is None else op["responses"][str(status)]
        schema: dict[str, Any] = part["content"]["application/json"]["schema"]
        # The body schemas refer to #/components/schemas/...: validate with the document's components at the root.
        return {**schema, "components": self.doc["components"]}

    def check(self, method: str, path: str, status: int, body: object) -> None:
        Draft202012Validator(self.schema(method, path, status)).validate(body)
        self.checked.add((method, path))

    def check_request(self, method: str, path: str, body: object) -> None:
        Draft202012Validator(self.schema(method, path)).validate(body)


async def _call(env: WebEnv, docs: Documented, method: str, path: str, url: str, want: int, json: Any = None) -> Any:
    if json is not None:
        docs.check_request(method, path, json)
    resp = await env.client.request(method.upper(), url, json=json, headers=dict(env.headers(), Origin=env.origin))
    body = await resp.json()
    assert resp.status == want, (method, url, resp.status, body)
    docs.check(method, path, want, body)
    return body


async def test_real_answers_validate_against_their_documented_schemas(web_env: WebEnv) -> None:
    """The main routes, called for real on a seeded conversation: each answer matches the schema derived from the
    type its handler builds it from (a field renamed or retyped in the handler's class changes both together)."""
    now = time.time()
    opened = await web_env.service.ingest(
        Inbound(
            Channel.SMS,
            EventKind.MESSAGE_IN,
            IdentityKind.PHONE,
            "+12025550147",
            "s-1",
            body="Is the roof estimate ready? 010-2345-6789 is my other phone",
            occurred_at=now - 120,
        )
    )
    conv = opened.conversation_id
    await web_env.login()
    docs = Documented(await (await web_env.client.get("/api/openapi.json")).json())
    c = "/api/v1/conversations/{conversation_id}"

    inbox = await _call(web_env, docs, "get", "/api/v1/inbox", "/api/v1/inbox", 200)
    assert [row["conversation_id"] for row in inbox["inbox"]] == [conv]
    page = await _call(web_env, docs, "get", c, f"/api/v1/conversations/{conv}", 200)
    assert page["timeline"][0]["body"].startswith("Is the roof estimate ready?")
    assert page["reply"]["default_channel"] == "sms"

    sent = await _call(
        web_env, docs, "post", c + "/messages", f"/api/v1/conversations/{conv}/messages", 201,
        {"body": "Yes, it is ready", "channel": "sms"},
    )  # fmt: skip
    assert sent["channel"] == "sms"
    assert sent["segments"] == 1
    note = await _call(web_env, docs, "post", c + "/notes", f"/api/v1/conversations/{conv}/notes", 201, {"body": "n"})
    assert note["event_id"] > 0
    changed = await _call(
        web_env, docs, "patch", c, f"/api/v1/conversations/{conv}", 200, {"owner": "alice", "status": "waiting"}
    )
    assert changed["fields"] == {"owner": "alice", "status": "waiting"}
    spine = await _call(
        web_env, docs, "patch", c + "/spine", f"/api/v1/conversations/{conv}/spine", 200,
        {"intent": "estimate", "next_step": "send the estimate", "next_step_due": "2030-01-02T09:00:00+00:00"},
    )  # fmt: skip
    assert "intent" in spine["changed"]
    await _call(
        web_env, docs, "put", c + "/facts/{name}", f"/api/v1/conversations/{conv}/facts/topic", 200, {"value": "roof"}
    )
    got = await _call(web_env, docs, "get", c + "/spine", f"/api/v1/conversations/{conv}/spine", 200)
    assert got["spine"]["facts"]["topic"]["value"] == "roof"
    await _call(web_env, docs, "get", c + "/handoff", f"/api/v1/conversations/{conv}/handoff", 200)
    await _call(web_env, docs, "get", c + "/promises", f"/api/v1/conversations/{conv}/promises", 200)

    hits = await _call(web_env, docs, "get", "/api/v1/search", "/api/v1/search?q=roof", 200)
    assert hits["results"]
    counted = await _call(
        web_env, docs, "post", "/api/v1/sms/segments", "/api/v1/sms/segments", 200, {"body": "안녕하세요"}
    )
    assert counted == {"segments": 1, "encoding": "ucs2", "chars": 5}
    await _call(web_env, docs, "get", "/api/v1/staff", "/api/v1/staff", 200)
    me = await _call(web_env, docs, "get", "/api/v1/me", "/api/v1/me", 200)
    assert me["username"] == "alice"
    created = await _call(
        web_env, docs, "post", "/api/v1/tokens", "/api/v1/tokens", 201, {"name": "crm", "scopes": ["read"]}
    )
    tokens = await _call(web_env, docs, "get", "/api/v1/tokens", "/api/v1/tokens", 200)
    assert [t["name"] for t in tokens["tokens"]] == ["crm"]
    await _call(web_env, docs, "delete", "/api/v1/tokens/{token_id}", f"/api/v1/tokens/{created['id']}", 200)
    started = await _call(
        web_env, docs, "post", "/api/v1/conversations", "/api/v1/conversations", 201,
        {"phone": "+12025550188", "body": "Hello from the office"},
    )  # fmt: skip
    assert started["created"] is True
    assert started["outbox_id"] > 0
    await _call(
        web_env, docs, "get", "/api/v1/leakage/items", f"/api/v1/leakage/items?metric={next(iter(METRICS))}", 200
    )
    report = await _call(web_env, docs, "get", "/api/v1/leakage", "/api/v1/leakage", 200)
    assert report["leaks_total"] >= 0
    overview = await _call(web_env, docs, "get", "/api/v1/leakage/overview", "/api/v1/leakage/overview", 200)
    assert set(overview["periods"]) == {"today", "7d", "30d"}
    missing = await _call(web_env, docs, "get", c, "/api/v1/conversations/999999", 404)
    assert "999999" in missing["error"]
    off = await _call(web_env, docs, "get", c + "/continuity", f"/api/v1/conversations/{conv}/continuity", 409)
    assert "switched off" in off["error"]

    # A chat visitor whose number turns out to be this customer's: merged, then the merge undone.
    chat = await web_env.service.ingest(
        Inbound(Channel.CHAT, EventKind.MESSAGE_IN, IdentityKind.CHAT, "visitor-openapi", "c-1", body="hi")
    )
    _live, merge_id = await web_env.service.link_identity(chat.conversation_id, IdentityKind.PHONE, "+12025550147")
    assert merge_id is not None
    undo = "/api/v1/merges/{merge_id}/undo"
    undone = await _call(web_env, docs, "post", undo, f"/api/v1/merges/{merge_id}/undo", 200)
    assert undone["restored_conversation_id"] == chat.conversation_id
    again = await _call(web_env, docs, "post", undo, f"/api/v1/merges/{merge_id}/undo", 409)
    assert again["error"]
    status = await _call(web_env, docs, "get", "/status.json", "/status.json", 200)
    assert status["verdict"] in ("ok", "degraded", "down", "off")
    assert len(docs.checked) == 24


async def test_a_wrong_answer_fails_its_schema(web_env: WebEnv) -> None:
    """The check above can fail: an answer with a field of the wrong type, or one missing, is refused."""
    await web_env.login()
    docs = Documented(await (await web_env.client.get("/api/openapi.json")).json())
    real = await (await web_env.client.post(
        "/api/v1/sms/segments", json={"body": "hi"}, headers=dict(web_env.headers(), Origin=web_env.origin)
    )).json()  # fmt: skip
    docs.check("post", "/api/v1/sms/segments", 200, real)
    with pytest.raises(SchemaError):
        docs.check("post", "/api/v1/sms/segments", 200, {**real, "segments": "one"})
    with pytest.raises(SchemaError):
        docs.check("post", "/api/v1/sms/segments", 200, {"encoding": "gsm7", "chars": 2})


async def test_a_request_of_the_wrong_type_gets_one_line_naming_the_field(web_env: WebEnv) -> None:
    await web_env.login()
    resp = await web_env.client.post(
        "/api/v1/sms/segments", json={"body": 12}, headers=dict(web_env.headers(), Origin=web_env.origin)
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "field 'body': expected str, got int"


def test_validation_messages_name_the_field() -> None:
    assert problem("Expected `str`, got `int` - at `$.to`") == "field 'to': expected str, got int"
    assert problem("Object missing required field `body`") == "field 'body' is required"
    assert problem("Invalid enum value 'fax' - at `$.channel`") == "field 'channel': invalid enum value 'fax'"


async def test_every_json_answer_has_a_typed_schema_but_the_two_plain_objects(web_env: WebEnv) -> None:
    """The README names the answers documented only as objects; every other JSON answer refers to a typed class."""
    doc = await (await web_env.client.get("/api/openapi.json")).json()
    plain = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                if schema is None:
                    continue
                if "$ref" not in schema:
                    assert schema == {"type": "object"}, (method, path, status, schema)
                    plain.add(f"{method.upper()} {path}")
                else:
                    name = schema["$ref"].rsplit("/", 1)[-1]
                    assert doc["components"]["schemas"][name]["type"] == "object", (method, path, name)
    assert plain == {
        "GET /api/openapi.json",
        "GET /api/v1/continuity/settings",
    }


async def test_status_json_validates_for_staff_who_are_not_admins(web_env: WebEnv) -> None:
    """A non-admin's /status.json leaves the admin-only fields out; it still matches the documented schema."""
    await web_env.login("bob")
    docs = Documented(await (await web_env.client.get("/api/openapi.json")).json())
    resp = await web_env.client.get("/status.json")
    body = await resp.json()
    assert resp.status == 200
    assert "recent_errors" not in body
    docs.check("get", "/status.json", 200, body)
    assert {h["name"] for h in body["health"]} >= {"automated_sms"}
