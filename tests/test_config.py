"""Configuration: typed loading, clear errors, masked secrets, and documentation that stays complete."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from gateway import config as cfgmod
from gateway.config import Secret
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_defaults_load_and_validate() -> None:
    cfg = cfgmod.parse(cfgmod.default_toml_text(), "default.toml")
    assert cfg.gateway.default_region == "US"
    assert cfg.db_path.name == "gateway.db"
    assert cfg.web.host == "127.0.0.1", "everything binds to loopback unless configured"
    assert cfg.voice.agi_host == "127.0.0.1"


def test_shipped_default_toml_is_exactly_the_rendered_defaults() -> None:
    shipped = cfgmod.default_toml_text()
    rendered = cfgmod.render()
    body = shipped[shipped.index("# ", shipped.index("\n\n")) :]
    assert body == rendered, "regenerate gateway/default.toml: gateway show-config --defaults (keep the header)"


def test_every_key_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [key for key, *_ in cfgmod.documented_keys() if f"`{key}`" not in readme]
    assert not missing, f"README configuration table lacks {missing}; regenerate it: gateway show-config --markdown"
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_0-9]+)` \|", readme, flags=re.M))
    stale = documented - {key for key, *_ in cfgmod.documented_keys()}
    assert not stale, f"README documents keys that do not exist: {stale}"


def test_every_key_has_a_doc_line() -> None:
    assert all(doc.strip() for _, _, _, doc in cfgmod.documented_keys())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[gateway\n", r"not valid TOML.*line 1"),
        ('[gateway]\ndata_dir = "unterminated\n', "not valid TOML"),
        ("[gatway]\n", r"unknown section \[gatway\]; did you mean 'gateway'"),
        ("[store]\nreaderz = 2\n", r"unknown key store\.readerz; did you mean 'readers'"),
        ('[store]\nreaders = "two"\n', r"store\.readers = \"two\" is wrong: not an integer"),
        ("[web]\nport = true\n", r"web\.port = true is wrong"),
        ('[gateway]\ndefault_region = "XX"\n', r"\[gateway\] is invalid: 'XX' is not a region code"),
        ('[gateway]\nlog_level = "LOUD"\n', "not a log level"),
        ("store = 3\n", r"store must be a table"),
        ('[voice]\nstaff = ["201"]\n', r"voice\.staff .* not a table"),
    ],
)
def test_bad_files_fail_with_file_key_value_and_fix(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        cfgmod.parse(text, "/etc/gateway/gateway.toml")
    assert "/etc/gateway/gateway.toml" in str(info.value)


def test_partial_file_keeps_defaults_for_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text('[gateway]\ndefault_region = "GB"\n[store]\npath = "/srv/g.db"\n')
    cfg = cfgmod.load(path)
    assert cfg.gateway.default_region == "GB"
    assert str(cfg.db_path) == "/srv/g.db"
    assert cfg.store.readers == 2
    assert cfg.source == str(path)


def test_missing_explicit_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        cfgmod.load(tmp_path / "nope.toml")


def test_secrets_never_print() -> None:
    cfg = cfgmod.parse('[voice]\nami_secret = "hunter2-very-secret"\n', "t.toml")
    secret = cfg.voice.ami_secret
    assert isinstance(secret, Secret)
    assert secret.reveal() == "hunter2-very-secret"
    for shown in (str(secret), repr(secret), f"{secret}", "%s" % secret, str(cfg), repr(cfg.voice)):  # noqa: UP031
        assert "hunter2" not in shown
    rendered = cfgmod.render(cfg)
    assert "hunter2" not in rendered
    assert 'ami_secret = "********"' in rendered
    tomllib.loads(rendered)


def test_bad_value_error_never_echoes_a_secret() -> None:
    with pytest.raises(ConfigError) as info:
        cfgmod.parse("[voice]\nami_secret = 12345678\n", "t.toml")
    assert "12345678" not in str(info.value)
