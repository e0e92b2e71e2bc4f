"""The English model installer, offline: a local archive stands in for the download."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "gateway" / "transcribe" / "install-model.sh"
NAME = "vosk-model-small-en-us-0.15"


def _archive(tmp_path: Path, *, complete: bool = True) -> Path:
    zpath = tmp_path / f"{NAME}.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        if complete:
            z.writestr(f"{NAME}/am/final.mdl", b"model")
        z.writestr(f"{NAME}/conf/model.conf", "--beam=10\n")
        z.writestr(f"{NAME}/graph/HCLG.fst", b"graph")
    return zpath


def _run(target: Path, url: str, sha256: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("curl") is None and shutil.which("wget") is None:
        pytest.fail("curl or wget is needed by install-model.sh: apt-get install -y curl")
    env = {**os.environ, "GATEWAY_VOSK_MODEL_URL": url}
    if sha256 is not None:
        env["GATEWAY_VOSK_MODEL_SHA256"] = sha256
    else:
        env.pop("GATEWAY_VOSK_MODEL_SHA256", None)
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), str(target)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_archive_with_the_wrong_checksum_installs_nothing(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    target = tmp_path / "models"
    proc = _run(target, archive.as_uri())  # the pinned checksum of the real model applies
    assert proc.returncode != 0
    assert "checksum mismatch" in proc.stderr
    assert "nothing was installed" in proc.stderr
    assert list(target.iterdir()) == []  # no model, no leftovers


def test_verified_archive_is_installed_and_reported(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    target = tmp_path / "models"
    proc = _run(target, archive.as_uri(), digest)
    assert proc.returncode == 0, proc.stderr
    installed = target / NAME
    assert proc.stdout.strip() == str(installed)
    assert (installed / "am" / "final.mdl").read_bytes() == b"model"
    assert [p.name for p in target.iterdir()] == [NAME]
    again = _run(target, "file:///nonexistent.zip", digest)  # already there: no download
    assert again.returncode == 0
    assert "already installed" in again.stderr


def test_archive_without_a_model_is_refused(tmp_path: Path) -> None:
    archive = _archive(tmp_path, complete=False)
    target = tmp_path / "models"
    proc = _run(target, archive.as_uri(), hashlib.sha256(archive.read_bytes()).hexdigest())
    assert proc.returncode != 0
    assert "does not contain" in proc.stderr
    assert list(target.iterdir()) == []


def test_unreachable_download_fails_cleanly(tmp_path: Path) -> None:
    target = tmp_path / "models"
    proc = _run(target, (tmp_path / "missing.zip").as_uri())
    assert proc.returncode != 0
    assert "download failed" in proc.stderr
    assert list(target.iterdir()) == []
