"""A misbehaving transcription worker speaking the real protocol: crashes or hangs on every job.

Usage: python fake_worker.py crash|hang|fatal|exit-at-start
"""

from __future__ import annotations

import os
import sys
import time

from gateway.transcribe.protocol import (
    Fatal,
    JobRequest,
    Ready,
    Started,
    WorkerMessageParser,
    encode,
)


def main() -> int:
    mode = sys.argv[1]
    out = sys.stdout.buffer
    if mode == "exit-at-start":
        print("simulated start-up failure", file=sys.stderr)
        return 7
    if mode == "fatal":
        out.write(encode(Fatal("cannot load the Vosk model at '/nowhere': simulated damage")))
        out.flush()
        return 2
    out.write(encode(Ready("fake", 16000, os.getpid())))
    out.flush()
    parser = WorkerMessageParser()
    for line in sys.stdin.buffer:
        for message in parser.feed(line):
            assert isinstance(message, JobRequest)
            out.write(encode(Started(message.job, 30.0, 30.0, False, "pcm16")))
            out.flush()
            if mode == "crash":
                print(f"simulated crash in job {message.job}", file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(3600)  # hang
    return 0


if __name__ == "__main__":
    sys.exit(main())
