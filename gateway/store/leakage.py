"""SQL of the leakage read models: a window of the timeline in narrow rows, and what the metrics need of each
conversation. Message bodies are never read here."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.leakage.metrics import ConversationInfo, Row

_KINDS = (
    "message_in",
    "message_out",
    "call_answered",
    "call_missed",
    "call_abandoned",
    "call_ringing",
    "call_ended",
    "voicemail",
    "handoff",
    "automated",
)

# json_extract only on the kinds that need it: most rows are messages and pay for one flag.
_COLS = (
    "SELECT conversation_id, kind, channel, occurred_at,"
    " CASE WHEN kind = 'message_out' THEN json_extract(meta, '$.automated') END,"
    " CASE WHEN kind IN ('call_ringing', 'call_ended', 'call_answered') THEN json_extract(meta, '$.direction') END,"
    " CASE WHEN kind = 'message_out' THEN json_extract(meta, '$.asks_for') END,"
    " CASE WHEN kind = 'message_out' AND instr(body, '?') > 0 THEN lower(body) END,"
    " CASE WHEN kind IN ('automated', 'message_out') THEN json_extract(meta, '$.rule') END,"
    " CASE WHEN kind = 'automated' THEN json_extract(meta, '$.decision') END,"
    " CASE WHEN kind = 'automated' THEN json_extract(meta, '$.reason') END"
    " FROM events"
)
_KIND_FILTER = f"kind IN ({','.join('?' * len(_KINDS))})"
_ROWS_SQL = f"{_COLS} WHERE occurred_at >= ? AND occurred_at < ? AND {_KIND_FILTER} ORDER BY occurred_at, id"
_ROWS_OF_SQL = (
    f"{_COLS} WHERE conversation_id IN (SELECT value FROM json_each(?)) AND occurred_at >= ? AND {_KIND_FILTER}"
    " ORDER BY occurred_at, id"
)


def _asks(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str) and raw.startswith("["):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return ()
        return tuple(str(x) for x in parsed if isinstance(x, str))
    return (str(raw),)


def _grouped(cur: sqlite3.Cursor) -> dict[int, list[Row]]:
    grouped: dict[int, list[Row]] = {}
    while batch := cur.fetchmany(4096):
        for cid, kind, channel, at, auto, direction, asks, question, rule, decision, reason in batch:
            row = Row(
                cid,
                kind,
                channel,
                at,
                auto == 1,
                direction,
                _asks(asks) if asks is not None else (),
                question,
                decision,
                rule,
                reason,
            )
            lst = grouped.get(cid)
            if lst is None:
                grouped[cid] = [row]
            else:
                lst.append(row)
    return grouped


def timeline_rows(conn: sqlite3.Connection, start: float, end: float) -> dict[int, list[Row]]:
    """Rows of ``[start, end)`` grouped by the conversation they live in now, oldest first."""
    return _grouped(conn.execute(_ROWS_SQL, (start, end, *_KINDS)))


def timeline_rows_of(conn: sqlite3.Connection, ids: Iterable[int], start: float) -> dict[int, list[Row]]:
    """Rows from ``start`` on of the conversations ``ids``, grouped, oldest first."""
    return _grouped(conn.execute(_ROWS_OF_SQL, (json.dumps(sorted(ids)), start, *_KINDS)))


@dataclass
class KeptChanges:
    """What the kept leakage read model needs to catch up (see ``LeakageService._kept``)."""

    rows: dict[int, list[Row]]
    infos: dict[int, ConversationInfo]
    due_infos: dict[int, ConversationInfo] | None
    changed: set[int]
    last_event_id: int
    merges: tuple[int, int]
    wall: float
    rebuild: bool = False
    unchanged: bool = False


def kept_changes(
    conn: sqlite3.Connection,
    *,
    load_start: float,
    start: float,
    since: tuple[int, tuple[int, int], float] | None,
    seen: dict[int, int] | None = None,
    edits: bool = True,
) -> KeptChanges:
    """Everything from ``load_start`` on (``since`` None), or only the conversations changed since the last look.

    ``since`` is (highest event id seen, merge marker, wall time of edits to look for). The marks are read before the
    rows, so a write landing in between is seen again next time rather than missed. ``seen`` remembers SQLite's
    data version per read connection: when nothing at all was committed since this connection last looked, the
    answer is ``unchanged`` after one pragma. ``edits=False`` skips looking for edited conversation fields (a scan
    of the conversations) and the next steps (``due_infos`` is then None: keep the last ones).
    """
    version = int(conn.execute("PRAGMA data_version").fetchone()[0])
    if seen is not None:
        if since is not None and seen.get(id(conn)) == version:
            return KeptChanges({}, {}, {}, set(), 0, (0, 0), 0.0, unchanged=True)
        seen[id(conn)] = version
    wall = time.time()
    top = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
    m = conn.execute("SELECT COALESCE(MAX(id), 0), COUNT(undone_at) FROM merges").fetchone()
    merges = (int(m[0]), int(m[1]))
    due_infos = conversation_infos(conn, [], start, float("inf")) if edits or since is None else None
    if since is None:
        rows = timeline_rows(conn, load_start, float("inf"))
        infos = conversation_infos(conn, list(rows), 0.0, 0.0, askers(rows))
        return KeptChanges(rows, infos, due_infos, set(rows), top, merges, wall)
    last_id, old_merges, edited_since = since
    if merges != old_merges:
        return KeptChanges({}, {}, due_infos, set(), top, merges, wall, rebuild=True)
    changed = {int(r[0]) for r in conn.execute("SELECT DISTINCT conversation_id FROM events WHERE id > ?", (last_id,))}
    if edits:
        edited = conn.execute("SELECT id FROM conversations WHERE updated_at >= ?", (edited_since,))
        changed |= {int(r[0]) for r in edited}
    if not changed:
        return KeptChanges({}, {}, due_infos, changed, top, merges, wall)
    rows = timeline_rows_of(conn, changed, load_start)
    infos = conversation_infos(conn, list(rows), 0.0, 0.0, askers(rows))
    return KeptChanges(rows, infos, due_infos, changed, top, merges, wall)


def askers(rows: dict[int, list[Row]]) -> list[int]:
    return [cid for cid, rs in rows.items() if any(r.asks_for or r.question for r in rs)]


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(r[1] == column for r in conn.execute(f"PRAGMA table_info({table})"))


def _fact_times(raw: str | None) -> dict[str, float | None]:
    """When each captured fact was captured (``{"name": {"value": .., "at": ..}}``); None when not recorded."""
    if not raw or raw == "{}":
        return {}
    try:
        facts = json.loads(raw)
    except ValueError:
        return {}
    out: dict[str, float | None] = {}
    if isinstance(facts, dict):
        for name, fact in facts.items():
            at = fact.get("at") if isinstance(fact, dict) else None
            out[str(name)] = float(at) if isinstance(at, int | float) else None
    return out


def fact_times(conn: sqlite3.Connection, ids: list[int]) -> dict[int, dict[str, float]]:
    """When each fact of each conversation in ``ids`` was first captured, across everything merged into it."""
    if not ids or not _has_table(conn, "conversation_facts"):
        return {}
    rows = conn.execute(
        "WITH RECURSIVE chain(root, id) AS (SELECT value, value FROM json_each(?)"
        " UNION SELECT chain.root, v.id FROM conversations v JOIN chain ON v.merged_into = chain.id)"
        " SELECT chain.root, f.name, MIN(f.at) FROM chain JOIN conversation_facts f ON f.conversation_id = chain.id"
        " GROUP BY chain.root, f.name",
        (json.dumps(ids),),
    ).fetchall()
    out: dict[int, dict[str, float]] = {}
    for root, name, at in rows:
        out.setdefault(int(root), {})[str(name)] = float(at)
    return out


def _has_table(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    return row is not None


def conversation_infos(
    conn: sqlite3.Connection, ids: list[int], due_start: float, due_end: float, fact_ids: list[int] | None = None
) -> dict[int, ConversationInfo]:
    """Owner, next step, status and fact times of ``ids``, plus every live conversation whose next step fell due in
    ``[due_start, due_end)`` (when the store records next-step due times). Fact times are read for ``fact_ids``
    only (the conversations with an outbound question)."""
    has_due = _has_column(conn, "conversations", "next_step_due")
    due_col = "next_step_due" if has_due else "NULL"
    cols = f"id, COALESCE(owner, ''), COALESCE(next_step, ''), {due_col}, status, facts"
    wanted = set(fact_ids or [])
    infos: dict[int, ConversationInfo] = {}

    captured = fact_times(conn, fact_ids or [])

    def add(rows: list[tuple[Any, ...]]) -> None:
        for cid, owner, step, due, status, facts in rows:
            times = _fact_times(facts) if cid in wanted else {}
            for name, at in captured.get(int(cid), {}).items():
                old = times.get(name)
                times[name] = at if old is None else min(old, at)
            infos[int(cid)] = ConversationInfo(
                owner=str(owner),
                next_step=str(step),
                next_step_due=float(due) if due is not None else None,
                status=str(status),
                fact_times=times,
            )

    add(
        conn.execute(
            f"SELECT {cols} FROM conversations WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)
        ).fetchall()
    )
    if has_due:
        add(
            conn.execute(
                f"SELECT {cols} FROM conversations WHERE next_step_due >= ? AND next_step_due < ?"
                " AND merged_into IS NULL",
                (due_start, due_end),
            ).fetchall()
        )
    return infos


def conversation_labels(conn: sqlite3.Connection, ids: list[int]) -> dict[int, str]:
    """Display name (or first phone number) of each conversation, for lists."""
    rows = conn.execute(
        "SELECT v.id, COALESCE(NULLIF(c.display_name, ''),"
        " (SELECT value FROM identities i WHERE i.contact_id = c.id ORDER BY i.id LIMIT 1), '')"
        " FROM conversations v JOIN contacts c ON c.id = v.contact_id WHERE v.id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),),
    ).fetchall()
    return {int(r[0]): str(r[1]) for r in rows}


def data_version(conn: sqlite3.Connection) -> tuple[int, int]:
    """Changes when anything was committed: the highest event id and SQLite's data version of this connection."""
    top = conn.execute("SELECT MAX(id) FROM events").fetchone()[0]
    ver = conn.execute("PRAGMA data_version").fetchone()[0]
    return int(top or 0), int(ver)


def plain_count(conn: sqlite3.Connection, start: float, end: float) -> int:
    """A plain count of the timeline rows the metrics read for ``[start, end)`` (the benchmark's yardstick)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM events WHERE occurred_at >= ? AND occurred_at < ?"
        f" AND kind IN ({','.join('?' * len(_KINDS))})",
        (start, end, *_KINDS),
    ).fetchone()
    return int(row[0])
