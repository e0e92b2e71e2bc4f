"""Web benchmark (run by hand): many chat websockets against a real gateway web server.

    .venv/bin/python bench/web_bench.py [--sockets 2000] [--fanout 1000] [--rounds 20]

The server runs in its own process (real store, bus, service and web app) so its memory can be measured alone.
Figures printed:

* memory per chat websocket: server RSS growth after N visitors connected and said hello, divided by N
  (target <= 16 KiB);
* fan-out: time for the server to write one message to ``--fanout`` sockets (ChatHub.fan_out), and the time until
  the last client received it, median and worst over ``--rounds`` (target <= 20 ms).

    .venv/bin/python bench/web_bench.py --screen-pop 30

* screen-pop end to end: a sipp call into the local test Asterisk (started by tests/realpbx's harness) rings staff
  phone 201; the time from the INVITE sipp sent to the card appearing in a live Chromium page of the staff member
  bound to 201 (target p50 <= 50 ms, p99 <= 250 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]

SERVER = r"""
import asyncio, gc, json, os, resource, sys, time
from pathlib import Path
from aiohttp import web
from gateway.domain.bus import Bus
from gateway.domain.service import ConversationService
from gateway.store.db import Store
from gateway.web.app import WebServer
from gateway.web.chat import CHAT_HUB
from gateway.web.config import WebConfig
from gateway.web.deps import WebDeps

def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

async def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    store = Store(Path(sys.argv[1]) / "bench.db")
    await store.start()
    bus = Bus()
    cfg = WebConfig(port=int(sys.argv[2]), secure_cookies=False, chat_new_per_address_per_hour=10**9,
                    chat_messages_per_minute=10**9, chat_burst=10**9)
    server = WebServer(WebDeps(ConversationService(store, bus), store, bus, cfg))
    hub = server.app[CHAT_HUB]
    hub.max_sockets_per_address = 10**9  # every bench client comes from 127.0.0.1
    hub.max_sockets = 10**9  # the bench measures memory beyond the default cap

    snaps = []

    async def measure(request: web.Request) -> web.Response:
        gc.collect()
        if os.environ.get("BENCH_TRACE"):
            import tracemalloc
            if not tracemalloc.is_tracing():
                tracemalloc.start(10)
            snaps.append(tracemalloc.take_snapshot())
            if len(snaps) == 2:
                stats = snaps[1].compare_to(snaps[0], "lineno")
                n = max(1, hub.socket_count - 1)
                print("traced per socket:", sum(x.size_diff for x in stats) / n, file=sys.stderr)
                for x in stats[:30]:
                    print(round(x.size_diff / n), x.traceback[0], file=sys.stderr)
        return web.json_response({"rss": rss(), "sockets": hub.socket_count})

    async def fanout(request: web.Request) -> web.Response:
        n = int(request.query["n"])
        peers = list(hub._all)[:n]
        text = json.dumps({"type": "message", "message": {"id": 0, "from": "staff", "body": "x" * 40,
                                                           "at": time.time(), "client_id": None}})
        t0 = time.perf_counter()
        sent = await hub.fan_out(peers, text)
        return web.json_response({"seconds": time.perf_counter() - t0, "sent": sent})

    server.app.router.add_get("/bench/measure", measure)
    server.app.router.add_get("/bench/fanout", fanout)
    await server.start()
    print("READY", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@dataclass
class _Round:
    """One fan-out round: frames received so far, how many make it whole, and the future set when they have."""

    want: int
    got: int = 0
    done: asyncio.Future[float] | None = None


async def run(sockets: int, fanout: int, rounds: int, port: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="web-bench-")
    root = ROOT
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once before any load
        [sys.executable, "-c", SERVER, tmp, str(port)],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        if "READY" not in line:
            raise SystemExit(f"server did not start: {line!r}")
        base = f"http://127.0.0.1:{port}"
        origin = base
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as s:
            # Warm up: one socket so lazily created things exist before the baseline.
            warm = await s.ws_connect(base + "/chat/ws", origin=origin, autoping=True)
            await warm.send_json({"type": "hello"})
            await warm.receive_json()
            before = await (await s.get(base + "/bench/measure")).json()
            socks: list[aiohttp.ClientWebSocketResponse] = []
            t0 = time.perf_counter()
            for start in range(0, sockets, 200):
                batch = await asyncio.gather(
                    *(s.ws_connect(base + "/chat/ws", origin=origin) for _ in range(min(200, sockets - start)))
                )
                for ws in batch:
                    await ws.send_json({"type": "hello"})
                await asyncio.gather(*(ws.receive_json() for ws in batch))
                socks.extend(batch)
            connect_s = time.perf_counter() - t0
            after = await (await s.get(base + "/bench/measure")).json()
            per_socket = (after["rss"] - before["rss"]) / sockets
            print(f"sockets open:              {after['sockets'] - before['sockets']} (in {connect_s:.1f} s)")
            print(f"server RSS before/after:   {before['rss'] / 2**20:.1f} MiB / {after['rss'] / 2**20:.1f} MiB")
            print(f"memory per chat websocket: {per_socket / 1024:.1f} KiB (target <= 16 KiB)")

            server_times = []
            e2e_times = []
            everyone = [warm, *socks]
            state = _Round(want=fanout)

            async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        state.got += 1
                        fut = state.done
                        if state.got >= state.want and fut is not None and not fut.done():
                            fut.set_result(time.perf_counter())

            readers = [asyncio.create_task(reader(ws)) for ws in everyone]
            for _ in range(rounds):
                state.got = 0
                done = state.done = asyncio.get_running_loop().create_future()
                t_start = time.perf_counter()
                resp = await (await s.get(base + f"/bench/fanout?n={fanout}")).json()
                t_end = await asyncio.wait_for(done, timeout=30)
                server_times.append(resp["seconds"])
                e2e_times.append(t_end - t_start)
                await asyncio.sleep(0.1)
            print(
                f"fan-out to {fanout} sockets, server write: median {statistics.median(server_times) * 1000:.2f} ms, "
                f"worst {max(server_times) * 1000:.2f} ms (target <= 20 ms)"
            )
            print(
                f"fan-out to {fanout} sockets, until last client has it: "
                f"median {statistics.median(e2e_times) * 1000:.1f} ms, worst {max(e2e_times) * 1000:.1f} ms"
            )
            for ws in everyone:
                await ws.close()
            await asyncio.gather(*readers, return_exceptions=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        gc.collect()


POP_OBSERVER = """
window.__pops = [];
new MutationObserver((records) => {
  for (const r of records) for (const n of r.addedNodes)
    if (n.classList && n.classList.contains("card")) window.__pops.push(Date.now());
}).observe(document.getElementById("calls"), { childList: true });
"""


async def screen_pop(calls: int) -> None:
    """sipp INVITE -> card in the browser, ``calls`` times; prints p50/p99."""
    from playwright.async_api import async_playwright  # noqa: PLC0415 - only this mode needs a browser

    from gateway.channels.voice.channel import VoiceChannel  # noqa: PLC0415
    from gateway.channels.voice.settings import VoiceSettings  # noqa: PLC0415
    from gateway.config import Secret  # noqa: PLC0415
    from gateway.domain.bus import Bus  # noqa: PLC0415
    from gateway.domain.service import ConversationService  # noqa: PLC0415
    from gateway.store.db import Store  # noqa: PLC0415
    from gateway.web.app import WebServer  # noqa: PLC0415
    from gateway.web.config import WebConfig  # noqa: PLC0415
    from gateway.web.deps import WebDeps  # noqa: PLC0415
    from gateway.web.pages import create_staff_user  # noqa: PLC0415

    sys.path.insert(0, str(ROOT))
    from tests.realpbx import harness  # noqa: PLC0415

    settings, _ = harness.start_pbx()
    tmp = Path(tempfile.mkdtemp(prefix="pop-bench-"))
    with harness.pbx_call_lock():
        await harness.wait_pbx_quiet(settings)
        store = Store(tmp / "bench.db")
        await store.start()
        bus = Bus()
        service = ConversationService(store, bus)
        ami = settings.ami
        host, port = settings.agi_addr
        vc = VoiceChannel(
            VoiceSettings(
                ami_port=ami.port,
                ami_username=ami.username,
                ami_secret=Secret(ami.secret),
                agi_host=host,
                agi_port=port,
                staff={"201": "alice"},
            ),
            service,
            bus,
            store=store,
        )
        server = WebServer(WebDeps(service, store, bus, WebConfig(port=0, secure_cookies=False)))
        await server.start()
        await create_staff_user(store, "alice", "bench password", extension="201")
        await vc.start()
        await vc.ami.wait_connected(10)
        sip = harness.SipHarness(settings, tmp)
        await sip.phone("201", "ring")
        latencies: list[float] = []
        try:
            async with async_playwright() as p:
                browser = await p.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=[
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--no-first-run",
                    ],
                )
                page = await browser.new_page()
                await page.goto(server.url + "/login")
                await page.fill("#username", "alice")
                await page.fill("#password", "bench password")
                await page.click("button[type=submit]")
                await page.wait_for_selector("#live.ok")
                await page.evaluate(POP_OBSERVER)
                for i in range(calls):
                    await page.evaluate("window.__pops = []; document.getElementById('calls').replaceChildren()")
                    result = await sip.place_call(
                        "5550100", harness.unique_caller(), "Bench Caller", hold_s=0, hangup_after_ring_s=1.0
                    )
                    invite = next(m.at for m in result.messages if m.direction == "sent" and m.method == "INVITE")
                    pops = await page.evaluate("window.__pops")
                    await vc.idle()
                    if not pops or invite is None:
                        print(f"call {i + 1}: no card (statuses {result.statuses})")
                        continue
                    latencies.append(pops[0] / 1000.0 - invite)
                await browser.close()
        finally:
            await sip.close()
            await vc.stop()
            await server.stop()
            await store.stop()
    if latencies:
        ms = sorted(x * 1000 for x in latencies)
        p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
        print(
            f"screen-pop, sipp INVITE -> card in Chromium, {len(ms)} calls: p50 {statistics.median(ms):.1f} ms, "
            f"p99 {p99:.1f} ms, min {ms[0]:.1f} ms (targets p50 <= 50 ms, p99 <= 250 ms)"
        )


def main() -> None:
    """Parse arguments and run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sockets", type=int, default=2000)
    p.add_argument("--fanout", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--port", type=int, default=18081)
    p.add_argument("--screen-pop", type=int, default=0, metavar="CALLS", help="measure screen-pop with real calls")
    a = p.parse_args()
    if a.screen_pop:
        asyncio.run(screen_pop(a.screen_pop))
        return
    asyncio.run(run(a.sockets, a.fanout, a.rounds, a.port))
    _ = json  # figures are printed, not saved


if __name__ == "__main__":
    main()
