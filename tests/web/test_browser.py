"""The web layer in a real browser: Debian's Chromium driven by Playwright.

A visitor chats in the widget on the demo page, staff see it live in the console and reply, the visitor sees the
reply; a reload keeps the conversation; XSS payloads stay inert; the screen-pop card appears on the right staff
member's page only; the status page renders. Screenshots of each page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import async_playwright

from gateway.domain.bus import Bus
from gateway.domain.events import CallAnswered, CallRinging, LiveTranscript
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService
from gateway.store.db import Store
from gateway.web.app import WebServer
from gateway.web.config import WebConfig
from gateway.web.deps import WebDeps
from gateway.web.pages import create_staff_user

from .conftest import ALWAYS_OPEN, PASSWORD

pytestmark = [
    pytest.mark.browser,
]

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS = '<img src=x onerror="window.__pwned=1;alert(1)"><script>window.__pwned=2</script>'


@dataclass
class Live:
    url: str
    server: WebServer
    service: ConversationService
    bus: Bus
    store: Store
    browser: Any


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    store = Store(tmp_path / "gateway.db")
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus)
    cfg = WebConfig(
        # Port 0: the OS picks a free port, so parallel test runs on one machine never collide.
        port=0,
        # Secure cookies as in production: Chromium keeps them on http://127.0.0.1 (a trustworthy origin).
        secure_cookies=True,
        business_hours=ALWAYS_OPEN,
        quiet_hours="",
        business_name="Hana Plumbing",
        voicemail_dir=str(tmp_path / "vm"),
    )

    async def modem() -> dict[str, Any]:
        return {"present": True, "registered": True, "operator": "TestNet", "signal_dbm": -67, "sim_used": 3}

    async def asterisk() -> dict[str, Any]:
        return {"up": True, "ami": "up", "fastagi": "up", "since": time.time() - 3600}

    deps = WebDeps(service, store, bus, cfg, status_sources={"asterisk": asterisk, "modem": modem})
    server = WebServer(deps)
    await server.start()
    await create_staff_user(store, "alice", PASSWORD, display_name="Alice Kim", extension="201", role="admin")
    await create_staff_user(store, "bob", PASSWORD, display_name="Bob Lee", extension="202")
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield Live(server.url, server, service, bus, store, browser)
        finally:
            await browser.close()
            await server.stop()
            await store.stop()


async def login(live: Live, username: str = "alice") -> Any:
    ctx = await live.browser.new_context(viewport={"width": 1280, "height": 800})
    page = await ctx.new_page()
    await page.goto(live.url + "/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console")
    await page.wait_for_selector("#live.ok")
    return page


async def open_widget(live: Live, ctx: Any | None = None) -> tuple[Any, Any]:
    ctx = ctx or await live.browser.new_context(viewport={"width": 1100, "height": 760})
    page = await ctx.new_page()
    await page.goto(live.url + "/demo")
    await page.click("#gateway-chat >> .launcher")
    await page.wait_for_selector("#gateway-chat >> .log li.system")
    return ctx, page


async def test_visitor_chats_staff_reply_live_and_reload_keeps_it(live: Live) -> None:
    staff = await login(live)
    await staff.screenshot(path=str(SHOTS / "console-empty.png"))
    ctx, visitor = await open_widget(live)
    await visitor.fill("#gateway-chat >> textarea", "Hi! My kitchen sink is leaking. Can someone come today?")
    await visitor.press("#gateway-chat >> textarea", "Enter")
    await visitor.wait_for_selector("#gateway-chat >> li.visitor:not(.sending)")

    # Staff see it live in the inbox, open it, reply.
    item = staff.locator("#inbox li button", has_text="kitchen sink")
    await item.wait_for(timeout=5000)
    await item.click()
    await staff.wait_for_selector("#timeline li.in")
    assert await staff.locator("#reply-channel").input_value() == "chat"
    await staff.fill("#reply-body", "Yes, we can be there at 3 pm.")
    await staff.click("#reply button[type=submit]")
    await staff.wait_for_selector("#timeline li.out")

    reply = visitor.locator("#gateway-chat >> li.staff")
    await reply.wait_for(timeout=5000)
    assert await reply.text_content() == "Yes, we can be there at 3 pm."
    await visitor.screenshot(path=str(SHOTS / "widget-chat.png"))
    await staff.screenshot(path=str(SHOTS / "console-conversation.png"))

    # Reload: the same conversation comes back, nothing duplicated.
    await visitor.reload()
    await visitor.wait_for_selector("#gateway-chat >> li.staff")
    texts = await visitor.locator(".log li.visitor, .log li.staff").all_text_contents()
    assert texts == ["Hi! My kitchen sink is leaking. Can someone come today?", "Yes, we can be there at 3 pm."]
    # A follow-up after reload lands in the same staff timeline.
    await visitor.fill("#gateway-chat >> textarea", "Great, thanks!")
    await visitor.press("#gateway-chat >> textarea", "Enter")
    await staff.locator("#timeline li.in", has_text="Great, thanks!").wait_for(timeout=5000)
    assert await staff.locator("#timeline li").count() == 3
    await ctx.close()
    await staff.context.close()


async def test_xss_payloads_stay_inert(live: Live) -> None:
    dialogs: list[str] = []

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    ctx, visitor = await open_widget(live)
    visitor.on("dialog", on_dialog)
    await visitor.fill("#gateway-chat >> textarea", XSS)
    await visitor.press("#gateway-chat >> textarea", "Enter")
    await visitor.wait_for_selector("#gateway-chat >> li.visitor:not(.sending)")
    # An SMS body, a caller name and a transcript carrying payloads too.
    r = await live.service.ingest(
        Inbound(
            Channel.SMS,
            EventKind.MESSAGE_IN,
            IdentityKind.PHONE,
            "+12025550199",
            "sms-xss",
            body=XSS,
            display_name='<svg onload="window.__pwned=3">',
        )
    )
    await live.service.append_event(r.conversation_id, EventKind.TRANSCRIPT, Channel.VOICE, XSS)
    staff = await login(live)
    staff.on("dialog", on_dialog)
    for row in await staff.locator("#inbox li button").all():
        await row.click()
        await staff.wait_for_selector("#timeline li")
    await staff.fill("#search", "onerror")
    await staff.wait_for_selector("#search-results li")
    summary = await live.service.summary(r.conversation_id)
    live.bus.publish(
        CallRinging("201", "x.1", "+12025550199", r.conversation_id, summary, caller_name=XSS, occurred_at=time.time())
    )
    await staff.wait_for_selector(".card")
    await staff.wait_for_timeout(300)
    for page in (visitor, staff):
        assert await page.evaluate("window.__pwned === undefined")
        assert await page.locator("img[src=x]").count() == 0
        assert await page.locator("#gateway-chat >> img").count() == 0
        assert await page.locator("main svg, aside svg, .card svg").count() == 0
    assert dialogs == []
    # The payload is shown as text.
    assert await visitor.locator("#gateway-chat >> li.visitor").first.text_content() == XSS
    assert await staff.locator(".card h2").text_content() == '<svg onload="window.__pwned=3">'
    await staff.screenshot(path=str(SHOTS / "console-xss-inert.png"))
    await ctx.close()
    await staff.context.close()


async def test_screen_pop_on_the_right_page_only(live: Live) -> None:
    r = await live.service.ingest(
        Inbound(
            Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12025550123", "sms-pop", body="Is my quote ready?"
        )
    )
    await live.service.update_conversation(r.conversation_id, intent="quote", next_step="Email the quote")
    alice = await login(live, "alice")
    bob = await login(live, "bob")
    summary = await live.service.summary(r.conversation_id)
    started = time.perf_counter()
    live.bus.publish(CallRinging("201", "pop.1", "+12025550123", r.conversation_id, summary, occurred_at=time.time()))
    card = alice.locator(".card")
    await card.wait_for(timeout=5000)
    elapsed = time.perf_counter() - started
    text = await card.text_content() or ""
    assert "Is my quote ready?" in text
    assert "Email the quote" in text
    assert "quote" in text
    await bob.wait_for_timeout(300)
    assert await bob.locator(".card").count() == 0
    await alice.screenshot(path=str(SHOTS / "console-screen-pop.png"))
    # Answered elsewhere: the card goes.
    live.bus.publish(CallAnswered("203", "pop.1", "+12025550123", r.conversation_id))
    await card.wait_for(state="detached", timeout=5000)
    assert elapsed < 2.0
    await alice.context.close()
    await bob.context.close()


async def test_status_and_login_pages(live: Live) -> None:
    ctx = await live.browser.new_context(viewport={"width": 1280, "height": 800})
    page = await ctx.new_page()
    await page.goto(live.url + "/login")
    await page.screenshot(path=str(SHOTS / "login.png"))
    await page.fill("#username", "alice")
    await page.fill("#password", "wrong password")
    await page.click("button[type=submit]")
    assert "Wrong username or password" in (await page.locator(".alert").text_content() or "")
    await page.screenshot(path=str(SHOTS / "login-error.png"))
    await ctx.close()
    staff = await login(live)
    await staff.goto(live.url + "/status")
    await staff.click("#raw > summary")  # the raw counters are folded away under the verdict cards
    modem = staff.locator('[data-section="modem"]')
    await modem.wait_for(timeout=5000)
    assert "TestNet" in (await modem.text_content() or "")
    assert "up" in (await staff.locator('[data-section="asterisk"] .pill').text_content() or "")
    # Admins create an API token here; it is shown once and works as a bearer token.
    await staff.fill("#token-name", "CRM sync")
    await staff.click("#token-form button[type=submit]")
    shown = staff.locator("#token-new")
    await shown.wait_for()
    token = (await shown.text_content() or "").rsplit(": ", 1)[1]
    await staff.locator("#tokens li", has_text="CRM sync").wait_for()
    async with (
        aiohttp.ClientSession() as s,
        s.get(live.url + "/api/v1/inbox", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200
    await staff.evaluate("window.scrollTo(0, 0)")
    await staff.screenshot(path=str(SHOTS / "status.png"), full_page=True)
    # Phone-sized console.
    await staff.set_viewport_size({"width": 390, "height": 844})
    await staff.goto(live.url + "/console")
    await staff.wait_for_selector("#live.ok")
    await staff.screenshot(path=str(SHOTS / "console-phone.png"))
    await staff.context.close()


async def test_voicemail_player_and_unsure_words(live: Live, tmp_path: Path) -> None:
    vm = tmp_path / "vm"
    vm.mkdir()
    wav = vm / "msg0001.wav"
    # A real (silent) 8 kHz 16-bit WAV, 0.5 s.
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 4000)
    r = await live.service.ingest(
        Inbound(
            Channel.VOICE,
            EventKind.VOICEMAIL,
            IdentityKind.PHONE,
            "+12025550166",
            "vm-browser-1",
            meta={"path": str(wav), "duration": 0.5},
            display_name="Jin Park",
        )
    )
    await live.service.append_event(
        r.conversation_id,
        EventKind.TRANSCRIPT,
        Channel.VOICE,
        "예약 내일",
        meta={
            "low_confidence_threshold": 0.6,
            "words": [{"word": "예약", "conf": 0.93, "low": False}, {"word": "내일", "conf": 0.41, "low": True}],
        },
    )
    staff = await login(live)
    await staff.locator("#inbox li button", has_text="Jin Park").click()
    audio = staff.locator("#timeline audio")
    await audio.wait_for()
    src = await audio.get_attribute("src")
    assert src == f"/media/voicemail/{r.event_id}"
    # The authenticated URL serves the file to the logged-in browser.
    status = await staff.evaluate("(u) => fetch(u).then((r) => r.status)", src)
    assert status == 200
    unsure = staff.locator("#timeline .lowconf")
    assert await unsure.all_text_contents() == ["내일"]
    await staff.screenshot(path=str(SHOTS / "console-voicemail.png"))
    await staff.context.close()


async def test_after_hours_call_me_on_a_phone_screen(live: Live) -> None:
    live.server.deps.config = dataclasses.replace(
        live.server.deps.config, business_hours={}, after_hours_message="We are closed. Leave a message!"
    )
    ctx = await live.browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    visitor = await ctx.new_page()
    await visitor.goto(live.url + "/demo")
    await visitor.screenshot(path=str(SHOTS / "demo-phone.png"))
    await visitor.click("#gateway-chat >> .launcher")
    notice = visitor.locator("#gateway-chat >> .notice")
    await notice.wait_for()
    assert await notice.text_content() == "We are closed. Leave a message!"
    await visitor.click("#gateway-chat >> text=Call me")
    await visitor.fill("#gateway-chat >> input[type=tel]", "12345")
    await visitor.click("#gateway-chat >> .handoff button[type=submit]")
    await visitor.locator(".status", has_text="does not look like").wait_for()
    await visitor.fill("#gateway-chat >> input[type=tel]", "+1 202 555 0111")
    await visitor.click("#gateway-chat >> .handoff button[type=submit]")
    await visitor.locator(".log li.system", has_text="call you").wait_for()
    await visitor.screenshot(path=str(SHOTS / "widget-phone-after-hours.png"))
    # Staff see the request with the number to call.
    staff = await login(live)
    await staff.locator("#inbox li button").first.click()
    handoff = staff.locator("#timeline li.system", has_text="call back")
    await handoff.wait_for()
    assert await staff.locator("#fields input[name=next_step]").input_value() == "Call back"
    await ctx.close()
    await staff.context.close()


def test_chromium_is_debians() -> None:
    assert shutil.which("chromium") == "/usr/bin/chromium"


async def test_console_shows_a_claim_as_unverified_and_merges_in_one_click(live: Live) -> None:
    known = await live.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "+12025550171", "claim-k1", "Earlier text")
    )
    ctx, visitor = await open_widget(live)
    await visitor.fill("#gateway-chat >> textarea", "Hi, I texted you last week")
    await visitor.press("#gateway-chat >> textarea", "Enter")
    await visitor.wait_for_selector("#gateway-chat >> li.visitor:not(.sending)")
    await visitor.click("#gateway-chat >> text=Call me")
    await visitor.fill("#gateway-chat >> input[type=tel]", "(202) 555-0171")
    await visitor.click("#gateway-chat >> .handoff button[type=submit]")
    await visitor.locator(".log li.system", has_text="call you soon").wait_for(timeout=5000)
    staff = await login(live)
    item = staff.locator("#inbox li button", has_text="Says they are +12025550171")
    await item.wait_for(timeout=5000)
    await item.click()
    claim = staff.locator("#claims li.claim.unverified")
    await claim.wait_for(timeout=5000)
    assert "says they are +12025550171, not verified" in (await claim.text_content() or "")
    # Nothing was merged by the typed number: the known customer's text is not in this timeline.
    assert await staff.locator("#timeline li", has_text="Earlier text").count() == 0
    await staff.screenshot(path=str(SHOTS / "console-claim-unverified.png"))
    await staff.click("#claims button.confirm-claim")
    await staff.locator("#timeline li", has_text="Earlier text").wait_for(timeout=5000)
    await staff.locator("#timeline li", has_text="Hi, I texted you last week").wait_for()
    merges = await live.store.read(lambda c: c.execute("SELECT kept_contact_id FROM merges").fetchall())
    assert merges == [(known.contact_id,)]
    staff.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await staff.click("#timeline button.undo-merge")
    await staff.locator("#timeline li", has_text="Hi, I texted you last week").wait_for(state="detached", timeout=5000)
    await ctx.close()
    await staff.context.close()


async def test_screen_pop_shows_the_handoff_card_and_the_calls_words_live(live: Live) -> None:
    r = await live.service.ingest(
        Inbound(
            Channel.SMS,
            EventKind.MESSAGE_IN,
            IdentityKind.PHONE,
            "+12025550124",
            "sms-live",
            body="My son chipped a tooth. Do you handle emergencies?",
        )
    )
    alice = await login(live, "alice")
    summary = await live.service.summary(r.conversation_id)
    live.bus.publish(CallRinging("201", "live.1", "+12025550124", r.conversation_id, summary, occurred_at=time.time()))
    card = alice.locator(".card")
    await card.wait_for(timeout=5000)
    assert "Do you handle emergencies?" in (await card.text_content() or "")
    live.bus.publish(CallAnswered("201", "live.1", "+12025550124", r.conversation_id))
    # Partial words replace each other per side as the recogniser hears more; text only, never markup.
    live.bus.publish(LiveTranscript("live.1", r.conversation_id, "201", "caller", "is it"))
    live.bus.publish(LiveTranscript("live.1", r.conversation_id, "201", "caller", "is it <b>bad</b> to wait"))
    live.bus.publish(LiveTranscript("live.1", r.conversation_id, "201", "staff", "we can see him today"))
    caller = card.locator('.live-words p[data-side="caller"]')
    await caller.wait_for(timeout=5000)
    await alice.wait_for_function(
        "() => document.querySelector('.live-words p[data-side=caller]').textContent.includes('to wait')"
    )
    assert await caller.text_content() == "Caller: is it <b>bad</b> to wait"
    assert await card.locator(".live-words b").count() == 0
    assert await card.locator('.live-words p[data-side="staff"]').text_content() == "You: we can see him today"
    await alice.screenshot(path=str(SHOTS / "console-screen-pop-live-words.png"))
    await alice.context.close()


async def test_text_as_written_labels_and_retrying_a_failed_transcription(live: Live) -> None:
    """Issue 12 in the browser: an RTL override in a message stays inside its own <bdi>, search highlights only the
    hit (square brackets in the text stay text), an alphanumeric sender is labelled by its name, and staff retry a
    failed voicemail transcription with one click."""
    from gateway.store import transcribe as tq  # noqa: PLC0415

    bank = await live.service.ingest(
        Inbound(Channel.SMS, EventKind.MESSAGE_IN, IdentityKind.PHONE, "BANK", "s-bank", "[code] 1234 \u202ereversed")
    )
    vm = await live.service.ingest(
        Inbound(
            Channel.VOICE,
            EventKind.VOICEMAIL,
            IdentityKind.PHONE,
            "+12025550177",
            "vm-b:voicemail",
            meta={
                "path": "/nonexistent.wav",
                "transcription": "failed",
                "transcription_error": "worker hung. Fix: retry",
            },
        )
    )

    def failed(c: Any) -> None:
        job, _ = tq.enqueue_job(
            c, vm.conversation_id, vm.event_id, "/x.wav", now=1.0, max_backlog=10, waiting_model=False
        )
        tq.fail_job(c, job.id, "worker hung. Fix: retry", now=2.0)

    await live.store.write(failed)
    staff = await login(live)
    item = staff.locator("#inbox li button", has_text="BANK")
    await item.wait_for(timeout=5000)
    await item.click()
    await staff.wait_for_selector("#timeline li.in bdi.body")
    assert (await staff.locator("#conv-name").inner_text()) == "BANK"
    body = staff.locator("#timeline li.in bdi.body")
    assert "\u202e" in await body.inner_text()  # kept as written, isolated in its own <bdi>
    await staff.fill("#search", "code")
    await staff.wait_for_selector("#search-list li mark")
    assert await staff.locator("#search-list li mark").all_inner_texts() == ["code"]
    assert "[" in await staff.locator("#search-list li .snippet").inner_text()
    assert bank.conversation_id != vm.conversation_id

    await staff.locator("#inbox li button", has_text="+12025550177").click()
    retry = staff.locator("#timeline button.retry-transcription")
    await retry.wait_for(timeout=5000)
    assert "Fix:" in await staff.locator("#timeline .transcription-error").inner_text()
    await retry.click()
    await staff.wait_for_selector("#timeline button.retry-transcription", state="detached", timeout=5000)
    job = await live.store.read(lambda c: tq.job_for_voicemail(c, vm.event_id))
    assert job is not None
    assert job.status == "pending"


async def test_widget_messages_take_their_own_direction(live: Live) -> None:
    _ctx, visitor = await open_widget(live)
    await visitor.fill("#gateway-chat >> textarea", "שלום, is it open? \u202egnissim")
    await visitor.press("#gateway-chat >> textarea", "Enter")
    sent = visitor.locator("#gateway-chat >> li.visitor:not(.sending)")
    await sent.wait_for(timeout=5000)
    assert await sent.get_attribute("dir") == "auto"
    assert "\u202e" in await sent.inner_text()
