"""What the domain and the channels need from the store, as a typed port (``gateway.store.db.Store`` fits it).

Channels and services take a ``StorePort`` instead of the concrete store so unit tests can pass a small fake; the
daemon always passes the real one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class StorePort(Protocol):
    """Run a function in the single writer's group-commit transaction, or on a read connection."""

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
