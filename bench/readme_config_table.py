"""Regenerate the README's configuration table and gateway/default.toml from the config dataclasses.

.venv/bin/python bench/readme_config_table.py
"""

from __future__ import annotations

import re
from pathlib import Path

from gateway import config

ROOT = Path(__file__).resolve().parents[1]
HEADER = (
    "# gateway configuration: every key with its default and what it means.\n"
    "# Copy to /etc/gateway/gateway.toml and change what you need; unknown keys are rejected.\n\n"
)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = "<!-- config-table:start -->\n" + config.markdown_table() + "<!-- config-table:end -->"
    text = re.sub(r"<!-- config-table:start -->.*?<!-- config-table:end -->", lambda _m: block, text, flags=re.S)
    readme.write_text(text, encoding="utf-8")
    (ROOT / "gateway" / "default.toml").write_text(HEADER + config.render(), encoding="utf-8")
    print("README.md configuration table and gateway/default.toml regenerated")


if __name__ == "__main__":
    main()
