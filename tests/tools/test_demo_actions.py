"""The demo actions end to end over a real SQLite file, through the registry."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagelab.tools import ToolRegistry
from sagelab.tools.demo import DemoDatabase, demo_registry, demo_registry_at

FIXED_NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
INJECTION = "x'; DROP TABLE records; --"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[DemoDatabase]:
    with DemoDatabase(tmp_path / "demo.sqlite3", clock=lambda: FIXED_NOW) as database:
        yield database


@pytest.fixture
def registry(db: DemoDatabase) -> Iterator[ToolRegistry]:
    with demo_registry(db) as reg:
        yield reg


def test_the_seed_has_twenty_accounts(db: DemoDatabase) -> None:
    assert db.count() == 20
    assert db.id_range() == (1, 20)


async def test_the_agents_file_factory_creates_the_database(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "demo.sqlite3"  # the folder does not exist yet
    with demo_registry_at(path) as registry:
        outcome = await registry.execute("get_record", {"record_id": 1})
    assert outcome.value["name"] == "Anna Berg"
    assert path.exists()


def test_reopening_keeps_changes(tmp_path: Path) -> None:
    path = tmp_path / "demo.sqlite3"
    with DemoDatabase(path) as first:
        first.update(1, "city", "Bergen")
    with DemoDatabase(path) as second:
        assert second.count() == 20
        record = second.get(1)
        assert record is not None and record["city"] == "Bergen"


async def test_search_by_city_with_a_spoken_summary(registry: ToolRegistry) -> None:
    outcome = await registry.execute("search_records", {"query": "customers in Berlin"})
    assert not outcome.is_error
    assert outcome.value["count"] == 2
    assert [r["name"] for r in outcome.value["records"]] == ["Lena Vogel", "Yara Nassar"]
    assert outcome.value["summary"] == (
        "I found 2 accounts: Lena Vogel in Berlin and Yara Nassar in Berlin."
    )


async def test_search_ranks_by_matching_words_and_limits(registry: ToolRegistry) -> None:
    outcome = await registry.execute("search_records", {"query": "demo Berlin", "limit": "1"})
    # Yara Nassar is in Berlin *and* wants a demo, so she outranks the others.
    assert [r["name"] for r in outcome.value["records"]] == ["Yara Nassar"]
    assert outcome.value["total"] == 3  # Anna Berg (demo) and Lena Vogel (Berlin) also match
    assert outcome.value["summary"] == "I found 3 accounts; the first is Yara Nassar in Berlin."


async def test_search_with_nothing_found(registry: ToolRegistry) -> None:
    outcome = await registry.execute("search_records", {"query": "Atlantis"})
    assert outcome.value == {
        "count": 0,
        "total": 0,
        "records": [],
        "summary": "I found no accounts matching Atlantis.",
    }


async def test_like_wildcards_are_plain_text(registry: ToolRegistry) -> None:
    assert (await registry.execute("search_records", {"query": "Oslo"})).value["count"] == 2
    # Unescaped, "_" would match the "s" of Oslo.
    assert (await registry.execute("search_records", {"query": "O_lo"})).value["count"] == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"query": "   "}, "query is empty"),
        ({"query": "Oslo", "limit": 50}, "limit must be between 1 and 20"),
        ({"query": "Oslo", "limit": "many"}, "limit must be a whole number"),
        ({}, "query is required"),
    ],
)
async def test_search_refusals(
    registry: ToolRegistry, params: dict[str, Any], message: str
) -> None:
    outcome = await registry.execute("search_records", params)
    assert outcome.is_error and message in outcome.value


async def test_get_record_reads_it_out(registry: ToolRegistry) -> None:
    outcome = await registry.execute("get_record", {"record_id": "3"})
    assert outcome.value["name"] == "Mia Sato"
    assert outcome.value["summary"] == (
        "Mia Sato in Osaka is an active account owned by Priya, last updated on April 28, 2025. "
        "Notes: Renewal due in September."
    )


async def test_get_unknown_record_says_which_ids_exist(registry: ToolRegistry) -> None:
    outcome = await registry.execute("get_record", {"record_id": 99})
    assert outcome.is_error and outcome.error_kind == "handler_error"
    assert (
        outcome.value == "get_record failed: there is no account with id 99; ids run from 1 to 20"
    )


async def test_update_record_changes_one_field(registry: ToolRegistry, db: DemoDatabase) -> None:
    outcome = await registry.execute(
        "update_record", {"record_id": 2, "field": "Status", "value": " Active"}
    )
    assert outcome.value == {
        "record_id": 2,
        "name": "Leo Marin",
        "field": "status",
        "old_value": "trial",
        "new_value": "active",
        "updated_at": "2025-06-01T12:00:00+00:00",
        "summary": "Leo Marin's status changed from trial to active.",
    }
    record = db.get(2)
    assert record is not None
    assert (record["status"], record["updated_at"]) == ("active", "2025-06-01T12:00:00+00:00")
    again = await registry.execute(
        "update_record", {"record_id": 2, "field": "status", "value": "active"}
    )
    assert again.value["summary"] == "Leo Marin's status was already active; nothing changed."


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"record_id": 2, "field": "name", "value": "Bob"}, 'field must be one of "status"'),
        ({"record_id": 2, "field": "status", "value": "gone"}, "status must be one of trial"),
        ({"record_id": 2, "field": "owner", "value": " "}, "the new owner must not be empty"),
        ({"record_id": 2, "field": "notes", "value": "x" * 301}, "keep it under 300"),
        ({"record_id": 42, "field": "city", "value": "Rome"}, "ids run from 1 to 20"),
    ],
)
async def test_update_refusals_leave_the_record_alone(
    registry: ToolRegistry, db: DemoDatabase, params: dict[str, Any], message: str
) -> None:
    before = db.get(2)
    outcome = await registry.execute("update_record", params)
    assert outcome.is_error and message in outcome.value
    assert db.get(2) == before


async def test_injection_looking_input_is_plain_text(
    registry: ToolRegistry, db: DemoDatabase
) -> None:
    search = await registry.execute("search_records", {"query": INJECTION})
    assert not search.is_error and search.value["count"] == 0
    update = await registry.execute(
        "update_record", {"record_id": 5, "field": "notes", "value": INJECTION}
    )
    assert update.value["new_value"] == INJECTION
    got = await registry.execute("get_record", {"record_id": "5 OR 1=1"})
    assert got.error_kind == "invalid_parameters"
    # The table and every row are still there, and the text was stored verbatim.
    conn = sqlite3.connect(db.path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone() == (20,)
        assert conn.execute("SELECT notes FROM records WHERE id = 5").fetchone() == (INJECTION,)
    finally:
        conn.close()
    found = await registry.execute("search_records", {"query": "DROP TABLE"})
    assert [r["id"] for r in found.value["records"]] == [5]


async def test_all_accounts_lists_the_most_recent(registry: ToolRegistry) -> None:
    outcome = await registry.execute(
        "search_records", {"query": "show me all accounts", "limit": 3}
    )
    assert [r["name"] for r in outcome.value["records"]] == [
        "Yara Nassar",
        "Mateo Cruz",
        "Ben Carter",
    ]
    assert outcome.value["total"] == 20
