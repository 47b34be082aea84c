"""Graceful shutdown of a real ``sagelab serve`` process on SIGTERM and SIGINT.

In-process tests cannot show this: the signal handlers, the exit status and the store's final
flush only exist in the real process, and what is on disk afterwards is what an operator gets.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from sagelab.bench.serverproc import ServerProcess
from sagelab.client import Session
from sagelab.server.store import ConversationStore


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_ends_sessions_with_1001_flushes_the_store_and_exits_0(
    sig: signal.Signals, tmp_path: Path, speech_dir: Path
) -> None:
    store_path = tmp_path / "store.sqlite3"
    # No log_path: ServerProcess never closes the log file it opens (a ResourceWarning).
    server = ServerProcess(store_path=str(store_path))
    await asyncio.to_thread(server.__enter__)
    try:
        async with Session.connect(server.http_url, "scripted") as s:
            await s.wait_for("agent_response", timeout=10)  # the greeting
            mark = s.mark()
            await s.send_audio(speech_dir / "cards_001.wav", trailing_silence_ms=700)
            reply = await s.wait_for("agent_response", since=mark, timeout=15)
            # Signal while the reply is still streaming: a session in full flow.
            await s.wait_for("audio", since=mark, predicate=lambda e: e.event_id == reply.event_id)
            os.kill(server.pid, sig)
            await s.wait_closed(timeout=5)
            assert s.close_code == 1001, (s.close_code, s.close_reason)
            assert s.close_reason == "server shutting down"
        assert server.proc is not None
        returncode = await asyncio.to_thread(server.proc.wait, 10)
    finally:
        server.__exit__(None, None, None)
    assert returncode == 0

    assert s.conversation_id is not None
    with ConversationStore(store_path) as store:
        stored = store.get_conversation(s.conversation_id)
        assert [c["id"] for c in store.open_conversations()] == []
    assert stored is not None
    assert stored["ended_at"] is not None
    assert stored["close_code"] == 1001
    assert stored["end_reason"] == "server shutting down"
    roles = [(t["role"], t["event_id"]) for t in stored["turns"]]
    assert roles[0][0] == "agent" and stored["turns"][0]["text"].startswith("Hello!")
    assert ("user", reply.event_id) in roles
    assert ("agent", reply.event_id) in roles
    answer = next(
        t for t in stored["turns"] if t["event_id"] == reply.event_id and t["role"] == "agent"
    )
    assert answer["text"] == reply.data["agent_response"]
