"""Scheduled online backups inside the daemon, with retention.

Theory of operation: one owned task. It looks at the newest ``gateway-*.db`` in the backup directory; when that is
older than ``interval`` (or there is none) it makes a consistent copy through the store's read connection and
SQLite's backup API while the daemon keeps writing, checks the copy (``PRAGMA quick_check``), keeps it 0600, then
deletes the oldest scheduled copies beyond ``keep``. Copies made before a schema migration and by hand
(``gateway db backup``) live in the same directory; only the scheduled ones (``gateway-auto-*.db``) are pruned.
A failure is logged once, shown as the backup part's health, and retried after a tenth of the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from gateway.errors import StoreError
from gateway.store.db import Store
from gateway.supervise import cancel_and_wait
from gateway.values import Health, degraded, down, ok

log = logging.getLogger(__name__)
PREFIX = "gateway-auto-"


def check_copy(path: Path) -> str:
    """``quick_check`` of a backup file, read-only ("ok" when intact)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA quick_check").fetchone()[0])
    finally:
        conn.close()


class BackupScheduler:
    """Makes a backup every ``interval`` seconds and keeps the newest ``keep`` scheduled ones."""

    def __init__(
        self,
        store: Store,
        directory: Path,
        *,
        interval: float,
        keep: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.directory = directory
        self.interval = interval
        self.keep = max(1, keep)
        self.clock = clock
        self.last_ok: float | None = None
        self.last_path: Path | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the schedule (the first backup is due at once when none is recent enough)."""
        self._task = asyncio.create_task(self._run(), name="store-backups")

    async def stop(self) -> None:
        """Stop the schedule; a backup in progress is abandoned (its partial file removed)."""
        if self._task is not None:
            await cancel_and_wait(self._task, owner="backup")
            self._task = None

    def newest(self) -> Path | None:
        """The newest backup of any kind in the directory."""
        try:
            files = [p for p in self.directory.glob("gateway-*.db") if p.is_file()]
        except OSError:
            return None
        return max(files, key=lambda p: p.stat().st_mtime, default=None)

    def due_in(self) -> float:
        """Seconds until the next backup is due (0: now)."""
        newest = self.newest()
        if newest is None:
            return 0.0
        return max(0.0, newest.stat().st_mtime + self.interval - self.clock())

    async def backup_now(self) -> Path:
        """Make one scheduled backup, check it, prune old ones; returns its path."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self.clock()))
        target = self.directory / f"{PREFIX}{stamp}.db"
        n = 1
        while target.exists():
            target = self.directory / f"{PREFIX}{stamp}-{n}.db"
            n += 1
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            await self.store.backup(target)
            os.chmod(target, 0o600)
            result = await asyncio.to_thread(check_copy, target)
        except BaseException:
            with contextlib.suppress(OSError):
                target.unlink()
            raise
        if result != "ok":
            with contextlib.suppress(OSError):
                target.unlink()
            raise StoreError(f"the copy failed its integrity check ({result})")
        self.prune()
        return target

    def prune(self) -> list[Path]:
        """Delete the oldest scheduled backups beyond ``keep``; returns what was deleted."""
        scheduled = sorted(self.directory.glob(f"{PREFIX}*.db"), key=lambda p: p.stat().st_mtime)
        doomed = scheduled[: max(0, len(scheduled) - self.keep)]
        for path in doomed:
            with contextlib.suppress(OSError):
                path.unlink()
                log.info("backup %s deleted (keeping the newest %d)", path.name, self.keep)
        return doomed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.due_in())
            try:
                path = await self.backup_now()
            except asyncio.CancelledError:
                raise
            except (StoreError, OSError, sqlite3.Error) as err:
                if self.last_error is None:
                    log.error("scheduled backup failed: %s", err)  # noqa: TRY400 - the message is the point
                self.last_error, self.last_error_at = str(err), self.clock()
                await asyncio.sleep(max(60.0, self.interval / 10))
                continue
            self.last_ok, self.last_path = self.clock(), path
            if self.last_error is not None:
                log.info("scheduled backups work again")
            self.last_error = None
            log.info("backup written: %s", path)

    def health(self) -> Health:
        """The backups' verdict: the newest copy's age, or the last failure with the fix."""
        title = "Backups"
        newest = self.newest()
        details: dict[str, str | int | float | bool | None] = {
            "directory": str(self.directory),
            "every_hours": round(self.interval / 3600, 2),
            "keep": self.keep,
            "newest": newest.name if newest else None,
        }
        if self.last_error is not None:
            return down(
                "backup",
                title,
                f"the last scheduled backup failed: {self.last_error}",
                f"free disk space on the disk holding {self.directory} and check it is writable; the gateway "
                "retries by itself",
                since=self.last_error_at,
                details=details,
            )
        if newest is None:
            return ok("backup", title, "the first backup is being made", details=details)
        age = self.clock() - newest.stat().st_mtime
        details["age_seconds"] = round(age)
        if age > 2 * self.interval + 3600:
            return degraded(
                "backup",
                title,
                f"the newest backup is {age / 3600:.0f} h old ({newest.name})",
                "look at the gateway's log for backup errors",
                details=details,
            )
        return ok("backup", title, f"newest backup {age / 3600:.1f} h old ({newest.name})", details=details)
