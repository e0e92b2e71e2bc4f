"""Configuration (being written): typed, frozen tree loaded from TOML."""

from __future__ import annotations


class Secret(str):
    """A string that never prints its value (repr/str show ********). Use ``.reveal()`` to read it."""

    __slots__ = ()

    def reveal(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return "'********'"

    def __str__(self) -> str:
        return "********"

    def __format__(self, spec: str) -> str:
        return "********"
