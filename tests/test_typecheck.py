"""tests/ and bench/ are type-checked too (not strictly: see tests/mypy.ini), so a test that calls the code with the
wrong arguments or reads an attribute that no longer exists fails here instead of passing silently."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api as mypy_api

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tests_and_benchmarks_type_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    out, err, status = mypy_api.run(["--config-file", "tests/mypy.ini", "tests", "bench"])
    assert status == 0, (
        f"mypy found problems in tests/ or bench/ (fix them, or name the file in tests/mypy.ini):\n{out}{err}"
    )
