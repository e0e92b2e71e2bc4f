"""The configuration `gateway up` generates points the voice channel at the local Asterisk's shared folders and ARI."""

from __future__ import annotations

from pathlib import Path

from gateway import config as cfgmod
from gateway.launch import render_config

PBX = {
    "AGI_ADDR": "127.0.0.1:4573",
    "AMI_PORT": "5038",
    "AMI_USER": "gateway",
    "AMI_SECRET": "s3cret",
    "ARI_PORT": "8088",
    "ARI_USER": "gateway-ari",
    "ARI_PASSWORD": "ari-s3cret",
    "WHISPER_DIR": "/var/spool/gateway/whisper",
    "HOST_RECORDINGS_DIR": "/var/spool/gateway/recordings",
}


def test_up_turns_on_the_whisper_and_live_transcription_for_the_local_asterisk(tmp_path: Path) -> None:
    text = render_config(tmp_path / "var", PBX, tmp_path / "modem", "", 8080)
    cfg = cfgmod.parse(text, "gateway.toml")
    assert cfg.voice.whisper
    assert cfg.voice.whisper_dir == "/var/spool/gateway/whisper"
    assert cfg.voice.recordings_dir == "/var/spool/gateway/recordings"
    assert cfg.voice.live_transcribe
    assert cfg.voice.ari_url == "http://127.0.0.1:8088"
    assert cfg.voice.ari_password.reveal() == "ari-s3cret"
    assert cfg.voice.live_workers == 1


def test_without_ari_settings_live_transcription_stays_off(tmp_path: Path) -> None:
    pbx = {k: v for k, v in PBX.items() if not k.startswith("ARI_")}
    cfg = cfgmod.parse(render_config(tmp_path / "var", pbx, tmp_path / "modem", "", 8080), "gateway.toml")
    assert cfg.voice.ari_password.reveal() == ""
