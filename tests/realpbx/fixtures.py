"""Fixtures for tests that use the real Asterisk. Use them by importing them into a conftest.py
(``from tests.realpbx.fixtures import realpbx, sip, ...``, as tests/asterisk/conftest.py does) or by
naming this module in the root conftest's ``pytest_plugins`` before any test module imports it.

Fixtures:

* ``realpbx`` (session): Asterisk provisioned and running with tests/realpbx/test.env; yields
  :class:`~tests.realpbx.harness.PbxSettings`. Stopped at the end of the session if this session
  started it and nobody else uses it (another test run registered as a user, an AMI client
  connected, or a call up).
  ``GATEWAY_ASTERISK_KEEP=1`` leaves it running for quick reruns.
* ``ami_credentials`` (session): host, port, username, secret of the gateway's AMI user.
* ``recordings_dir`` (session): the voicemail recordings directory as seen from the host.
* ``korean_speech_wav`` (session): espeak-ng "예약" ("reservation"), 8 kHz mu-law, padded.
* ``sip`` (function): :class:`SipHarness` to place calls and run staff phones; holds the cross-
  process call lock for the test and stops every sipp it started.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.realpbx import harness
from tests.realpbx.harness import AmiCredentials, PbxSettings, SipHarness

log = logging.getLogger(__name__)


def _pbx_idle(settings: PbxSettings) -> bool:
    """No call up and no AMI client connected: stopping the PBX hurts nobody."""
    try:
        calls = harness.asterisk_cli(settings, "core show channels count")
        clients = harness.asterisk_cli(settings, "manager show connected")
    except harness.HarnessError:
        return True
    active = re.search(r"(\d+) active call", calls)
    connected = re.search(r"(\d+) users? connected", clients)
    return (not active or active.group(1) == "0") and (not connected or connected.group(1) == "0")


@pytest.fixture(scope="session")
def realpbx() -> Iterator[PbxSettings]:
    """The local Asterisk with the test configuration, running for the whole session."""
    with harness.pbx_user() as last_user:
        was_running = harness.pbx_running()
        try:
            settings, seconds = harness.start_pbx()
        except harness.HarnessError as err:
            pytest.fail(str(err))
        log.info("local Asterisk ready in %.1f s (was running: %s)", seconds, was_running)
        yield settings
        keep = os.environ.get("GATEWAY_ASTERISK_KEEP") == "1"
        if not was_running and not keep and last_user() and _pbx_idle(settings):
            harness.stop_pbx()


@pytest.fixture(scope="session")
def ami_credentials(realpbx: PbxSettings) -> AmiCredentials:
    """AMI login of the gateway user on the test PBX."""
    return realpbx.ami


@pytest.fixture(scope="session")
def recordings_dir(realpbx: PbxSettings) -> Path:
    """Where voicemail WAVs appear, as seen from the host."""
    return realpbx.recordings_dir


@pytest.fixture(scope="session")
def korean_speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """espeak-ng saying "예약", 8 kHz mono mu-law WAV with silence around it (voicemail, Vosk)."""
    out = tmp_path_factory.mktemp("speech") / "yeyak_ulaw.wav"
    return harness.make_speech("예약", out, pad_before_s=0.5, pad_after_s=1.5)


@pytest.fixture
async def sip(realpbx: PbxSettings, tmp_path: Path) -> AsyncIterator[SipHarness]:
    """Call harness for one test, holding the cross-process lock of tests that place calls."""
    with harness.pbx_call_lock():
        await harness.wait_pbx_quiet(realpbx)
        h = SipHarness(realpbx, tmp_path)
        try:
            yield h
        finally:
            await h.close()
