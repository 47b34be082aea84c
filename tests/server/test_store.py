"""Tests for the conversation store, against real SQLite files and a real SIGKILL."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagelab.server.store import SCHEMA_VERSION, ConversationStore, _apply_batch, _Write


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "conversations.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[ConversationStore]:
    with ConversationStore(db_path) as s:
        yield s


def test_round_trip_of_a_whole_conversation(store: ConversationStore) -> None:
    metadata = {
        "conversation_config_override": {"agent": {"first_message": "Hi, I'm Ada"}},
        "dynamic_variables": {"user_name": "Zoë"},
        "source_info": {"source": "python_sdk", "version": "2.78.0"},
    }
    store.start_conversation(
        "conv_1", "agent_x", "convai", user_id="u1", metadata=metadata, started_at=100.0
    )
    agent = store.add_turn("conv_1", "agent", "Hi, I'm Ada", event_id=1, started_at=100.1)
    user = store.add_turn("conv_1", "user", started_at=101.0)
    store.update_turn(user, text="What's the weather in Paris?", event_id=2, ended_at=102.5)
    store.start_tool_call(
        "conv_1", "tc_1", "get_weather", {"city": "Paris"}, event_id=3, started_at=102.6
    )
    store.finish_tool_call("conv_1", "tc_1", {"temp_c": 21}, ended_at=102.85)
    reply = store.add_turn("conv_1", "agent", "It is 21 degrees and", event_id=4, started_at=103)
    store.update_turn(reply, interrupted=True, corrected_text="It is 21", ended_at=104.0)
    audio = store.add_audio(
        "conv_1", "user", Path("/runs/conv_1/user-2.pcm"), "pcm_16000", 1.5, turn_id=user
    )
    store.add_feedback("conv_1", 4, "like", created_at=105.0)
    store.add_feedback("conv_1", 1, None, created_at=105.5)
    store.end_conversation("conv_1", "agent", 1000, ended_at=106.0)
    store.end_conversation("conv_1", "error", 1011, ended_at=107.0)  # the first end wins
    store.flush()

    record = store.get_conversation("conv_1")
    assert record is not None
    assert record["agent_id"] == "agent_x"
    assert record["protocol"] == "convai"
    assert record["user_id"] == "u1"
    assert record["metadata"] == metadata
    assert (record["started_at"], record["ended_at"]) == (100.0, 106.0)
    assert (record["end_reason"], record["close_code"]) == ("agent", 1000)
    assert [t["id"] for t in record["turns"]] == [agent, user, reply]
    assert record["turns"][1] == {
        "id": user,
        "event_id": 2,
        "role": "user",
        "text": "What's the weather in Paris?",
        "started_at": 101.0,
        "ended_at": 102.5,
        "interrupted": False,
        "corrected_text": None,
    }
    assert record["turns"][2]["interrupted"] is True
    assert record["turns"][2]["corrected_text"] == "It is 21"
    [tool] = record["tool_calls"]
    assert tool["tool_call_id"] == "tc_1"
    assert tool["parameters"] == {"city": "Paris"}
    assert tool["result"] == {"temp_c": 21}
    assert tool["is_error"] is False
    assert tool["duration_ms"] == pytest.approx(250.0)
    assert record["audio"] == [
        {
            "id": audio,
            "turn_id": user,
            "role": "user",
            "path": "/runs/conv_1/user-2.pcm",
            "format": "pcm_16000",
            "duration_s": 1.5,
            "created_at": record["audio"][0]["created_at"],
        }
    ]
    assert [(f["event_id"], f["score"]) for f in record["feedback"]] == [(4, "like"), (1, None)]
    assert store.get_conversation("missing") is None
    assert store.write_errors == 0


def test_tool_error_and_explicit_duration(store: ConversationStore) -> None:
    store.start_conversation("c", "a", "relay")
    store.start_tool_call("c", "t", "lookup", {})
    store.finish_tool_call("c", "t", "timed out", is_error=True, duration_ms=5000.0)
    store.flush()
    record = store.get_conversation("c")
    assert record is not None
    [tool] = record["tool_calls"]
    assert (tool["result"], tool["is_error"], tool["duration_ms"]) == ("timed out", True, 5000.0)


def test_listing_counting_and_open_conversations(store: ConversationStore) -> None:
    for i in range(5):
        store.start_conversation(f"c{i}", "a" if i % 2 else "b", "convai", started_at=float(i))
    store.end_conversation("c1", "agent", 1000)
    store.end_conversation("c4", "error", 1011)
    store.flush()
    assert [c["id"] for c in store.list_conversations()] == ["c4", "c3", "c2", "c1", "c0"]
    assert [c["id"] for c in store.list_conversations(limit=2)] == ["c4", "c3"]
    assert [c["id"] for c in store.list_conversations(agent_id="a")] == ["c3", "c1"]
    assert store.count_conversations() == 5
    assert store.count_conversations(agent_id="b") == 3
    assert [c["id"] for c in store.open_conversations()] == ["c0", "c2", "c3"]
    with pytest.raises(ValueError):
        store.list_conversations(limit=-1)


def test_invalid_arguments_are_rejected_in_the_caller(store: ConversationStore) -> None:
    with pytest.raises(ValueError, match="protocol"):
        store.start_conversation("c", "a", "grpc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="role"):
        store.add_turn("c", "system")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="score"):
        store.add_feedback("c", 1, "meh")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ConversationStore(":memory:")


def test_writes_never_wait_for_the_database(store: ConversationStore, db_path: Path) -> None:
    """While another process holds the write lock, writes queue up and flush times out."""
    store.start_conversation("c", "a", "convai")
    store.flush()
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        began = time.perf_counter()
        for i in range(2000):
            store.add_turn("c", "user", f"turn {i}")
        assert time.perf_counter() - began < 1.0
        with pytest.raises(TimeoutError):
            store.flush(timeout=0.2)
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    store.flush()
    record = store.get_conversation("c")
    assert record is not None
    assert len(record["turns"]) == 2000
    assert store.write_errors == 0


def test_flush_makes_writes_visible_to_other_connections(
    store: ConversationStore, db_path: Path
) -> None:
    store.start_conversation("c", "a", "convai")
    turns = [store.add_turn("c", "agent", str(i)) for i in range(300)]
    store.flush()
    other = sqlite3.connect(db_path)
    try:
        rows = other.execute("SELECT id FROM turns ORDER BY rowid").fetchall()
    finally:
        other.close()
    assert [r[0] for r in rows] == turns


def test_flush_and_reads_after_close(db_path: Path) -> None:
    store = ConversationStore(db_path)
    store.start_conversation("c", "a", "convai")
    store.close()
    store.close()  # idempotent
    store.flush()  # nothing can be pending any more
    with pytest.raises(RuntimeError, match="closed"):
        store.add_turn("c", "user", "late")
    with pytest.raises(RuntimeError, match="closed"):
        store.count_conversations()
    with ConversationStore(db_path) as reopened:
        assert reopened.count_conversations() == 1


def test_concurrent_writes_from_many_threads(store: ConversationStore) -> None:
    n_threads, n_turns = 24, 150
    start = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def session(k: int) -> None:
        try:
            start.wait()
            conv = f"conv_{k}"
            store.start_conversation(conv, f"agent_{k % 3}", "convai")
            for i in range(n_turns):
                turn = store.add_turn(conv, "user" if i % 2 else "agent", "", event_id=i)
                store.update_turn(turn, text=f"{k}:{i}", ended_at=time.time())
            for i in range(5):
                store.start_tool_call(conv, f"tc_{i}", "noop", {"i": i})
                store.finish_tool_call(conv, f"tc_{i}", i)
            store.add_feedback(conv, n_turns, "like")
            store.end_conversation(conv, "agent", 1000)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store.flush(timeout=30)

    assert store.write_errors == 0
    assert store.count_conversations() == n_threads
    assert store.open_conversations() == []
    for k in range(n_threads):
        record = store.get_conversation(f"conv_{k}")
        assert record is not None
        assert [t["text"] for t in record["turns"]] == [f"{k}:{i}" for i in range(n_turns)]
        assert all(t["ended_at"] is not None for t in record["turns"])
        assert [c["result"] for c in record["tool_calls"]] == list(range(5))
        assert len(record["feedback"]) == 1


def test_a_failing_write_does_not_stop_the_others(
    store: ConversationStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.start_conversation("c", "a", "convai")
    with caplog.at_level(logging.ERROR, logger="sagelab.server.store"):
        store.start_conversation("c", "a", "convai")  # duplicate primary key
        store.add_turn("no_such_conversation", "user", "orphan")  # foreign key
        kept = store.add_turn("c", "user", "kept")
        store.flush()
        assert store.write_errors == 2
        assert "start_conversation failed" in caplog.text
        assert "add_turn failed" in caplog.text
        assert "IntegrityError" in caplog.text  # the exception itself is logged

        store.add_turn("c", "agent", "still recording")  # the writer thread is alive
        store.flush()
    record = store.get_conversation("c")
    assert record is not None
    assert record["turns"][0]["id"] == kept
    assert [t["text"] for t in record["turns"]] == ["kept", "still recording"]


def test_one_failing_statement_keeps_the_rest_of_its_batch(tmp_path: Path) -> None:
    """Drives the batch function directly, so the three writes surely share one transaction."""
    with ConversationStore(tmp_path / "s.db"):
        pass  # creates the schema
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    insert = "INSERT INTO conversations (id, agent_id, protocol, started_at) VALUES (?, ?, ?, ?)"
    batch = [
        _Write("start_conversation", insert, ("c1", "a", "convai", 1.0)),
        _Write("start_conversation", insert, ("c2", "a", "carrier-pigeon", 2.0)),  # CHECK fails
        _Write("start_conversation", insert, ("c1", "a", "convai", 3.0)),  # duplicate
        _Write("start_conversation", insert, ("c3", "a", "relay", 4.0)),
    ]
    try:
        assert _apply_batch(conn, batch) == 2
        assert not conn.in_transaction
        rows = conn.execute("SELECT id, started_at FROM conversations ORDER BY id").fetchall()
    finally:
        conn.close()
    assert rows == [("c1", 1.0), ("c3", 4.0)]


def test_schema_pragmas_and_reopening_keeps_data(db_path: Path) -> None:
    with ConversationStore(db_path) as store:
        store.start_conversation("c", "a", "convai", metadata={"k": [1, 2]})
        store.add_turn("c", "user", "hello")
        assert store.schema_version == SCHEMA_VERSION
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"conversations", "turns", "tool_calls", "audio_attachments", "feedback"} <= tables
    with ConversationStore(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        record = store.get_conversation("c")
        assert record is not None
        assert record["metadata"] == {"k": [1, 2]}
        assert [t["text"] for t in record["turns"]] == ["hello"]
        store.add_turn("c", "agent", "hi again")
        store.flush()
        record = store.get_conversation("c")
        assert record is not None
        assert len(record["turns"]) == 2


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    with ConversationStore(db_path):
        pass
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        ConversationStore(db_path)


_CRASH_WRITER = textwrap.dedent(
    """
    import sys
    import time

    from sagelab.server.store import ConversationStore

    path, conversation, before = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = ConversationStore(path)
    store.start_conversation(conversation, "agent", "convai")
    for i in range(before):
        store.add_turn(conversation, "user", f"turn {i}", event_id=i)
    store.flush(timeout=30)
    print("flushed", flush=True)
    i = before
    while True:  # keep the writer busy until the parent kills us
        store.add_turn(conversation, "agent", f"turn {i}", event_id=i)
        i += 1
        if i % 200 == 0:
            time.sleep(0.001)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_sigkill_loses_nothing_that_was_flushed(db_path: Path) -> None:
    before = 2000
    for round_ in range(2):  # the second round reopens a database that was itself killed
        conversation = f"crash_{round_}"
        child = subprocess.Popen(
            [sys.executable, "-c", _CRASH_WRITER, str(db_path), conversation, str(before)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "flushed"
            time.sleep(0.3)  # let it commit (and be in the middle of) more batches
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL

        conn = sqlite3.connect(db_path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
        with ConversationStore(db_path) as store:
            record = store.get_conversation(conversation)
            assert record is not None
            written = sorted(t["event_id"] for t in record["turns"])
            # Batches commit in queue order, so what survived is a gap-free prefix that covers
            # everything flushed, and usually more.
            assert written == list(range(len(written)))
            assert len(written) >= before
            assert [c["id"] for c in store.open_conversations()] == [
                f"crash_{r}" for r in range(round_ + 1)
            ]
