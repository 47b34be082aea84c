"""The demo application's actions over a real SQLite database of customer accounts.

These stand in for the web application's "Search Data", "Get Entity Records" and "Update Record"
actions, so demos, tests and benchmarks exercise real I/O instead of canned answers. Each result
carries a ``summary``: one short sentence the agent can speak as is, which keeps replies short
and lets a test check what the user would hear.

Every query uses bound parameters; the only identifiers ever put into SQL text come from fixed
tuples in this module, so whatever the agent (or a user talking to it) sends is data, never SQL.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypedDict

from sagelab.bundled import asset
from sagelab.tools.registry import ToolRegistry

__all__ = [
    "DEMO_ACTIONS_FILE",
    "DEMO_SEED_FILE",
    "STATUSES",
    "DemoDatabase",
    "Record",
    "UpdatableField",
    "demo_registry",
    "demo_registry_at",
]

# Read-only seed and actions shipped in the package; the database itself is always a copy.
DEMO_SEED_FILE = asset("demo", "records.sql")
DEMO_ACTIONS_FILE = asset("actions", "demo.yaml")

STATUSES = ("trial", "active", "paused", "closed")
UpdatableField = Literal["status", "owner", "city", "notes"]

_TABLE = "records"
_COLUMNS = ("id", "name", "city", "status", "owner", "updated_at", "notes")
_SEARCHED = ("name", "city", "notes", "owner", "status")
_UPDATABLE: dict[str, str] = {c: c for c in ("status", "owner", "city", "notes")}
_MAX_LENGTH = {"status": 10, "owner": 40, "city": 40, "notes": 300}
_MAX_TERMS = 8
_MAX_LIMIT = 20
# Words a spoken request wraps around what it is looking for ("show me accounts in Oslo").
_FILLER = frozenset(
    """a an the in on at of for to from with and or me my us our show find search look list all
    any who whose which that is are was be please up there some named called account accounts
    customer customers client clients record records""".split()  # noqa: SIM905 (readability)
)


class Record(TypedDict):
    id: int
    name: str
    city: str
    status: str
    owner: str
    updated_at: str
    notes: str


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DemoDatabase:
    """A small SQLite database of customer accounts, created from ``seed`` on first use.

    One connection is shared by the tool threads behind a lock: the demo's queries take
    microseconds, and SQLite would serialise the writes anyway.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        seed: str | Path = DEMO_SEED_FILE,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        if not self.table_exists():
            self._conn.executescript(Path(seed).read_text(encoding="utf-8"))
            self._conn.commit()

    def table_exists(self) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (_TABLE,)
            ).fetchone()
        return row is not None

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute(f"SELECT COUNT(*) FROM {_TABLE}").fetchone()[0])

    def id_range(self) -> tuple[int, int]:
        with self._lock:
            lo, hi = self._conn.execute(f"SELECT MIN(id), MAX(id) FROM {_TABLE}").fetchone()
        return int(lo or 0), int(hi or 0)

    def search(self, query: str, limit: int = 5) -> tuple[list[Record], int]:
        """Accounts matching the most words of ``query``, best first, and how many matched.

        A query of filler words only ("all accounts") lists the most recently updated ones.
        """
        terms = _terms(query)
        columns = ", ".join(_COLUMNS)
        if not terms:
            sql = (
                f"SELECT {columns}, COUNT(*) OVER () AS total FROM {_TABLE} "
                "ORDER BY updated_at DESC LIMIT ?"
            )
            args: list[Any] = [limit]
        else:
            matches = " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in _SEARCHED)
            score = " + ".join([f"(CASE WHEN {matches} THEN 1 ELSE 0 END)"] * len(terms))
            sql = (
                f"SELECT {columns}, COUNT(*) OVER () AS total FROM "
                f"(SELECT {columns}, {score} AS score FROM {_TABLE}) "
                "WHERE score > 0 ORDER BY score DESC, name LIMIT ?"
            )
            args = [f"%{_escape_like(t)}%" for t in terms for _ in _SEARCHED] + [limit]
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        total = int(rows[0]["total"]) if rows else 0
        return [_record(r) for r in rows], total

    def get(self, record_id: int) -> Record | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE} WHERE id = ?", (record_id,)
            ).fetchone()
        return _record(row) if row else None

    def update(self, record_id: int, field: UpdatableField, value: str) -> tuple[Record, Record]:
        """Set one field and ``updated_at``; returns the record before and after.

        Raises ``KeyError`` for an unknown id and ``ValueError`` for a value that does not fit.
        """
        column = _UPDATABLE.get(field)
        if column is None:
            raise ValueError(f"field must be one of {', '.join(_UPDATABLE)}")
        value = _checked_value(field, value)
        with self._lock:
            before = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE} WHERE id = ?", (record_id,)
            ).fetchone()
            if before is None:
                raise KeyError(record_id)
            if before[column] != value:
                stamp = self._clock().isoformat(timespec="seconds")
                with self._conn:
                    self._conn.execute(
                        f"UPDATE {_TABLE} SET {column} = ?, updated_at = ? WHERE id = ?",
                        (value, stamp, record_id),
                    )
            after = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE} WHERE id = ?", (record_id,)
            ).fetchone()
        return _record(before), _record(after)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> DemoDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def demo_registry(db: DemoDatabase, **registry_options: Any) -> ToolRegistry:
    """The demo agent's three tools over ``db`` (same schemas as ``data/actions/demo.yaml``)."""
    registry = ToolRegistry(**registry_options)

    @registry.tool
    def search_records(query: str, limit: int = 5) -> dict[str, Any]:
        """Find customer accounts by name, city, owner, status or words in their notes.

        Args:
            query: Words to look for, for example a name, a city or a topic like pricing.
            limit: How many accounts to return, from 1 to 20.
        """
        if not query.strip():
            raise ValueError("query is empty; say a name, a city or a word from the notes")
        if not 1 <= limit <= _MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {_MAX_LIMIT}, for example 5")
        records, total = db.search(query, limit)
        return {
            "count": len(records),
            "total": total,
            "records": records,
            "summary": _search_summary(query, records, total),
        }

    @registry.tool
    def get_record(record_id: int) -> dict[str, Any]:
        """Read one customer account in full, by its id.

        Args:
            record_id: The account's id, as returned by search_records.
        """
        record = db.get(record_id)
        if record is None:
            raise ValueError(_unknown_id(db, record_id))
        return {**record, "summary": _record_summary(record)}

    @registry.tool
    def update_record(record_id: int, field: UpdatableField, value: str) -> dict[str, Any]:
        """Change one field of a customer account: its status, owner, city or notes.

        Args:
            record_id: The account's id, as returned by search_records.
            field: Which field to change.
            value: The new value; a status is one of trial, active, paused or closed.
        """
        try:
            before, after = db.update(record_id, field, value)
        except KeyError:
            raise ValueError(_unknown_id(db, record_id)) from None
        old, new = before[field], after[field]
        if old == new:
            summary = f"{after['name']}'s {field} was already {new}; nothing changed."
        else:
            summary = f"{after['name']}'s {field} changed from {old} to {new}."
        return {
            "record_id": record_id,
            "name": after["name"],
            "field": field,
            "old_value": old,
            "new_value": new,
            "updated_at": after["updated_at"],
            "summary": summary,
        }

    return registry


def demo_registry_at(
    database: str | Path, *, seed: str | Path = DEMO_SEED_FILE, **registry_options: Any
) -> ToolRegistry:
    """The demo tools over the database file at ``database`` (created and seeded if needed).

    This is the factory an agents file names (``server_tools: {factory:
    sagelab.tools.demo:demo_registry_at, database: ...}``); the database stays open for the
    life of the process, shared by every session.
    """
    if str(database) != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    return demo_registry(DemoDatabase(database, seed=seed), **registry_options)


def _terms(query: str) -> list[str]:
    words = re.findall(r"[\w'-]+", query.casefold())
    terms = [w for w in dict.fromkeys(words) if len(w) > 1 and w not in _FILLER]
    return terms[:_MAX_TERMS]


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _checked_value(field: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"the new {field} must not be empty")
    if field == "status":
        status = value.casefold()
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {value!r}")
        return status
    if len(value) > _MAX_LENGTH[field]:
        limit = _MAX_LENGTH[field]
        raise ValueError(f"the new {field} is too long; keep it under {limit} characters")
    return value


def _record(row: sqlite3.Row) -> Record:
    return Record(
        id=int(row["id"]),
        name=row["name"],
        city=row["city"],
        status=row["status"],
        owner=row["owner"],
        updated_at=row["updated_at"],
        notes=row["notes"],
    )


def _unknown_id(db: DemoDatabase, record_id: int) -> str:
    lo, hi = db.id_range()
    return f"there is no account with id {record_id}; ids run from {lo} to {hi}"


def _search_summary(query: str, records: list[Record], total: int) -> str:
    if not records:
        return f"I found no accounts matching {query.strip()}."
    places = _spoken_list([f"{r['name']} in {r['city']}" for r in records])
    if total > len(records):
        first = "the first is" if len(records) == 1 else f"the first {len(records)} are"
        return f"I found {total} accounts; {first} {places}."
    if total == 1:
        return f"I found one account: {places}."
    return f"I found {total} accounts: {places}."


def _record_summary(r: Record) -> str:
    article = "an" if r["status"][0] in "aeiou" else "a"
    when = dt.datetime.fromisoformat(r["updated_at"])
    text = (
        f"{r['name']} in {r['city']} is {article} {r['status']} account owned by {r['owner']}, "
        f"last updated on {when:%B} {when.day}, {when.year}."
    )
    return f"{text} Notes: {r['notes']}" if r["notes"] else text


def _spoken_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
