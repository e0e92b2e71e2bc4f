"""The SQLite store: one writer task with group commit, read connections beside it.

Theory of operation
-------------------
Every write is a plain synchronous function ``fn(conn) -> T`` handed to :meth:`Store.write`. The caller's coroutine
waits on a future. One writer task drains whatever writes are pending (up to ``max_batch``), runs them all on the
writer connection's thread inside ONE transaction and commits once (``synchronous=FULL``: the commit is durable when
it returns). Only then are the callers' futures resolved, so "acknowledged" always means "on disk". A burst of 500
concurrent writes therefore costs one fsync instead of 500.

A write may instead be handed over as an item for a *group function* (:meth:`Store.write_grouped`): consecutive
pending items of the same group function in one batch reach it together, as one list, so it can do per-batch work
once (the conversation service writes a burst of timeline entries with one multi-row statement: FTS5 flushes its
pending index data at the start of every statement that writes to it, so a statement per row costs about three times
as much SQLite work as one statement for the lot).

A write may also be *parked* (:meth:`Store.park`): it starts no group commit of its own but runs at the end of the
next one that other writes start, or when its owner lets it go (:meth:`Store.unpark`). The SMS worker parks its next
claim while idle, so the transaction that queues a message also claims it: one durable commit instead of two.

If one function in a batch raises, the whole transaction is rolled back and every function of the batch is re-run
in its own transaction, so the faulty one fails alone and the others still commit (a group function is then called
with a one-item list). If the commit itself fails (disk
full, I/O error) everything in the batch is rolled back and each caller gets the error: nothing is half-written and
the writer keeps serving later writes.

Reads run on a small pool of separate connections (WAL lets them proceed during writes) in ``query_only`` mode.
aiosqlite gives every connection its own thread; ``_run`` below is the one place that uses its (private, pinned)
``_execute`` to run a whole function on that thread in one hop instead of one hop per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from gateway import __version__
from gateway.errors import ConfigError, SchemaTooNewError, StoreError, StoreFullError
from gateway.supervise import cancel_and_wait
from gateway.values import Health, down, ok

log = logging.getLogger(__name__)

T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], Any]
ItemT = TypeVar("ItemT")
GroupFn = Callable[[sqlite3.Connection, list[Any]], list[Any]]


def _migrations() -> list[tuple[int, str, str]]:
    """All shipped migrations as (version, name, sql), in order."""
    found = []
    for entry in resources.files("gateway.store").joinpath("migrations").iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        found.append((version, name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two migration files share a number: {versions}")
    return found


def schema_version() -> int:
    """The schema version this build of the gateway writes (the highest migration number)."""
    return max(v for v, _, _ in _migrations())


def _translate(err: sqlite3.Error, path: Path) -> StoreError:
    text = str(err)
    if isinstance(err, sqlite3.OperationalError) and ("full" in text or "disk" in text):
        return StoreFullError(
            f"database {path}: {text}; the write was rolled back and nothing was stored. "
            "Free disk space (or raise the volume's quota) and the gateway continues by itself."
        )
    return StoreError(f"database {path}: {text}")


def configure_connection(conn: sqlite3.Connection, *, writer: bool) -> None:
    """Pragmas every connection gets. The writer owns durability; readers are query-only."""
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")
    if writer:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"could not switch the database to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
    else:
        conn.execute("PRAGMA query_only = ON")


def _written_by(conn: sqlite3.Connection) -> str | None:
    """The gateway version that last opened the database for writing (None when unknown)."""
    try:
        row = conn.execute("SELECT value FROM gateway_meta WHERE key = 'written_by'").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def backup_before_migrating(conn: sqlite3.Connection, backup_dir: Path, current: int, latest: int) -> Path:
    """Copy the database (SQLite backup API) before its schema changes; returns the copy's path."""
    backup_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = backup_dir / f"gateway-schema{current}-before-{latest}-{stamp}.db"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    dest = sqlite3.connect(target)
    try:
        conn.backup(dest)
    finally:
        dest.close()
    return target


def migrate(
    conn: sqlite3.Connection, path: Path, *, backup_dir: Path | None = None, gateway_version: str = __version__
) -> tuple[int, int]:
    """Bring the schema up to date. Returns (version before, version after).

    A database written by a newer gateway is refused, naming that gateway's version: running old code on it could
    corrupt what the newer code relies on. An existing database is copied to ``backup_dir`` before its schema
    changes, so an upgrade can always be undone by restoring that copy with the old gateway.
    """
    migrations = _migrations()
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    latest = max(v for v, _, _ in migrations)
    if current > latest:
        writer = _written_by(conn)
        by = f"gateway {writer}" if writer else "a newer gateway"
        raise SchemaTooNewError(
            f"database {path} has schema version {current}, written by {by}; this gateway ({gateway_version}) "
            f"only knows up to {latest}. Run {by} again, or restore a backup made by this version "
            "(gateway db restore BACKUP)."
        )
    if 0 < current < latest and backup_dir is not None:
        copy = backup_before_migrating(conn, backup_dir, current, latest)
        log.info("database %s backed up to %s before migrating schema %d to %d", path, copy, current, latest)
    # user_version is the schema version; the table remembers each file so that none is ever skipped.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)"
    )
    applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
    for version, name, sql in migrations:
        if version in applied:
            continue
        log.info("applying migration %s to %s", name, path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _split_sql(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, time.time()),
            )
            conn.execute(f"PRAGMA user_version = {max(version, current)}")
            current = max(version, current)
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            conn.execute("ROLLBACK")
            raise StoreError(f"migration {name} failed on {path}: {err}") from err
    conn.execute(
        "INSERT INTO gateway_meta(key, value, updated_at) VALUES ('written_by', ?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (gateway_version, time.time()),
    )
    return current, latest


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement handles triggers' inner semicolons)."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


def migrate_file(path: Path) -> tuple[int, int]:
    """Bring the database file at ``path`` to this build's schema. Returns (version before, version after)."""
    check_writable(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        configure_connection(conn, writer=True)
        return migrate(conn, path)
    except sqlite3.DatabaseError as err:
        raise ConfigError(
            f"store.path = {str(path)!r}: cannot migrate it: {err}. It is not a gateway database (or it is "
            "damaged): point store.path at the gateway's database, or move this file away to start a new one "
            "(`gateway db restore` brings back a backup)."
        ) from err
    finally:
        conn.close()


def inspect_database(path: Path) -> tuple[str, int]:
    """(integrity_check result, schema version) of a database file, opened read-only.

    Raises :class:`StoreError` when the file is not a readable gateway database.
    """
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            conn.execute("SELECT COUNT(*) FROM events").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise StoreError(f"{path} is not a gateway database: {err}") from err
    return integrity, version


def restore_database(source: Path, dest: Path, progress: Callable[[int, int], None] | None = None) -> None:
    """Copy the database file ``source`` over ``dest`` (the daemon must not be running), in WAL mode.

    ``progress(done_pages, total_pages)`` is called as the copy advances.
    """

    def report(_status: int, remaining: int, total: int) -> None:
        if progress is not None:
            progress(total - remaining, total)

    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        target = sqlite3.connect(dest)
        try:
            src.backup(target, pages=256, progress=report)
            target.execute("PRAGMA journal_mode = WAL")
        finally:
            src.close()
            target.close()
    except sqlite3.Error as err:
        raise _translate(err, dest) from err


@dataclass(frozen=True, slots=True)
class FileProbe:
    """What :func:`probe_database_file` found: the schema version and quick_check, or why it could not tell."""

    version: int = 0
    quick_check: str = ""
    open_error: str | None = None
    error: str | None = None


def probe_database_file(path: Path, *, probe_write: bool) -> FileProbe:
    """Open an existing database file, read its schema version and ``quick_check``; with ``probe_write`` also prove a
    write transaction works (it rewrites the same version). Never raises for a database problem."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5)
    except sqlite3.Error as err:
        return FileProbe(open_error=str(err))
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        result = str(conn.execute("PRAGMA quick_check").fetchone()[0])
        if probe_write:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
    except sqlite3.Error as err:
        return FileProbe(error=str(err))
    finally:
        conn.close()
    return FileProbe(version, result)


def check_writable(path: Path) -> None:
    """Fail fast, with the fix, when the database cannot be created or written at ``path``."""
    directory = path.parent
    if not directory.exists():
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"store.path = {str(path)!r}: cannot create the directory {directory}: {err.strerror}. "
                "Create it and give the gateway's user write access, or set store.path elsewhere."
            ) from err
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(
            f"store.path = {str(path)!r}: the directory {directory} is not writable by this user "
            f"(uid {os.getuid()}). Fix its ownership/permissions or set store.path to a writable place."
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(
            f"store.path = {str(path)!r}: the database file is not readable and writable by this user "
            f"(uid {os.getuid()}). Fix its ownership/permissions."
        )


@dataclass
class StoreStats:
    """Counters the status page shows."""

    batches: int = 0
    writes: int = 0
    failed_writes: int = 0
    largest_batch: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_write_at: float | None = None


class _Pending:
    __slots__ = ("fn", "future", "group", "item")

    def __init__(
        self, fn: WriteFn | None, future: asyncio.Future[Any], group: GroupFn | None = None, item: Any = None
    ) -> None:
        self.fn = fn
        self.future = future
        self.group = group
        self.item = item

    def run_alone(self, conn: sqlite3.Connection) -> Any:
        if self.group is not None:
            return _one_result(self.group(conn, [self.item]), 1)[0]
        assert self.fn is not None
        return self.fn(conn)


def _one_result(results: list[Any], expected: int) -> list[Any]:
    if len(results) != expected:
        raise StoreError(f"a group write returned {len(results)} result(s) for {expected} item(s)")
    return results


class Store:
    """The gateway's single SQLite database. Start it before use, stop it last."""

    def __init__(
        self, path: Path | str, *, readers: int = 2, max_batch: int = 1000, backup_dir: Path | None = None
    ) -> None:
        self.path = Path(path)
        self.backup_dir = backup_dir
        self._readers_n = max(1, readers)
        self._max_batch = max_batch
        self._writer: aiosqlite.Connection | None = None
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._reader_conns: list[aiosqlite.Connection] = []
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._rollback_hooks: list[Callable[[], None]] = []
        self._parked: list[_Pending] = []
        self.stop_timeout = 10.0
        self.stats = StoreStats()

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open connections, apply migrations and start the writer task."""
        check_writable(self.path)
        try:
            self._writer = await _connect(self.path)
            await _run(self._writer, lambda c: configure_connection(c, writer=True))
            await _run(self._writer, lambda c: migrate(c, self.path, backup_dir=self.backup_dir))
            for _ in range(self._readers_n):
                reader = await _connect(self.path)
                await _run(reader, lambda c: configure_connection(c, writer=False))
                self._reader_conns.append(reader)
                self._readers.put_nowait(reader)
        except sqlite3.Error as err:
            await self._close_connections()
            raise ConfigError(
                f"store.path = {str(self.path)!r}: cannot open the database: {err}. Check that the file is a "
                "gateway database (not another file) and that the disk is healthy."
            ) from err
        except BaseException:
            await self._close_connections()
            raise
        self._task = asyncio.create_task(self._writer_loop(), name="store-writer")

    async def stop(self) -> None:
        """Finish pending writes, then close every connection."""
        if self._task is not None:
            # Let queued and in-flight writes finish and their callers hear the outcome, then stop the writer.
            # Bounded: a writer that cannot finish (a dead disk) must not hold up the daemon's exit.
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await self._queue.join()
            except TimeoutError:
                log.error(  # noqa: TRY400 - a timeout has no useful traceback
                    "store %s: %d write(s) still pending after %.0f s at stop; their callers are told it failed",
                    self.path,
                    self._queue.qsize(),
                    self.stop_timeout,
                )
            await cancel_and_wait(self._task, owner=f"store {self.path}")
            self._task = None
            for pending in self._parked:  # never ran, so nothing of it happened
                if not pending.future.done():
                    pending.future.set_exception(StoreError("the store stopped before this write ran"))
            self._parked.clear()
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(StoreError("the store stopped before this write ran"))
        await self._close_connections()

    async def _close_connections(self) -> None:
        for reader in self._reader_conns:
            with contextlib.suppress(Exception):
                await reader.close()
        self._reader_conns.clear()
        self._readers = asyncio.Queue()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await _run(self._writer, lambda c: c.execute("PRAGMA optimize"))
            with contextlib.suppress(Exception):
                await self._writer.close()
            self._writer = None

    # -- public API ------------------------------------------------------------------------------------------------

    def health(self) -> Health:
        """The store's verdict: open, and the last write succeeded (or failed, with the fix)."""
        st = self.stats
        details: dict[str, str | int | float | bool | None] = {
            "path": str(self.path),
            "writes": st.writes,
            "failed_writes": st.failed_writes,
        }
        if self._writer is None:
            return down(
                "database", "Database", f"{self.path} is not open", "restart the gateway; see its log", details=details
            )
        if st.last_error_at is not None and (st.last_write_at is None or st.last_write_at < st.last_error_at):
            full = "full" in (st.last_error or "") or "disk" in (st.last_error or "")
            return down(
                "database",
                "Database",
                f"the last write failed: {st.last_error}",
                "free disk space; the gateway continues by itself"
                if full
                else "check the disk and the database file's permissions",
                since=st.last_error_at,
                details=details,
            )
        return ok("database", "Database", f"{self.path} open, writes succeed", details=details)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the next group-commit transaction; return its result once durably committed."""
        if self._task is None:
            raise StoreError("the store is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(fn, future))
        return await future

    async def write_grouped(self, group: Callable[[sqlite3.Connection, list[ItemT]], list[T]], item: ItemT) -> T:
        """Like :meth:`write`, for writes that are cheaper done together: ``group(conn, items)`` gets the items of
        all consecutive pending writes of the same ``group`` in the transaction, in order, and returns one result per
        item (this item's result is returned once durably committed). ``group`` must compare equal across calls
        (a bound method of one object does)."""
        if self._task is None:
            raise StoreError("the store is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(None, future, group, item))
        return await future

    def park(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` to run last in the next group commit that other writes start, instead of starting one.

        The returned future resolves like :meth:`write`'s result, once durably committed. The owner lets the write
        go at once with :meth:`unpark` (on a timeout, or when it knows a write it should follow has committed).
        """
        if self._task is None:
            raise StoreError("the store is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._parked.append(_Pending(fn, future))
        return future

    def unpark(self, future: asyncio.Future[Any], *, run: bool = True) -> bool:
        """Let a parked write go now (``run``) or drop it unrun (its future is cancelled). False when it had
        already gone into a group commit (then it runs, or ran, as any write)."""
        for i, pending in enumerate(self._parked):
            if pending.future is future:
                del self._parked[i]
                if run:
                    self._queue.put_nowait(pending)
                else:
                    future.cancel()
                return True
        return False

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on a read-only connection (sees everything committed before it starts)."""
        if not self._reader_conns:
            raise StoreError("the store is not running")
        reader = await self._readers.get()
        try:
            return await _run(reader, fn)
        except sqlite3.Error as err:
            raise _translate(err, self.path) from err
        finally:
            self._readers.put_nowait(reader)

    async def backup(self, target: Path, progress: Callable[[int, int], None] | None = None) -> None:
        """Online, consistent copy through SQLite's backup API (never a file copy).

        ``progress(done_pages, total_pages)`` is called as the copy advances (from the reader thread).
        """
        if self._writer is None:
            raise StoreError("the store is not running")
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)

        def report(_status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress(total - remaining, total)

        def do_backup(conn: sqlite3.Connection) -> None:
            dest = sqlite3.connect(target)
            try:
                conn.backup(dest, pages=256, progress=report)
            finally:
                dest.close()

        # Read connections see a consistent snapshot; using one keeps the writer free.
        await self.read(do_backup)

    def add_rollback_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` on the writer thread whenever a transaction is rolled back.

        Caches that remember what a write function created (the service's identity cache) must forget it when
        the transaction that created it did not commit.
        """
        self._rollback_hooks.append(hook)

    def size_bytes(self) -> int:
        """Database plus WAL size on disk."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    # -- the writer ----------------------------------------------------------------------------------------------

    async def _writer_loop(self) -> None:
        assert self._writer is not None
        writer = self._writer
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            queued = len(batch)
            if self._parked:  # they ride along, last
                batch.extend(self._parked)
                self._parked.clear()
            try:
                await self._execute_batch(writer, batch)
            finally:
                for _ in range(queued):
                    self._queue.task_done()

    async def _execute_batch(self, writer: aiosqlite.Connection, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.cancelled()]
        if live:
            try:
                outcomes = await _run(writer, functools.partial(self._run_batch, batch=live))
            except asyncio.CancelledError:
                # Stop was requested mid-batch: the thread finishes the batch; tell callers it is unknown.
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(StoreError("store stopped during the write"))
                raise
            except Exception as err:  # noqa: BLE001 - any failure is reported to every caller
                outcomes = [(False, err)] * len(live)
            stats = self.stats
            stats.batches += 1
            stats.largest_batch = max(stats.largest_batch, len(live))
            done_at = time.time()
            for p, (ok, value) in zip(live, outcomes, strict=True):
                if p.future.done():
                    continue
                if ok:
                    stats.writes += 1
                    stats.last_write_at = done_at
                    p.future.set_result(value)
                else:
                    stats.failed_writes += 1
                    stats.last_error = str(value)
                    stats.last_error_at = done_at
                    p.future.set_exception(value)

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        """Runs on the writer thread. One transaction for the batch; isolate failures by re-running singly."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = self._run_all(conn, batch)
            conn.execute("COMMIT")
        except Exception as err:  # noqa: BLE001 - rolled back below, then isolated
            self._rollback(conn)
            if len(batch) == 1:
                return [(False, self._wrap(err))]
            return [self._run_one(conn, p) for p in batch]
        return results

    @staticmethod
    def _run_all(conn: sqlite3.Connection, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        """Every write of the batch in order; consecutive items of one group function go to it as one list."""
        results: list[tuple[bool, Any]] = []
        i, n = 0, len(batch)
        while i < n:
            group = batch[i].group
            if group is None:
                fn = batch[i].fn
                assert fn is not None
                results.append((True, fn(conn)))
                i += 1
                continue
            j = i + 1
            while j < n and batch[j].group == group:
                j += 1
            out = _one_result(group(conn, [p.item for p in batch[i:j]]), j - i)
            results.extend((True, r) for r in out)
            i = j
        return results

    def _run_one(self, conn: sqlite3.Connection, pending: _Pending) -> tuple[bool, Any]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = pending.run_alone(conn)
            conn.execute("COMMIT")
        except Exception as err:  # noqa: BLE001 - reported to this caller only
            self._rollback(conn)
            return False, self._wrap(err)
        else:
            return True, result

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        for hook in self._rollback_hooks:
            hook()

    def _wrap(self, err: Exception) -> Exception:
        if isinstance(err, sqlite3.Error):
            wrapped = _translate(err, self.path)
            wrapped.__cause__ = err
            if isinstance(wrapped, StoreFullError):
                log.error("store %s: disk full, write rolled back", self.path)
            return wrapped
        return err


async def _connect(path: Path) -> aiosqlite.Connection:
    """An aiosqlite connection whose worker thread never keeps the process alive.

    A store that was not stopped (a crashed test, an exception during start-up) must not hang interpreter exit;
    dying there is no worse than a crash, which SQLite's WAL makes safe.
    """
    conn = aiosqlite.connect(path, isolation_level=None)
    conn._thread.daemon = True  # noqa: SLF001 - aiosqlite is pinned; see module docstring
    return await conn


async def _run(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn(sqlite3_connection)`` on the aiosqlite connection's own thread, in one hop."""
    raw = conn._conn  # noqa: SLF001 - aiosqlite is pinned; see module docstring
    result: T = await conn._execute(fn, raw)  # type: ignore[no-untyped-call]  # noqa: SLF001
    return result
