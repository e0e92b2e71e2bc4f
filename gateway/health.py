"""Health checks of the box the gateway runs on, and ``gateway doctor``'s list of checks.

Theory of operation: each check is a small function returning one :class:`~gateway.values.Health` with the cause and
the fix in words. The running daemon (:meth:`gateway.app.App.health`) combines its parts' own ``health()`` with the
cheap box checks here (disk, clock, descriptors, database, backup age); ``gateway doctor`` runs the same box checks
plus active probes (AMI login, modem, FastAGI port, speech model load) and prints one line per check. The status page
and /metrics show what ``App.health`` returns, so the three surfaces say the same thing in the same words.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.domain.limits import BudgetState
from gateway.store.db import probe_database_file
from gateway.values import Health, HealthState, degraded, down, ok

#: Less free space than this and writes start failing soon.
DISK_DOWN_BYTES = 64 * 1024 * 1024
#: Less than this (or under 5 % free) is a warning.
DISK_WARN_BYTES = 1024 * 1024 * 1024
#: A newest backup older than this is a warning.
BACKUP_WARN_SECONDS = 2 * 24 * 3600
_TIME_ERROR = 5  # adjtimex(2): the kernel's clock is not synchronised


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(path: Path) -> Health:
    """Free space on the file system holding ``path`` (the data directory)."""
    where = _existing(path)
    usage = shutil.disk_usage(where)
    free_mb = usage.free // (1024 * 1024)
    details: dict[str, str | int | float | bool | None] = {
        "path": str(where),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
    }
    fix = (
        f"free space on the disk holding {where}: delete old backups, shrink the system journal "
        "(`journalctl --vacuum-size=200M`), or move gateway.data_dir to a bigger disk"
    )
    if usage.free < DISK_DOWN_BYTES:
        return down("disk", "Disk space", f"only {free_mb} MB free on the disk holding {where}", fix, details=details)
    if usage.free < DISK_WARN_BYTES or usage.free < usage.total * 0.05:
        return degraded("disk", "Disk space", f"{free_mb} MB free on the disk holding {where}", fix, details=details)
    return ok("disk", "Disk space", f"{free_mb} MB free", details=details)


def _kernel_clock_state() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    buf = ctypes.create_string_buffer(512)  # struct timex; modes = 0 (the first field) only reads
    return int(libc.adjtimex(buf))


def check_clock(state: Callable[[], int] = _kernel_clock_state) -> Health:
    """Whether the kernel says the clock is synchronised (adjtimex), which office hours and timelines rely on."""
    try:
        value = state()
    except (OSError, AttributeError) as err:
        return degraded("clock", "Clock", f"cannot ask the kernel about the clock: {err}", "install chrony")
    if value < 0 or value == _TIME_ERROR:
        return degraded(
            "clock",
            "Clock",
            "the clock is not synchronised with a time server",
            "install and start a time service (`apt install chrony` or enable systemd-timesyncd); office hours, "
            "follow-up times and the timeline rely on the right time",
        )
    return ok("clock", "Clock", "synchronised with a time server")


def check_descriptors(open_count: int | None = None) -> Health:
    """File descriptor headroom of this process (every call, chat and modem needs some)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = open_count if open_count is not None else len(os.listdir("/proc/self/fd"))
    details: dict[str, str | int | float | bool | None] = {"open": used, "limit": soft}
    fix = "raise the limit: LimitNOFILE=65536 in the systemd unit (the shipped unit has it), then restart"
    if soft != resource.RLIM_INFINITY and used >= soft * 0.95:
        return down("descriptors", "Open files", f"{used} of {soft} file descriptors in use", fix, details=details)
    if soft != resource.RLIM_INFINITY and (used >= soft * 0.8 or soft < 1024):
        return degraded("descriptors", "Open files", f"{used} of {soft} file descriptors in use", fix, details=details)
    return ok("descriptors", "Open files", f"{used} of {soft} file descriptors in use", details=details)


def check_database(path: Path, latest_schema: int, *, probe_write: bool = True) -> Health:
    """Writable, migrated and intact (``probe_write`` rewrites the schema version in one short transaction)."""
    title = "Database"
    directory = _existing(path.parent)
    if not path.exists():
        if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
            return down(
                "database",
                title,
                f"{path} does not exist and {directory} is not writable",
                "create the directory and give the gateway's user write access, or set store.path elsewhere",
            )
        return ok("database", title, f"{path} will be created at first start")
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent, os.W_OK):
        return down(
            "database",
            title,
            f"{path} is read-only (file, directory or file system)",
            "give the gateway's user write access to the database and its directory, or remount the file system "
            "read-write (`mount -o remount,rw`)",
        )
    probe = probe_database_file(path, probe_write=probe_write)
    if probe.open_error is not None:
        return down(
            "database", title, f"cannot open {path}: {probe.open_error}", "check the file's permissions and the disk"
        )
    if probe.error is not None:
        text = probe.error
        fix = "free disk space" if "full" in text else "check the disk and the file's permissions"
        return down("database", title, f"{path} cannot be written: {text}", fix)
    version, result = probe.version, probe.quick_check
    details: dict[str, str | int | float | bool | None] = {"path": str(path), "schema": version}
    if result != "ok":
        return down(
            "database",
            title,
            f"{path} is damaged ({result})",
            "stop the gateway and restore the newest backup: `gateway db restore BACKUP`",
            details=details,
        )
    if version > latest_schema:
        return down(
            "database",
            title,
            f"{path} has schema {version}, written by a newer gateway (this one knows up to {latest_schema})",
            "run the newer gateway again, or restore a backup made by this version",
            details=details,
        )
    if version < latest_schema:
        return ok("database", title, f"schema {version}; migrated to {latest_schema} at next start", details=details)
    return ok("database", title, f"writable, schema {version}, integrity ok", details=details)


def newest_backup(directory: Path) -> Path | None:
    """The most recent ``*.db`` file in the backup directory."""
    try:
        files = [p for p in directory.glob("*.db") if p.is_file()]
    except OSError:
        return None
    return max(files, key=lambda p: p.stat().st_mtime, default=None)


def check_backup(directory: Path, now: float | None = None) -> Health:
    """Age of the newest backup."""
    current = time.time() if now is None else now
    newest = newest_backup(directory)
    title = "Backups"
    if newest is None:
        return degraded(
            "backup",
            title,
            f"no backup in {directory} yet",
            "run `gateway db backup` now and schedule it daily (a cron job or systemd timer)",
        )
    age = current - newest.stat().st_mtime
    hours = age / 3600
    details: dict[str, str | int | float | bool | None] = {"newest": str(newest), "age_seconds": round(age)}
    if age > BACKUP_WARN_SECONDS:
        return degraded(
            "backup",
            title,
            f"the newest backup is {hours / 24:.0f} days old ({newest.name})",
            "run `gateway db backup` and check the schedule that should make one daily",
            details=details,
        )
    return ok("backup", title, f"newest backup {hours:.1f} h old ({newest.name})", details=details)


def check_automated_budget(state: BudgetState) -> Health:
    """The automated-SMS budget: amber when an hour's or a day's allowance is spent, with what that means."""
    title = "Automated SMS budget"
    details: dict[str, str | int | float | bool | None] = {
        "used_hour": state.used_hour,
        "per_hour": state.per_hour,
        "used_day": state.used_day,
        "per_day": state.per_day,
    }
    window = state.spent_window
    if window is not None:
        spent = (
            f"{state.per_day} automated texts in 24 hours (sms.automated_per_day)"
            if window == "day"
            else f"{state.per_hour} automated texts this hour (sms.automated_per_hour)"
        )
        return degraded(
            "automated_sms",
            title,
            f"Spent: {spent}; further automated texts are not queued",
            "nothing is broken: automated texts resume when the window passes; staff replies still go out. Raise "
            "sms.automated_per_hour / sms.automated_per_day if the office wants more",
            details=details,
        )
    return ok("automated_sms", title, f"{state.left} automated texts may still go out now", details=details)


# -- history for the status page's sparklines -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of a sparkline."""

    at: float
    value: float | None


class History:
    """The last 24 hours of a few gauges, one sample per ``step`` seconds, in memory."""

    def __init__(self, names: Iterable[str], *, step: float = 300.0, span: float = 24 * 3600) -> None:
        self.step = step
        self.span = span
        size = max(1, int(span // step))
        self.series: dict[str, deque[Sample]] = {name: deque(maxlen=size) for name in names}

    def add(self, name: str, value: float | None, at: float | None = None) -> None:
        """Record one sample."""
        self.series[name].append(Sample(time.time() if at is None else at, value))

    def as_dict(self) -> dict[str, list[list[float | None]]]:
        """``{name: [[at, value], ...]}`` oldest first."""
        return {name: [[s.at, s.value] for s in samples] for name, samples in self.series.items()}

    def load(self, saved: object, now: float | None = None) -> int:
        """Take back what :meth:`as_dict` gave (e.g. before a restart), dropping points older than the span.

        Returns how many points were loaded; anything malformed is skipped, never fatal.
        """
        if not isinstance(saved, dict):
            return 0
        oldest = (time.time() if now is None else now) - self.span
        loaded = 0
        for name, samples in self.series.items():
            points = saved.get(name)
            if not isinstance(points, list):
                continue
            for point in points:
                if not (isinstance(point, list) and len(point) == 2 and isinstance(point[0], int | float)):
                    continue
                value = point[1]
                if value is not None and not isinstance(value, int | float):
                    continue
                if point[0] >= oldest:
                    samples.append(Sample(float(point[0]), None if value is None else float(value)))
                    loaded += 1
        return loaded


def exit_code(healths: Iterable[Health]) -> int:
    """``gateway doctor``'s exit status: 1 when any check is down, else 0 (degraded is a warning)."""
    return 1 if any(h.state is HealthState.DOWN for h in healths) else 0


def doctor_line(h: Health) -> str:
    """One line per check: verdict, what, cause, and the fix when there is one."""
    label = {
        HealthState.OK: "ok",
        HealthState.DEGRADED: "WARN",
        HealthState.DOWN: "DOWN",
        HealthState.OFF: "off",
    }[h.state]
    fix = f" -> fix: {h.fix}" if h.fix and h.state is not HealthState.OK else ""
    return f"[{label:>4}] {h.title}: {h.cause}{fix}"
