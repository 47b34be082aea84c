"""The conversation store: SQLite in WAL mode, written by one background thread.

Why it is built this way:

- Conversations are recorded while they happen, so a crash (even SIGKILL) loses nothing already
  committed. WAL with ``synchronous=NORMAL`` makes a commit one append to the WAL file without an
  fsync: it survives a process crash because the data is in the OS page cache, and a power cut
  can lose at most the last transactions, never corrupt the file.
- The audio path must never wait on disk, so the write methods only put a statement on a
  ``queue.SimpleQueue`` (which never blocks) and return. One writer thread drains whatever is
  queued and commits it as one transaction: under load batches grow by themselves and 50+
  sessions share the cost of each commit; when idle, a write is durable within milliseconds.
- Because writes are asynchronous, a row the caller refers to later gets its id in Python
  before it is queued: turns and audio attachments get a ``uuid4().hex`` primary key, the
  conversation id is the server's own, and a tool call is addressed by the protocol's
  ``(conversation_id, tool_call_id)`` pair, which the client echoes back with its result.
- A failing statement is a bug, but it must cost only itself: each statement runs inside its own
  SAVEPOINT, so it is rolled back alone, logged, counted in ``write_errors``, and the rest of
  its batch still commits. The writer thread never dies from a bad write.
- Reads use a second connection; WAL lets them run while the writer commits, and each read
  sees one committed snapshot. Reads do block on disk, so from asyncio call them through
  ``asyncio.to_thread``.

Timestamps are epoch seconds (``time.time()``), taken when a write method is called, not when
the writer gets to it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypedDict

__all__ = [
    "SCHEMA_VERSION",
    "AudioRecord",
    "ConversationRecord",
    "ConversationStore",
    "ConversationSummary",
    "FeedbackRecord",
    "FeedbackScore",
    "ProtocolName",
    "Role",
    "ToolCallRecord",
    "TurnRecord",
]

log = logging.getLogger(__name__)

ProtocolName = Literal["convai", "relay"]
Role = Literal["user", "agent"]
FeedbackScore = Literal["like", "dislike"]

_PROTOCOLS: Final = frozenset({"convai", "relay"})
_ROLES: Final = frozenset({"user", "agent"})
_SCORES: Final = frozenset({"like", "dislike", None})

SCHEMA_VERSION: Final = 1
"""Stored in ``PRAGMA user_version``; migration ``n`` takes a database from ``n - 1`` to ``n``."""

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (  # 1: the initial schema
        """CREATE TABLE conversations (
            id          TEXT PRIMARY KEY,
            agent_id    TEXT NOT NULL,
            protocol    TEXT NOT NULL CHECK (protocol IN ('convai', 'relay')),
            user_id     TEXT,
            started_at  REAL NOT NULL,
            ended_at    REAL,
            end_reason  TEXT,
            close_code  INTEGER,
            metadata    TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX conversations_started ON conversations (started_at)",
        "CREATE INDEX conversations_agent ON conversations (agent_id, started_at)",
        "CREATE INDEX conversations_open ON conversations (started_at) WHERE ended_at IS NULL",
        """CREATE TABLE turns (
            id              TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            event_id        INTEGER,
            role            TEXT NOT NULL CHECK (role IN ('user', 'agent')),
            text            TEXT NOT NULL DEFAULT '',
            started_at      REAL NOT NULL,
            ended_at        REAL,
            interrupted     INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1)),
            corrected_text  TEXT
        )""",
        "CREATE INDEX turns_conversation ON turns (conversation_id, started_at)",
        """CREATE TABLE tool_calls (
            id              INTEGER PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            tool_call_id    TEXT NOT NULL,
            event_id        INTEGER,
            name            TEXT NOT NULL,
            parameters      TEXT NOT NULL,
            result          TEXT,
            is_error        INTEGER NOT NULL DEFAULT 0 CHECK (is_error IN (0, 1)),
            started_at      REAL NOT NULL,
            ended_at        REAL,
            duration_ms     REAL,
            UNIQUE (conversation_id, tool_call_id)
        )""",
        """CREATE TABLE audio_attachments (
            id              TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            turn_id         TEXT REFERENCES turns (id) ON DELETE SET NULL,
            role            TEXT NOT NULL CHECK (role IN ('user', 'agent')),
            path            TEXT NOT NULL,
            format          TEXT NOT NULL,
            duration_s      REAL,
            created_at      REAL NOT NULL
        )""",
        "CREATE INDEX audio_conversation ON audio_attachments (conversation_id, created_at)",
        "CREATE INDEX audio_turn ON audio_attachments (turn_id)",
        """CREATE TABLE feedback (
            id              INTEGER PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            event_id        INTEGER,
            score           TEXT CHECK (score IN ('like', 'dislike')),
            created_at      REAL NOT NULL
        )""",
        "CREATE INDEX feedback_conversation ON feedback (conversation_id, created_at)",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_BUSY_TIMEOUT_S: Final = 5.0
_MAX_BATCH: Final = 5000  # bounds one transaction's size (and the WAL growth between commits)
_COMMIT_ATTEMPTS: Final = 3  # a batch is retried when the whole transaction fails (e.g. locked)


class TurnRecord(TypedDict):
    id: str
    event_id: int | None
    role: Role
    text: str
    started_at: float
    ended_at: float | None
    interrupted: bool
    corrected_text: str | None


class ToolCallRecord(TypedDict):
    tool_call_id: str
    event_id: int | None
    name: str
    parameters: Any
    result: Any
    is_error: bool
    started_at: float
    ended_at: float | None
    duration_ms: float | None


class AudioRecord(TypedDict):
    id: str
    turn_id: str | None
    role: Role
    path: str
    format: str
    duration_s: float | None
    created_at: float


class FeedbackRecord(TypedDict):
    event_id: int | None
    score: FeedbackScore | None
    created_at: float


class ConversationSummary(TypedDict):
    id: str
    agent_id: str
    protocol: ProtocolName
    user_id: str | None
    started_at: float
    ended_at: float | None
    end_reason: str | None
    close_code: int | None
    metadata: dict[str, Any]


class ConversationRecord(ConversationSummary):
    turns: list[TurnRecord]
    tool_calls: list[ToolCallRecord]
    audio: list[AudioRecord]
    feedback: list[FeedbackRecord]


@dataclass(frozen=True, slots=True)
class _Write:
    op: str  # the public method that queued it, so a failure log says what was lost
    sql: str
    params: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class _Barrier:
    done: threading.Event


class _Stop:
    pass


_STOP: Final = _Stop()
_Item = _Write | _Barrier | _Stop


class ConversationStore:
    """Records conversations in one SQLite file; writes never block the caller.

    Write methods validate their arguments, serialise JSON and queue one statement; they are
    safe to call from any thread or from the event loop. ``flush`` waits until everything queued
    before it is committed; ``close`` (also run at interpreter exit) flushes and stops the writer.
    """

    def __init__(self, path: str | Path) -> None:
        if str(path) in ("", ":memory:"):
            raise ValueError("ConversationStore needs a file: reads use a second connection")
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(self._path)
        self._writer_conn = _connect(self._path)
        try:
            _configure_writer(self._writer_conn)
            _migrate(self._writer_conn)
            self._reader = _connect(self._path)
            self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            self._writer_conn.close()
            raise
        self._reader.row_factory = sqlite3.Row
        self._read_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()  # makes "closed" and "queued" one atomic step
        self._closed = False
        self._write_errors = 0
        self._thread = threading.Thread(
            target=self._run, name=f"sagelab-store:{self._path.name}", daemon=True
        )
        self._thread.start()
        # The writer is a daemon thread so a forgotten close() cannot hang interpreter exit;
        # the atexit hook still commits what was queued.
        atexit.register(self.close)

    # ----------------------------------------------------------------------------- properties

    @property
    def path(self) -> Path:
        return self._path

    @property
    def write_errors(self) -> int:
        """Statements that failed and were skipped since opening (each one is logged)."""
        return self._write_errors

    @property
    def queued(self) -> int:
        """Approximate number of writes waiting for the writer: a gauge for /metrics."""
        return self._queue.qsize()

    @property
    def schema_version(self) -> int:
        with self._snapshot() as conn:
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        return version

    # ------------------------------------------------------------------------ write methods

    def start_conversation(
        self,
        conversation_id: str,
        agent_id: str,
        protocol: ProtocolName,
        *,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        started_at: float | None = None,
    ) -> str:
        """Queue a new conversation; ``metadata`` holds overrides, dynamic variables, source."""
        _check(protocol, _PROTOCOLS, "protocol")
        self._submit(
            "start_conversation",
            "INSERT INTO conversations (id, agent_id, protocol, user_id, started_at, metadata)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                conversation_id,
                agent_id,
                protocol,
                user_id,
                _now(started_at),
                _dumps(dict(metadata or {})),
            ),
        )
        return conversation_id

    def end_conversation(
        self,
        conversation_id: str,
        reason: str,
        close_code: int | None = None,
        *,
        ended_at: float | None = None,
    ) -> None:
        """Mark the conversation ended; the first end wins, later ones change nothing."""
        self._submit(
            "end_conversation",
            "UPDATE conversations SET ended_at = ?, end_reason = ?, close_code = ?"
            " WHERE id = ? AND ended_at IS NULL",
            (_now(ended_at), reason, close_code, conversation_id),
        )

    def record_resume(
        self,
        conversation_id: str,
        *,
        disconnected_at: float,
        close_code: int | None,
        reason: str,
        resumed_at: float | None = None,
    ) -> None:
        """Append one resume to the conversation's ``metadata["resumes"]``.

        A resume is rare and belongs to the conversation, not to a turn, so it lives in the
        metadata (no schema change): when the client vanished, why, and when it came back.
        """
        entry = {
            "disconnected_at": disconnected_at,
            "resumed_at": _now(resumed_at),
            "close_code": close_code,
            "reason": reason,
        }
        self._submit(
            "record_resume",
            "UPDATE conversations SET metadata = json_set(metadata, '$.resumes',"
            " json_insert(coalesce(json_extract(metadata, '$.resumes'), json('[]')),"
            " '$[#]', json(?))) WHERE id = ?",
            (_dumps(entry), conversation_id),
        )

    def add_turn(
        self,
        conversation_id: str,
        role: Role,
        text: str = "",
        *,
        event_id: int | None = None,
        started_at: float | None = None,
        ended_at: float | None = None,
        interrupted: bool = False,
        corrected_text: str | None = None,
    ) -> str:
        """Queue a turn and return its id, usable at once with ``update_turn``/``add_audio``."""
        _check(role, _ROLES, "role")
        turn_id = uuid.uuid4().hex
        self._submit(
            "add_turn",
            "INSERT INTO turns (id, conversation_id, event_id, role, text, started_at, ended_at,"
            " interrupted, corrected_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                turn_id,
                conversation_id,
                event_id,
                role,
                text,
                _now(started_at),
                ended_at,
                int(interrupted),
                corrected_text,
            ),
        )
        return turn_id

    def update_turn(
        self,
        turn_id: str,
        *,
        text: str | None = None,
        event_id: int | None = None,
        ended_at: float | None = None,
        interrupted: bool | None = None,
        corrected_text: str | None = None,
    ) -> None:
        """Set the given fields of a turn (``None`` leaves a field as it is).

        The usual updates: the final transcript and ``ended_at`` when a turn completes, or
        ``interrupted=True`` with ``corrected_text`` (what was actually heard) on barge-in.
        """
        fields: dict[str, object] = {
            "text": text,
            "event_id": event_id,
            "ended_at": ended_at,
            "interrupted": None if interrupted is None else int(interrupted),
            "corrected_text": corrected_text,
        }
        changes = {column: value for column, value in fields.items() if value is not None}
        if not changes:
            return
        # Column names come from the fixed keys above; every value is a bound parameter.
        assignments = ", ".join(f"{column} = ?" for column in changes)
        self._submit(
            "update_turn",
            f"UPDATE turns SET {assignments} WHERE id = ?",
            (*changes.values(), turn_id),
        )

    def start_tool_call(
        self,
        conversation_id: str,
        tool_call_id: str,
        name: str,
        parameters: Mapping[str, Any],
        *,
        event_id: int | None = None,
        started_at: float | None = None,
    ) -> None:
        """Queue a tool call; it is addressed later by ``(conversation_id, tool_call_id)``."""
        self._submit(
            "start_tool_call",
            "INSERT INTO tool_calls (conversation_id, tool_call_id, event_id, name, parameters,"
            " started_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                conversation_id,
                tool_call_id,
                event_id,
                name,
                _dumps(dict(parameters)),
                _now(started_at),
            ),
        )

    def finish_tool_call(
        self,
        conversation_id: str,
        tool_call_id: str,
        result: Any,
        *,
        is_error: bool = False,
        ended_at: float | None = None,
        duration_ms: float | None = None,
    ) -> None:
        """Record a tool call's result (any JSON value).

        ``duration_ms`` defaults to ``ended_at - started_at``; pass a monotonic measurement
        when you have one, since wall-clock time can jump.
        """
        end = _now(ended_at)
        self._submit(
            "finish_tool_call",
            "UPDATE tool_calls SET result = ?, is_error = ?, ended_at = ?,"
            " duration_ms = COALESCE(?, (? - started_at) * 1000.0)"
            " WHERE conversation_id = ? AND tool_call_id = ?",
            (
                _dumps(result),
                int(is_error),
                end,
                duration_ms,
                end,
                conversation_id,
                tool_call_id,
            ),
        )

    def add_audio(
        self,
        conversation_id: str,
        role: Role,
        path: str | Path,
        format: str,
        duration_s: float | None,
        *,
        turn_id: str | None = None,
        created_at: float | None = None,
    ) -> str:
        """Record an audio file saved for the conversation (e.g. ``format='pcm_16000'``)."""
        _check(role, _ROLES, "role")
        audio_id = uuid.uuid4().hex
        self._submit(
            "add_audio",
            "INSERT INTO audio_attachments (id, conversation_id, turn_id, role, path, format,"
            " duration_s, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                audio_id,
                conversation_id,
                turn_id,
                role,
                str(path),
                format,
                duration_s,
                _now(created_at),
            ),
        )
        return audio_id

    def add_feedback(
        self,
        conversation_id: str,
        event_id: int | None,
        score: FeedbackScore | None,
        *,
        created_at: float | None = None,
    ) -> None:
        """Record a ``feedback`` message; ``score`` may be null, as the protocol allows."""
        _check(score, _SCORES, "score")
        self._submit(
            "add_feedback",
            "INSERT INTO feedback (conversation_id, event_id, score, created_at)"
            " VALUES (?, ?, ?, ?)",
            (conversation_id, event_id, score, _now(created_at)),
        )

    # -------------------------------------------------------------------------- lifecycle

    def flush(self, timeout: float = 5.0) -> None:
        """Block until every write queued before this call is committed (or counted failed).

        Raises ``TimeoutError`` if that takes longer than ``timeout`` seconds, e.g. while
        another process holds the database's write lock. Returns at once once closed, since
        ``close`` has already committed everything.
        """
        barrier = _Barrier(threading.Event())
        with self._submit_lock:
            if self._closed:
                return
            self._queue.put(barrier)
        if not barrier.done.wait(timeout):
            raise TimeoutError(f"conversation store not flushed within {timeout} s")

    def close(self, timeout: float = 30.0) -> None:
        """Commit everything queued, stop the writer and close both connections. Idempotent."""
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)  # nothing can be queued behind it
        atexit.unregister(self.close)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "store: writer still busy after %s s; %d writes pending", timeout, self.queued
            )
        else:
            self._writer_conn.close()
        with self._read_lock:
            self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------ reads

    def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        """One conversation with its turns, tool calls, audio and feedback, each in order."""
        with self._snapshot() as conn:
            row = conn.execute(
                "SELECT * FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            if row is None:
                return None
            turns = conn.execute(
                "SELECT * FROM turns WHERE conversation_id = ? ORDER BY started_at, rowid",
                (conversation_id,),
            ).fetchall()
            tools = conn.execute(
                "SELECT * FROM tool_calls WHERE conversation_id = ? ORDER BY started_at, id",
                (conversation_id,),
            ).fetchall()
            audio = conn.execute(
                "SELECT * FROM audio_attachments WHERE conversation_id = ?"
                " ORDER BY created_at, rowid",
                (conversation_id,),
            ).fetchall()
            feedback = conn.execute(
                "SELECT * FROM feedback WHERE conversation_id = ? ORDER BY created_at, id",
                (conversation_id,),
            ).fetchall()
        return {
            **_summary(row),
            "turns": [_turn(r) for r in turns],
            "tool_calls": [_tool_call(r) for r in tools],
            "audio": [_audio(r) for r in audio],
            "feedback": [_feedback(r) for r in feedback],
        }

    def list_conversations(
        self, limit: int = 100, agent_id: str | None = None
    ) -> list[ConversationSummary]:
        """The most recently started conversations first, optionally for one agent."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT * FROM conversations WHERE ? IS NULL OR agent_id = ?"
                " ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (agent_id, agent_id, limit),
            ).fetchall()
        return [_summary(r) for r in rows]

    def count_conversations(self, agent_id: str | None = None) -> int:
        with self._snapshot() as conn:
            count: int = conn.execute(
                "SELECT count(*) FROM conversations WHERE ? IS NULL OR agent_id = ?",
                (agent_id, agent_id),
            ).fetchone()[0]
        return count

    def open_conversations(self) -> list[ConversationSummary]:
        """Conversations never ended: live ones, or ones cut off by a crash when read at startup."""
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT * FROM conversations WHERE ended_at IS NULL ORDER BY started_at, rowid"
            ).fetchall()
        return [_summary(r) for r in rows]

    # --------------------------------------------------------------------------- internals

    def _submit(self, op: str, sql: str, params: tuple[object, ...]) -> None:
        with self._submit_lock:
            if self._closed:
                raise RuntimeError(f"conversation store is closed: {op} not recorded")
            self._queue.put(_Write(op, sql, params))

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction, so a record and its children come from the same commit."""
        with self._read_lock:
            if self._closed:
                raise RuntimeError("conversation store is closed")
            self._reader.execute("BEGIN")
            try:
                yield self._reader
            finally:
                self._reader.execute("COMMIT")

    def _run(self) -> None:
        """The writer thread: take what is queued, commit it as one batch, repeat."""
        stopping = False
        while not stopping:
            batch: list[_Write] = []
            barriers: list[threading.Event] = []
            item = self._queue.get()
            while True:
                if isinstance(item, _Write):
                    batch.append(item)
                elif isinstance(item, _Barrier):
                    barriers.append(item.done)
                else:
                    stopping = True
                    break
                if len(batch) >= _MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            try:
                if batch:
                    self._commit(batch)
            except Exception:  # a bug here must not stop recording for every session
                self._write_errors += len(batch)
                log.exception("store: writer failed on a batch of %d writes", len(batch))
            finally:
                for done in barriers:
                    done.set()

    def _commit(self, batch: Sequence[_Write]) -> None:
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                self._write_errors += _apply_batch(self._writer_conn, batch)
                return
            except sqlite3.Error as exc:
                log.warning(
                    "store: batch of %d writes not committed (attempt %d of %d): %s",
                    len(batch),
                    attempt,
                    _COMMIT_ATTEMPTS,
                    exc,
                )
                if attempt < _COMMIT_ATTEMPTS:
                    time.sleep(0.1 * attempt)
        self._write_errors += len(batch)
        log.error("store: dropped %d writes after %d attempts", len(batch), _COMMIT_ATTEMPTS)


ORPHAN_REASON = "server stopped before the conversation ended (crash or SIGKILL)"
ORPHAN_CLOSE_CODE = 1006  # the client saw its connection drop without a close frame


def end_orphans(store: ConversationStore) -> int:
    """Mark conversations a previous server process left open as ended; returns how many.

    Call it when a server starts on a store that it alone writes to: any conversation still
    open then belongs to a process that died, and nobody else will ever end it.
    """
    orphans = store.open_conversations()
    for summary in orphans:
        store.end_conversation(summary["id"], ORPHAN_REASON, close_code=ORPHAN_CLOSE_CODE)
    if orphans:
        store.flush()
    return len(orphans)


def _apply_batch(conn: sqlite3.Connection, writes: Sequence[_Write]) -> int:
    """Commit ``writes`` in one transaction and return how many of them failed.

    Each statement runs in its own SAVEPOINT so a failing one is undone alone and logged.
    ``BEGIN IMMEDIATE`` takes the write lock up front: if another process holds it, the whole
    batch waits (busy timeout) and is retried instead of failing statement by statement.
    Raises ``sqlite3.Error`` when the transaction itself fails; then nothing was committed.
    """
    failures = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for write in writes:
            conn.execute("SAVEPOINT stmt")
            try:
                conn.execute(write.sql, write.params)
            except Exception as exc:
                if not conn.in_transaction:  # SQLite rolled it all back (I/O error, disk full)
                    raise
                conn.execute("ROLLBACK TO stmt")
                failures += 1
                log.error("store: %s failed and was skipped: %s", write.op, exc, exc_info=exc)
            conn.execute("RELEASE stmt")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return failures


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (0600): it holds transcripts,
    tool results and dynamic variables. SQLite gives its -wal and -shm files the same mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False: the writer
    # connection is set up here and then used only by the writer thread; the reader is locked.
    return sqlite3.connect(
        path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )


def _configure_writer(conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise RuntimeError(f"SQLite refused WAL mode (got {mode!r}); is the file on a network FS?")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to ``SCHEMA_VERSION``; a no-op on an up-to-date database."""
    conn.execute("BEGIN IMMEDIATE")  # re-read the version under the lock: another process may race
    try:
        current: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {current} is newer than this sagelab supports "
                f"({SCHEMA_VERSION}); upgrade sagelab"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version - 1]:
                conn.execute(statement)
            # PRAGMA takes no bound parameters; the value is our own integer constant.
            conn.execute(f"PRAGMA user_version = {int(version)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _check(value: object, allowed: Collection[object], name: str) -> None:
    # Caught in the caller, where the bug is, rather than as a CHECK failure in the writer.
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(map(repr, allowed))}, got {value!r}")


def _now(timestamp: float | None) -> float:
    return time.time() if timestamp is None else timestamp


def _dumps(value: Any) -> str:
    # default=str: a value that is not JSON (from a tool or a client) is recorded as text
    # rather than raising in the session that reported it.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _summary(row: sqlite3.Row) -> ConversationSummary:
    return {
        "id": row["id"],
        "agent_id": row["agent_id"],
        "protocol": row["protocol"],
        "user_id": row["user_id"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "end_reason": row["end_reason"],
        "close_code": row["close_code"],
        "metadata": _loads(row["metadata"]),
    }


def _turn(row: sqlite3.Row) -> TurnRecord:
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "role": row["role"],
        "text": row["text"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "interrupted": bool(row["interrupted"]),
        "corrected_text": row["corrected_text"],
    }


def _tool_call(row: sqlite3.Row) -> ToolCallRecord:
    return {
        "tool_call_id": row["tool_call_id"],
        "event_id": row["event_id"],
        "name": row["name"],
        "parameters": _loads(row["parameters"]),
        "result": _loads(row["result"]),
        "is_error": bool(row["is_error"]),
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "duration_ms": row["duration_ms"],
    }


def _audio(row: sqlite3.Row) -> AudioRecord:
    return {
        "id": row["id"],
        "turn_id": row["turn_id"],
        "role": row["role"],
        "path": row["path"],
        "format": row["format"],
        "duration_s": row["duration_s"],
        "created_at": row["created_at"],
    }


def _feedback(row: sqlite3.Row) -> FeedbackRecord:
    return {"event_id": row["event_id"], "score": row["score"], "created_at": row["created_at"]}
