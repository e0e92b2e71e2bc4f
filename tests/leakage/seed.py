"""Seeded histories for the leakage tests: real SQLite stores written through the store's own SQL."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any
from zoneinfo import ZoneInfo

from gateway.store import queries as q
from gateway.store.db import Store


def at(text: str, tz: str = "UTC") -> float:
    """``"2026-11-23 22:00"`` in ``tz`` as unix time."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


class Seeder:
    """Writes contacts, conversations and timeline rows into a running store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._n = 0

    async def conversation(self, name: str, owner: str | None = None, **fields: Any) -> int:
        self._n += 1
        number = f"+1555010{self._n:04d}"

        def op(c: sqlite3.Connection) -> int:
            _, cid = q.create_contact(c, "phone", number, number, True, name, 0.0)
            values = dict(fields)
            if owner is not None:
                values["owner"] = owner
            if values:
                q.update_conversation(c, cid, values, 0.0)
            return cid

        return await self.store.write(op)

    async def event(
        self,
        cid: int,
        kind: str,
        channel: str,
        when: float,
        meta: dict[str, Any] | None = None,
        author: str | None = None,
        body: str = "",
    ) -> int:
        m = json.dumps(meta or {})
        return await self.store.write(
            lambda c: q.insert_event(c, cid, kind, channel, body, m, None, author, when, when)
        )

    async def fact(self, cid: int, name: str, value: str, when: float) -> None:
        await self.sql(
            "INSERT INTO conversation_facts(conversation_id, name, value, source, set_by, at) VALUES (?, ?, ?, ?, ?, ?)",
            (cid, name, json.dumps(value), "chat", "extractor", when),
        )

    async def sql(self, statement: str, args: tuple[Any, ...] = ()) -> None:
        await self.store.write(lambda c: c.execute(statement, args))
