"""SQL of the leakage read models: a window of the timeline in narrow rows, and what the metrics need of each
conversation. Message bodies are never read here."""

from __future__ import annotations

import json
import sqlite3
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
_ROWS_SQL = (
    "SELECT conversation_id, kind, channel, occurred_at,"
    " CASE WHEN kind = 'message_out' THEN json_extract(meta, '$.automated') END,"
    " CASE WHEN kind IN ('call_ringing', 'call_ended', 'call_answered') THEN json_extract(meta, '$.direction') END,"
    " CASE WHEN kind = 'message_out' THEN json_extract(meta, '$.asks_for') END,"
    " CASE WHEN kind IN ('automated', 'message_out') THEN json_extract(meta, '$.rule') END,"
    " CASE WHEN kind = 'message_out' AND instr(body, '?') > 0 THEN lower(body) END,"
    " CASE WHEN kind = 'automated' THEN json_extract(meta, '$.decision') END,"
    " CASE WHEN kind = 'automated' THEN json_extract(meta, '$.reason') END"
    f" FROM events WHERE occurred_at >= ? AND occurred_at < ? AND kind IN ({','.join('?' * len(_KINDS))})"
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


def timeline_rows(conn: sqlite3.Connection, start: float, end: float) -> dict[int, list[Row]]:
    """Rows of ``[start, end)`` grouped by the conversation they live in now, oldest first."""
    grouped: dict[int, list[Row]] = {}
    cur = conn.execute(_ROWS_SQL, (start, end, *_KINDS))
    while batch := cur.fetchmany(4096):
        for cid, kind, channel, at, auto, direction, asks, rule, question, decision, reason in batch:
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
