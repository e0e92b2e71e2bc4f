"""The widget's "Call me" with a time picker, in Chromium, through to a real call: the visitor (in Berlin, the office
in New York) picks one of the times the office can call, shown in the visitor's own time zone; the confirmation says
that time in their words; the rules book it; at that moment the owner's phone (sipp on extension 201, through the
shared test Asterisk 22) rings first and answers, then the number the visitor typed rings through the trunk.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from gateway.continuity.clock import ManualClock
from gateway.emulator import ModemEmulator
from tests.continuity.conftest import local
from tests.continuity.daemon import Daemon, build_config, wait_for
from tests.continuity.test_call_me_pbx import first_invite_at
from tests.continuity.test_journeys_pbx import (  # noqa: F401 - fixtures
    Phones,
    emulator,
    pbx_turn,
    phones,
    texts_to,
    voice_section,
)
from tests.realpbx import harness
from tests.realpbx.fixtures import realpbx  # noqa: F401 - the shared PBX session fixture
from tests.web.test_browser import CHROMIUM_ARGS, SHOTS

pytestmark = [pytest.mark.browser, pytest.mark.asterisk, pytest.mark.slow]

VISITOR_NUMBER = "+12025550196"


@pytest.mark.timeout(240)
async def test_the_visitor_picks_a_call_back_time_in_their_time_zone_and_the_call_happens(
    tmp_path: Path,
    emulator: ModemEmulator,  # noqa: F811
    pbx_turn: harness.PbxSettings,  # noqa: F811
    phones: Phones,  # noqa: F811
) -> None:
    voice = {**voice_section(pbx_turn), "click_to_call_ring_s": 4}
    continuity = {"call_me_extension": "201", "call_me_retries": 0}
    clock = ManualClock(local(7, 12, 15))  # Monday 12:15 in New York, the lunch break; 18:15 in Berlin
    d = Daemon(build_config(tmp_path, emulator, voice=voice, continuity=continuity), clock)
    app = await d.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                ctx = await browser.new_context(
                    viewport={"width": 1000, "height": 760}, timezone_id="Europe/Berlin", locale="en-GB"
                )
                visitor = await ctx.new_page()
                assert app.web is not None
                await visitor.goto(app.web.url + "/demo")
                await visitor.click("#gateway-chat >> .launcher")
                await visitor.wait_for_selector("#gateway-chat >> .log li.system")
                # The office's own times ("we reopen at 13:30") are New York time: the widget says so, once.
                zone_note = visitor.locator("#gateway-chat >> li.system", has_text="Times in our messages are")
                await zone_note.wait_for(timeout=10000)
                assert (await zone_note.text_content() or "").startswith("Times in our messages are New York time")
                await visitor.fill("#gateway-chat >> textarea", "Could someone call me about a crown?")
                await visitor.press("#gateway-chat >> textarea", "Enter")
                await visitor.click("#gateway-chat >> button.ghost:has-text('Call me')")
                await visitor.fill("#gateway-chat >> input[type=tel]", VISITOR_NUMBER)
                picker = visitor.locator("#gateway-chat >> select.call-time")
                await picker.wait_for(state="visible", timeout=15000)
                options = [t.strip() for t in await picker.locator("option").all_text_contents()]
                # The office opens again at 13:30 New York time: 19:30 for the visitor in Berlin.
                assert options[0] == "As soon as you can"
                assert "Monday" in options[1], options
                assert "19:30" in options[1], options
                assert "20:00" in options[2], options
                assert len(options) == 9, options
                await picker.select_option(index=2)
                await visitor.screenshot(path=str(SHOTS / "widget-call-me-time-picker.png"))
                await visitor.click("#gateway-chat >> .handoff button[type=submit]")
                confirmed = visitor.locator("#gateway-chat >> li.system", has_text="(your time)")
                await confirmed.wait_for(timeout=15000)
                words = await confirmed.text_content() or ""
                assert words.startswith("Thanks! We will call you on Monday"), words
                assert "20:00 (your time)" in words, words
                await visitor.screenshot(path=str(SHOTS / "widget-call-me-confirmed.png"))
                await ctx.close()
                # A visitor in the office's own time zone gets no such note.
                local_ctx = await browser.new_context(timezone_id="America/New_York", locale="en-US")
                neighbour = await local_ctx.new_page()
                await neighbour.goto(app.web.url + "/demo")
                await neighbour.click("#gateway-chat >> .launcher")
                await neighbour.wait_for_selector("#gateway-chat >> .log li.system")  # the greeting: set with the note
                notes = neighbour.locator("#gateway-chat >> li.system", has_text="Times in our messages are")
                assert await notes.count() == 0
                await local_ctx.close()
            finally:
                await browser.close()

        # The rules booked 14:00 New York time on their clock.
        booked = await wait_for(lambda: d.decisions("call_me"), 20)
        assert booked[0][1:] == ("deferred", "the visitor picked a call-back time in the chat: due at 14:00")
        assert d.rows("SELECT due_at FROM continuity_jobs WHERE rule = 'call_me'") == [(local(7, 14),)]
        # The picked time is the conversation's next step, owned by the staff member whose phone rings first.
        step_sql = "SELECT next_step, next_step_due, next_step_owner FROM conversations WHERE next_step IS NOT NULL"
        assert d.rows(step_sql) == [("Call back", local(7, 14), "alice")]

        ring = await phones.start(x201="answer", x299="answer_bye")
        clock.set(local(7, 13, 59))
        await d.settle(1.0)
        assert ring["201"].invites() == 0, "nothing rings before the picked time"
        clock.set(local(7, 14))
        await wait_for(lambda: ("sent", "call-back connected") in [x[1:] for x in d.decisions("call_me")], 60)
        assert first_invite_at(ring["201"].trace) < first_invite_at(ring["299"].trace), "the owner's phone rang first"
        assert ring["299"].invites() == 1
        assert texts_to(emulator, VISITOR_NUMBER) == [], "a call-back sends no text to a number only typed in a chat"
        await wait_for(lambda: d.rows(step_sql) == [], 20)  # connected: the step is done
    finally:
        await d.stop()
