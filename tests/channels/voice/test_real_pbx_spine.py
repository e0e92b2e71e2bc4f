# ruff: noqa: F811 - test parameters receive the fixtures imported from test_real_pbx
"""The ringing SIP phone carries the spine: a sipp call into the real Asterisk, the display name read from sipp's
trace of the INVITE that reached the staff phone."""

from __future__ import annotations

import pytest
from test_real_pbx import Rig, StartPhones, pbx, phones, rig  # noqa: F401 - importing the fixtures shares them
from voice_sipp import place_call

from gateway.domain.calls import CallOutcome
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.spine import EXTRACTOR, SpineService
from tests.realpbx.fixtures import realpbx  # noqa: F401 - the shared PBX session fixture

pytestmark = [pytest.mark.asterisk, pytest.mark.slow]


async def test_the_phone_display_shows_the_spine(rig: Rig, phones: StartPhones) -> None:
    number = "+15551230077"
    res = await rig.service.ingest(
        Inbound(
            Channel.CHAT,
            EventKind.MESSAGE_IN,
            IdentityKind.CHAT,
            "visitor-spine-77",
            "chat-77",
            "My son chipped a tooth - do you handle emergencies?",
            display_name="Maria Rodriguez",
        )
    )
    conv, _ = await rig.service.link_identity(res.conversation_id, IdentityKind.PHONE, number)
    spines = SpineService(rig.store, rig.bus)
    await spines.set_intent(conv, "problem", urgent=True, source="chat", set_by=EXTRACTOR)
    await spines.set_fact(conv, "topic", "chipped tooth", source="chat", set_by=EXTRACTOR)
    assert (await spines.spine(conv)).summary.startswith("Maria R - chipped tooth, urgent - chatted ")

    ph = await phones(x201="answer", x202="ring", x203="ring")
    result = await place_call(rig.work, number=number, name="MARIA CELL", hold_ms=1500)
    assert result.returncode == 0, result.stderr
    end = await rig.ended()
    assert end.outcome is CallOutcome.ANSWERED
    assert end.conversation_id == conv
    assert ph["201"].display_names()[0] == "Maria R - chipped tooth, urgent"  # type: ignore[index]
