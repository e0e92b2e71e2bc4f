"""Bad input gets one line with the cause and the fix, and the documented exit code (issue 12)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import conf, gw  # noqa: F401 - the conf fixture

from gateway import config as cfgmod
from gateway.errors import ConfigError

EX_CONFIG = 78


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text, text
    return lines[-1]


@pytest.mark.parametrize("content", ["", "\n\n   \n", "# only a comment\n# and another\n"])
def test_empty_config_file_is_an_error_naming_the_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match="no settings"):
        cfgmod.load(path)
    got = gw("--config", str(path), "run", cwd=tmp_path)
    assert got.returncode == EX_CONFIG
    line = one_line(got.stderr)
    assert str(path) in line
    assert "show-config --defaults" in line
    assert not (tmp_path / "var").exists(), "no new database in ./var"


def test_builtin_defaults_still_load_without_a_file() -> None:
    assert cfgmod.load(None).source  # no /etc file on the test box: the built-in defaults, no error


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """``directory`` bind-mounted read-only (the tests run as root, where permission bits do not stop writes)."""
    target = directory.parent / (directory.name + "-ro")
    target.mkdir()
    subprocess.run(["mount", "--bind", str(directory), str(target)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_run_on_a_read_only_data_dir_says_so_and_prints_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with read_only(data) as ro:
        path = tmp_path / "gateway.toml"
        path.write_text(f'[gateway]\ndata_dir = "{ro}"\n[voice]\nenabled = false\n[transcribe]\nenabled = false\n')
        got = gw("--config", str(path), "run", cwd=tmp_path, timeout=60)
    assert got.returncode == EX_CONFIG, got.stderr
    lines = [line for line in got.stderr.splitlines() if line.strip()]
    assert "Traceback" not in got.stderr, got.stderr
    assert lines[0].startswith(f"gateway: data directory {ro}, database {ro}/gateway.db"), lines
    assert "Read-only file system" in lines[-1]
    assert "gateway.data_dir" in lines[-1]


def test_db_migrate_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("these are my notes, not a database\n" * 20)
    path = tmp_path / "gateway.toml"
    path.write_text(f'[store]\npath = "{bogus}"\n')
    for args in (("db", "migrate"), ("staff", "list"), ("transcribe", "failed")):
        got = gw("--config", str(path), *args, cwd=tmp_path)
        assert got.returncode == EX_CONFIG, (args, got.stderr)
        line = one_line(got.stderr)
        assert "not a database" in line
        assert str(bogus) in line
    assert bogus.read_text().startswith("these are my notes"), "the file is left as it was"
