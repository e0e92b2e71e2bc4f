"""Signed webhooks for new messages, calls and voicemails, delivered from a durable queue.

Theory of operation: the bus consumer calls :meth:`WebhookSender.on_event`, which turns interesting events into a
JSON payload and queues one row per configured URL in ``webhook_deliveries`` (one store write; the publisher never
waits on HTTP). A single sender task takes due rows, POSTs them with a per-attempt timeout and marks them delivered,
or schedules a retry with capped, jittered exponential backoff; after ``webhook_max_attempts`` a row is marked
failed and stays for the operator to see. Because the queue is in the store, deliveries survive a restart.

Each request carries ``X-Gateway-Event``, ``X-Gateway-Delivery``, ``X-Gateway-Timestamp`` and
``X-Gateway-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the shared secret>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway.domain.events import CallEnded, Event, TimelineEventAdded, VoicemailRecorded
from gateway.errors import ConfigError
from gateway.store import web as sql
from gateway.supervise import cancel_and_wait
from gateway.web.deps import WebDeps
from gateway.web.jsonable import jsonable
from gateway.web.security import sign_payload

log = logging.getLogger(__name__)

_MESSAGE_KINDS = {"message_in": "message.received", "voicemail": "voicemail.received"}
_CALL_KINDS = {
    "call_missed": "call.missed",
    "call_answered": "call.answered",
    "call_ended": "call.ended",
}


def retry_delay(attempts: int, *, base: float = 5.0, cap: float = 3600.0) -> float:
    """Seconds before retry number ``attempts`` (1-based): full jitter over a capped exponential."""
    return random.uniform(base / 2, min(cap, base * 2 ** max(0, attempts - 1)))  # noqa: S311 - jitter


def payload_for(event: Event) -> tuple[str, dict[str, Any]] | None:
    """(event type, payload) for a bus event that integrations care about, else None."""
    match event:
        case TimelineEventAdded(conversation_id=conversation_id, event=entry):
            etype = _MESSAGE_KINDS.get(entry.kind) or _CALL_KINDS.get(entry.kind)
            if etype is None:
                return None
            return etype, {"conversation_id": conversation_id, "event": jsonable(entry)}
        case CallEnded(call_id=call_id, conversation_id=conversation_id, outcome=outcome, call=call):
            return "call.completed", {
                "call_id": call_id,
                "conversation_id": conversation_id,
                "outcome": jsonable(outcome),
                "call": jsonable(call),
            }
        case VoicemailRecorded(call_id=call_id, conversation_id=conversation_id, event_id=event_id, duration=duration):
            return "voicemail.recorded", {
                "call_id": call_id,
                "conversation_id": conversation_id,
                "event_id": event_id,
                "duration": duration,
            }
    return None


def origin(url: str) -> str:
    """Scheme and host of a webhook URL: what logs and errors may show (paths and queries often hold secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class WebhookSender:
    """Queues and delivers webhooks; one sender task owned by this object."""

    def __init__(self, deps: WebDeps) -> None:
        self.deps = deps
        cfg = deps.config
        if cfg.webhook_urls and not cfg.webhook_secret.reveal():
            raise ConfigError(
                "[web] webhook_urls is set but webhook_secret is empty: set a long random webhook_secret so "
                "receivers can verify X-Gateway-Signature"
            )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.failed_attempts = 0

    @property
    def enabled(self) -> bool:
        """True when at least one URL is configured."""
        return bool(self.deps.config.webhook_urls)

    async def start(self) -> None:
        """Start the sender task (no-op without URLs)."""
        if not self.enabled or self._task is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.deps.config.webhook_timeout_seconds)
        )
        self._task = asyncio.create_task(self._run(), name="web-webhooks")

    async def stop(self) -> None:
        """Stop sending; queued rows stay for the next start."""
        await cancel_and_wait(self._task, owner="webhooks")
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        """Look at the queue now (something was queued directly)."""
        self._wake.set()

    async def on_event(self, event: Event) -> None:
        """Bus hook: queue deliveries for an interesting event."""
        if not self.enabled:
            return
        found = payload_for(event)
        if found is None:
            return
        etype, data = found
        now = time.time()
        body = json.dumps({"type": etype, "created_at": now, "data": data}, separators=(",", ":"))
        urls = list(self.deps.config.webhook_urls)
        await self.deps.store.write(lambda c: sql.enqueue_webhooks(c, urls, etype, body, now))
        self._wake.set()

    async def _run(self) -> None:
        while True:
            now = time.time()
            due = await self.deps.store.read(functools.partial(sql.due_webhooks, now=now))
            for d in due:
                await self._deliver(d)
            if due:
                continue
            nxt = await self.deps.store.read(sql.next_webhook_due)
            wait = 60.0 if nxt is None else max(0.05, min(60.0, nxt - time.time()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _deliver(self, d: sql.WebhookDelivery) -> None:
        assert self._session is not None
        ts = str(int(time.time()))
        body = d.payload.encode()
        sig = sign_payload(self.deps.config.webhook_secret.reveal(), ts, body)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "gateway-webhooks/1",
            "X-Gateway-Event": d.event_type,
            "X-Gateway-Delivery": str(d.id),
            "X-Gateway-Timestamp": ts,
            "X-Gateway-Signature": f"sha256={sig}",
        }
        error: str | None = None
        try:
            # Never follow a redirect: the signed payload goes to the configured address or nowhere.
            async with self._session.post(d.url, data=body, headers=headers, allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    now = time.time()
                    await self.deps.store.write(lambda c: sql.webhook_delivered(c, d.id, now))
                    self.delivered += 1
                    return
                error = f"HTTP {resp.status}"
                if 300 <= resp.status < 400:
                    error += " redirect refused: webhooks are never sent on; configure the final URL"
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            error = f"{type(err).__name__}: {err}".replace(d.url, origin(d.url))
        self.failed_attempts += 1
        attempts = d.attempts + 1
        give_up = attempts >= self.deps.config.webhook_max_attempts
        next_at = None if give_up else time.time() + retry_delay(attempts)
        msg = error or "unknown error"
        await self.deps.store.write(lambda c: sql.webhook_failed_attempt(c, d.id, msg, next_at))
        if give_up:
            log.warning("webhook %d to %s given up after %d attempts: %s", d.id, origin(d.url), attempts, msg)
        else:
            log.info("webhook %d attempt %d failed (%s); retrying", d.id, attempts, msg)
