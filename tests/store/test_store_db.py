"""The store against real SQLite files: migrations, group commit, failure isolation, full disk, backups."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from gateway.errors import ConfigError, SchemaTooNewError, StoreError, StoreFullError
from gateway.store import queries as q
from gateway.store.db import Store, schema_version


def _insert(value: str):
    def op(conn: sqlite3.Connection) -> int:
        cur = conn.execute(
            "INSERT INTO audit_log(at, actor, action, subject) VALUES (0, 'test', 'insert', ?)", (value,)
        )
        return int(cur.lastrowid or 0)

    return op


async def test_fresh_database_is_migrated_to_the_latest_schema(store: Store) -> None:
    version = await store.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
    assert version == schema_version()
    mode = await store.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
    assert mode == "wal"
    tables = await store.read(
        lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    )
    assert {"contacts", "identities", "conversations", "events", "events_fts", "outbox", "staff", "audit_log"} <= tables


async def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    for _ in range(2):
        st = Store(tmp_path / "g.db")
        await st.start()
        applied = await st.read(lambda c: c.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0])
        await st.stop()
    assert applied == len(list((Path(__file__).parents[2] / "gateway/store/migrations").glob("*.sql")))


async def test_database_from_a_newer_version_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema_version() + 7}")
    conn.close()
    st = Store(path)
    with pytest.raises(SchemaTooNewError, match="newer gateway"):
        await st.start()


async def test_concurrent_writes_are_grouped_into_few_commits(store: Store) -> None:
    ids = await asyncio.gather(*(store.write(_insert(f"v{i}")) for i in range(500)))
    assert len(set(ids)) == 500
    assert store.stats.writes >= 500
    assert store.stats.batches < 100, "500 concurrent writes should need far fewer than 100 commits"
    count = await store.read(lambda c: c.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])
    assert count == 500


async def test_a_failing_write_does_not_take_its_batch_down(store: Store) -> None:
    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO audit_log(at, actor, action) VALUES (0, 'x', 'half')")
        raise RuntimeError("boom")

    results = await asyncio.gather(
        store.write(_insert("a")), store.write(bad), store.write(_insert("b")), return_exceptions=True
    )
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[0], int)
    assert isinstance(results[2], int)
    rows = await store.read(lambda c: [r[0] for r in c.execute("SELECT action FROM audit_log ORDER BY id")])
    assert rows == ["insert", "insert"], "the failed write left nothing behind"


async def test_full_database_fails_cleanly_and_recovers(store: Store) -> None:
    # Cap the file at its current size: the next growth hits SQLITE_FULL, exactly like a full disk.
    pages = await store.write(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await store.write(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchone())
    big = "x" * 200_000
    with pytest.raises(StoreFullError, match="rolled back"):
        await store.write(
            lambda c: c.execute("INSERT INTO audit_log(at, actor, action, detail) VALUES (0,'t','big',?)", (big,))
        )
    count = await store.read(lambda c: c.execute("SELECT COUNT(*) FROM audit_log WHERE action='big'").fetchone()[0])
    assert count == 0
    await store.write(lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchone())
    assert await store.write(_insert("after")) > 0


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_real_full_disk_rolls_back_and_the_store_keeps_serving(small_tmpfs: Path) -> None:
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * 150_000)
    st = Store(small_tmpfs / "g.db")
    await st.start()
    try:
        stored = 0

        async def fill_until_full() -> None:
            nonlocal stored
            for _ in range(10_000):
                await st.write(
                    lambda c: c.execute(
                        "INSERT INTO audit_log(at, actor, action, detail) VALUES (0, 't', 'fill', ?)", ("y" * 4000,)
                    )
                )
                stored += 1

        with pytest.raises(StoreFullError):
            await fill_until_full()
        assert stored > 0
        count = await st.read(lambda c: c.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])
        assert count == stored, "every acknowledged write is there, the failed one is not"
        # The operator frees disk space; the same running store accepts writes again, nothing restarted.
        ballast.unlink()
        assert await st.write(_insert("after")) > 0
        count = await st.read(lambda c: c.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])
        assert count == stored + 1
        integrity = await st.read(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
        assert integrity == "ok"
    finally:
        await st.stop()


async def test_unwritable_database_directory_is_a_config_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], check=True)
    try:
        st = Store(ro / "g.db")
        with pytest.raises(ConfigError, match=r"store\.path"):
            await st.start()
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


async def test_path_under_a_regular_file_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create the directory"):
        await Store(blocker / "sub" / "g.db").start()


async def test_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    path.write_bytes(os.urandom(8192))
    with pytest.raises(ConfigError, match="cannot open the database"):
        await Store(path).start()


async def test_backup_is_consistent_while_writes_continue(store: Store, tmp_path: Path) -> None:
    await asyncio.gather(*(store.write(_insert(f"a{i}")) for i in range(200)))
    writer = asyncio.gather(*(store.write(_insert(f"b{i}")) for i in range(200)))
    target = tmp_path / "backup.db"
    await store.backup(target)
    await writer
    conn = sqlite3.connect(target)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n = conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
        assert 200 <= n <= 400
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()
    finally:
        conn.close()


async def test_stop_lets_in_flight_writes_finish_and_report(tmp_path: Path) -> None:
    st = Store(tmp_path / "g.db")
    await st.start()

    def slow(conn: sqlite3.Connection) -> str:
        time.sleep(0.2)  # the writer thread is busy when stop() is called
        conn.execute("INSERT INTO audit_log(at, actor, action) VALUES (0, 't', 'slow')")
        return "done"

    pending = asyncio.ensure_future(st.write(slow))
    await asyncio.sleep(0.05)
    await st.stop()
    assert await pending == "done", "a write that committed is acknowledged, not reported as lost"
    conn = sqlite3.connect(tmp_path / "g.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'slow'").fetchone()[0] == 1
    finally:
        conn.close()


async def test_stop_is_bounded_when_a_write_cannot_finish(tmp_path: Path) -> None:
    st = Store(tmp_path / "g.db")
    st.stop_timeout = 0.2
    await st.start()

    def stuck(conn: sqlite3.Connection) -> None:
        time.sleep(1.0)

    pending = asyncio.ensure_future(st.write(stuck))
    queued = asyncio.ensure_future(st.write(_insert("behind")))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await st.stop()
    assert loop.time() - t0 < 3
    for fut in (pending, queued):
        with pytest.raises(Exception, match="stopped"):
            await fut


class _Recorder:
    """A group function that inserts one audit row per item and remembers the lists it was handed."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, conn: sqlite3.Connection, items: list[str]) -> list[int]:
        self.calls.append(list(items))
        out = []
        for item in items:
            cur = conn.execute(
                "INSERT INTO audit_log(at, actor, action, subject) VALUES (0, 'g', 'grouped', ?)", (item,)
            )
            if item == self.fail_on:
                raise RuntimeError(f"bad item {item}")
            out.append(int(cur.lastrowid or 0))
        return out


async def test_grouped_writes_reach_their_group_together_in_order(store: Store) -> None:
    group = _Recorder()
    names = [f"g{i}" for i in range(300)]
    ids = await asyncio.gather(
        *(store.write_grouped(group, n) for n in names[:150]),
        store.write(_insert("plain")),
        *(store.write_grouped(group, n) for n in names[150:]),
    )
    assert max(len(c) for c in group.calls) > 1, "concurrent items were handed over together"
    assert [n for call in group.calls for n in call] == names, "every item once, in the order written"
    for call in group.calls:  # the plain write in between splits the run: no list spans it
        assert not ("g149" in call and "g150" in call)
    rows = await store.read(lambda c: dict(c.execute("SELECT id, subject FROM audit_log").fetchall()))
    grouped_ids = ids[:150] + ids[151:]
    assert [rows[i] for i in grouped_ids] == names, "each caller got the result of its own item"
    assert rows[ids[150]] == "plain"


async def test_a_failing_group_is_rerun_item_by_item(store: Store) -> None:
    group = _Recorder(fail_on="bad")
    items = ["a", "b", "bad", "c"]
    results = await asyncio.gather(*(store.write_grouped(group, n) for n in items), return_exceptions=True)
    assert isinstance(results[2], RuntimeError)
    assert all(isinstance(results[i], int) for i in (0, 1, 3))
    assert group.calls[0] == items, "first handed over as one group"
    assert group.calls[1:] == [["a"], ["b"], ["bad"], ["c"]], "then each alone, in its own transaction"
    rows = await store.read(lambda c: [r[0] for r in c.execute("SELECT subject FROM audit_log ORDER BY id")])
    assert rows == ["a", "b", "c"], "the failed item left nothing behind"


async def test_a_group_function_must_answer_every_item(store: Store) -> None:
    def short(conn: sqlite3.Connection, items: list[str]) -> list[int]:
        return [1] * (len(items) - 1)

    with pytest.raises(StoreError, match="returned 0 result"):
        await store.write_grouped(short, "x")


async def test_insert_events_gives_each_row_its_id_and_is_all_or_nothing(store: Store) -> None:
    def setup(conn: sqlite3.Connection) -> int:
        return q.create_contact(conn, "phone", "+15550001111", "+15550001111", True, None, 1.0)[1]

    conv = await store.write(setup)

    def row(ext: str) -> q.EventRow:
        return (conv, conv, "message_in", "sms", f"body of {ext}", "{}", ext, None, 2.0, 2.0)

    rows = [row(f"r{i}") for i in range(701)]  # 512 + 128 + 32 + 8 + 8 + 8 + 2 + 2 + 1: every statement size
    ids = await store.write(lambda c: q.insert_events(c, rows))
    assert len(set(ids)) == 701
    stored = await store.read(lambda c: dict(c.execute("SELECT id, external_id FROM events").fetchall()))
    assert [stored[i] for i in ids] == [r[6] for r in rows]

    again = [row(f"s{i}") for i in range(600)] + [row("r5")]  # the last one is a duplicate
    with pytest.raises(StoreError, match="UNIQUE"):
        await store.write(lambda c: q.insert_events(c, again))
    count = await store.read(lambda c: c.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    assert count == 701, "none of the failed call's rows stayed"
    waiting = await store.read(lambda c: c.execute("SELECT awaiting_since FROM conversations").fetchone()[0])
    assert waiting == 2.0
    match = "SELECT COUNT(*) FROM events_fts WHERE events_fts MATCH 'r700'"
    assert await store.read(lambda c: c.execute(match).fetchone()[0]) == 1, "the full-text index has the rows"


async def test_a_parked_write_rides_along_with_the_next_commit(store: Store) -> None:
    def count(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])

    parked = store.park(count)
    await asyncio.sleep(0.05)
    assert not parked.done(), "a parked write starts no commit of its own"
    before = store.stats.batches
    await store.write(_insert("first"))
    assert await parked == 1, "it ran last in that commit and saw the other write"
    assert store.stats.batches - before == 1

    alone = store.park(count)
    assert store.unpark(alone)
    assert await alone == 1, "let go, it runs by itself"
    assert not store.unpark(alone), "it had already gone"

    dropped = store.park(_insert("never"))
    assert store.unpark(dropped, run=False)
    assert dropped.cancelled()
    await store.write(_insert("second"))
    assert await store.read(count) == 2, "a dropped write never runs"


async def test_stop_fails_a_parked_write_unrun(tmp_path: Path) -> None:
    st = Store(tmp_path / "g.db")
    await st.start()
    parked = st.park(_insert("never"))
    await st.stop()
    with pytest.raises(StoreError, match="stopped before"):
        await parked
