"""A minimal gateway process for the crash tests: store, service and the SMS channel only.

``python sms_daemon.py --db DB --device DEV [--enqueue N --to NUMBER]``; prints ``ready``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from gateway.channels.sms.channel import SmsChannel
from gateway.channels.sms.config import SmsConfig
from gateway.domain.bus import Bus
from gateway.domain.models import Channel, EventKind, IdentityKind, Inbound
from gateway.domain.service import ConversationService, ServiceSettings
from gateway.store.db import Store


async def run(args: argparse.Namespace) -> None:
    store = Store(Path(args.db))
    await store.start()
    bus = Bus()
    service = ConversationService(store, bus, ServiceSettings(default_region="US"))
    cfg = SmsConfig(
        enabled=True,
        device=args.device,
        profile="huawei-e3372",
        poll_interval=0.5,
        probe_interval=2.0,
        command_timeout=3.0,
        multipart_timeout=30.0,
        retry_base=0.2,
        retry_cap=0.5,
    )
    channel = SmsChannel(cfg, store, service, bus, region="US")
    if args.enqueue:
        seed = await service.ingest(
            Inbound(
                channel=Channel.SMS,
                kind=EventKind.MESSAGE_IN,
                identity_kind=IdentityKind.PHONE,
                identity_value=args.to,
                external_id="crash-test-seed",
                body="seed",
            )
        )
        for i in range(args.enqueue):
            await service.enqueue_outbound(
                seed.conversation_id, Channel.SMS, args.to, f"outbound {i:03d}", automated=False
            )
    await channel.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--enqueue", type=int, default=0)
    ap.add_argument("--to", default="+15551234567")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
