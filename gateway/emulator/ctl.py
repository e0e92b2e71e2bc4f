"""Command-line client for the emulator's control socket: ``python -m gateway.emulator.ctl SOCKET
OP k=v...``.

Values are parsed as JSON when they can be (``order=[2,1]``, ``code=42``), else taken as strings.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from gateway.emulator.control import call


def main(argv: list[str] | None = None) -> int:
    """Send one op; print the result as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    kwargs: dict[str, Any] = {}
    for item in args[2:]:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"argument {item!r} is not key=value", file=sys.stderr)
            return 2
        try:
            kwargs[key] = json.loads(value)
        except ValueError:
            kwargs[key] = value
    try:
        result = call(args[0], args[1], **kwargs)
    except (OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
