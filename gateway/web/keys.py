"""Typed keys for state kept on the aiohttp application and requests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.web.deps import WebDeps

if TYPE_CHECKING:
    from gateway.web.security import Auth

DEPS = web.AppKey("deps", WebDeps)
AUTH: web.RequestKey[Auth] = web.RequestKey("auth")
