"""CPU priority of the transcription worker processes (both the voicemail and the live workers).

Theory of operation: recognising speech is the heaviest work on the box, and it must never delay a ringing phone.
A worker lowers its own priority right after it starts: ``nice`` makes it yield CPU time in proportion, and on
Linux the ``SCHED_IDLE`` class goes further: an idle-class task runs only when no ordinary task wants the CPU, and
a waking ordinary task (the daemon's event loop answering a FastAGI lookup, Asterisk relaying audio) preempts it at
once instead of waiting for the end of the worker's time slice. Without it, two busy workers on a 2-core box held
the daemon's FastAGI answers up by tens of milliseconds at the 99th percentile (bench/live_bench.py).
"""

from __future__ import annotations

import os
import sys


def lower_priority(nice: int, idle: bool) -> list[str]:
    """Lower this process's CPU priority; returns what could not be done (one line each), never raises."""
    problems: list[str] = []
    try:
        os.nice(nice)
    except OSError as err:
        problems.append(f"cannot lower CPU priority: {err}")
    if idle and sys.platform.startswith("linux"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError) as err:
            problems.append(f"cannot enter the idle scheduling class: {err}")
    return problems


def scheduling_class() -> str:
    """This process's scheduling class by name ("idle", "other", ...), for tests and `gateway doctor`."""
    if not sys.platform.startswith("linux"):
        return "unknown"
    names = {os.SCHED_OTHER: "other", os.SCHED_BATCH: "batch", os.SCHED_IDLE: "idle"}
    return names.get(os.sched_getscheduler(0), "other")
