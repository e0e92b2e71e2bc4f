# ruff: noqa: F811 - test parameters named "live" receive the fixture imported from test_browser
"""The spine in a real browser (Chromium via Playwright): at the top of the conversation, editable by staff, on the
screen-pop, and staff starting a new conversation from the console. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.domain.events import CallRinging
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.spine import EXTRACTOR, SpineService

from .test_browser import SHOTS, Live, live, login  # noqa: F401 - importing the fixture shares it

pytestmark = [pytest.mark.browser]


async def _dental_conversation(live: Live) -> tuple[int, SpineService]:
    chat = await live.service.ingest(
        Inbound(
            Channel.CHAT,
            EventKind.MESSAGE_IN,
            IdentityKind.CHAT,
            "visitor-maria",
            "c1",
            "My son chipped a tooth - do you handle emergencies?",
            display_name="Maria Rodriguez",
            occurred_at=time.time() - 1800,
        )
    )
    conv, _ = await live.service.link_identity(chat.conversation_id, IdentityKind.PHONE, "+14155552671")
    sms = await live.service.ingest(
        Inbound(
            Channel.SMS,
            EventKind.MESSAGE_IN,
            IdentityKind.PHONE,
            "+14155552671",
            "s1",
            "Saturday morning works, text me",
            occurred_at=time.time() - 600,
        )
    )
    spines = SpineService(live.store, live.bus)
    kw: dict[str, Any] = {"set_by": EXTRACTOR}
    await spines.set_intent(conv, "problem", urgent=True, source="chat", **kw)
    await spines.set_fact(conv, "topic", "chipped tooth", source="chat", confidence=0.8, **kw)
    await spines.set_fact(
        conv, "availability", {"text": "Saturday morning"}, source="sms", event_id=sms.event_id, confidence=0.8, **kw
    )
    await spines.set_channel_preference(conv, "sms", "said 'text me'", source="sms", **kw)
    await spines.set_next_step(conv, "Send time slots", source="staff", set_by="bob", due=time.time() + 3600)
    return conv, spines


async def test_the_console_opens_the_conversation_with_its_spine(live: Live) -> None:
    conv, spines = await _dental_conversation(live)
    staff = await login(live)
    await staff.locator("#inbox li button", has_text="Maria").first.click()
    line = staff.locator("#spine-line")
    await line.wait_for()
    assert (await line.text_content() or "").startswith("Maria R - chipped tooth, urgent - texted 10 min ago")
    episode = await staff.locator("#spine-episode").text_content() or ""
    assert episode.startswith("This episode: 2 contacts since "), episode  # the chat, then the text 20 min later
    assert episode.endswith("(Chat, SMS) · 0 automated texts sent"), episode
    assert await staff.locator("#intent").input_value() == "problem"
    assert await staff.locator("#fields input[name=urgent]").is_checked()
    assert await staff.locator("#fields input[name=next_step]").input_value() == "Send time slots"
    assert await staff.locator("#fields input[name=next_step_due]").input_value() != ""
    assert await staff.locator("#preference").input_value() == "sms"
    assert await staff.locator("#preference-why").text_content() == "why: said 'text me'"
    topic = staff.locator("#facts tr[data-fact=topic]")
    assert (await topic.locator("td").nth(0).text_content()) == "chipped tooth"
    assert (await topic.locator("td.src").text_content() or "").startswith("read from chat")
    avail = staff.locator("#facts tr[data-fact=availability]")
    assert (await avail.locator("td").nth(0).text_content()) == "Saturday morning"
    assert "80% sure" in (await avail.locator("td.src").text_content() or "")
    await staff.locator("#conv-name").scroll_into_view_if_needed()
    await staff.screenshot(path=str(SHOTS / "console-spine.png"))

    # Staff pick another intent, give themselves the conversation and correct a fact; each lands on the timeline.
    await staff.select_option("#intent", "book")
    await staff.select_option("#owner", "alice")
    await staff.click("#fields button[type=submit]")
    await staff.locator("#timeline li.spine-change", has_text="Intent: book").wait_for(timeout=5000)
    await staff.locator("#timeline li.spine-change", has_text="Owner: alice").wait_for(timeout=5000)
    assert await staff.locator("#timeline li.spine-change", has_text="due ").count() == 1, "saving kept the due time"
    await staff.fill("#fact-name", "insurance")
    await staff.fill("#fact-value", "Delta Dental")
    await staff.click("#fact-form button[type=submit]")
    row = staff.locator("#facts tr[data-fact=insurance]")
    await row.wait_for(timeout=5000)
    assert (await row.locator("td.src").text_content() or "").startswith("staff · alice")
    await staff.locator("#timeline li.spine-change", has_text="Insurance: Delta Dental - set by alice").wait_for()
    spine = await spines.spine(conv)
    assert (spine.intent, spine.owner, spine.fact_value("insurance")) == ("book", "alice", "Delta Dental")
    assert spine.provenance["intent"].set_by == "alice"
    # A change made elsewhere (the extractor, another staff member) shows up live.
    await spines.set_fact(conv, "address", "12 Oak Street, Springfield, IL 62704", source="sms", set_by=EXTRACTOR)
    await staff.locator("#facts tr[data-fact=address]").wait_for(timeout=5000)
    await staff.screenshot(path=str(SHOTS / "console-spine-edited.png"), full_page=True)

    # The screen-pop opens with the same summary line.
    summary = await live.service.summary(conv)
    live.bus.publish(CallRinging("201", "spine.1", "+14155552671", conv, summary, occurred_at=time.time()))
    card = staff.locator(".card .headline")
    await card.wait_for(timeout=5000)
    assert (await card.text_content() or "").startswith("Maria R - chipped tooth, urgent - ")
    await staff.screenshot(path=str(SHOTS / "screen-pop-spine.png"))
    await staff.context.close()


async def test_staff_start_a_new_conversation_from_the_console(live: Live) -> None:
    staff = await login(live)
    await staff.click("#new-btn")
    await staff.fill("#new-phone", "(415) 555-2690")
    await staff.fill("#new-body", "Hi, this is Hana Plumbing about your quote")
    await staff.click("#new-text")
    await staff.locator("#timeline li.out", has_text="about your quote").wait_for(timeout=5000)
    assert await staff.locator("#new-form").is_hidden()
    contact = await live.service.find_contact(IdentityKind.PHONE, "+14155552690")
    assert contact is not None
    timeline = await live.service.timeline(contact.conversation_id)
    assert [e.kind for e in timeline] == ["handoff", "message_out"]
    # A bad number gets one clear line, nothing is created.
    await staff.click("#new-btn")
    await staff.fill("#new-phone", "555-12")
    await staff.fill("#new-body", "hello")
    await staff.click("#new-text")
    await staff.locator("#new-error", has_text="not a complete phone number").wait_for(timeout=5000)
    await staff.context.close()
