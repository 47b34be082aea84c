"""``make demo`` in-process: the printed conversation and everything it writes to disk.

The expectations come from what the run itself recorded (which tools the agent called, which
turn was cut off), not from the demo's script, so the test checks that the demo reports and
stores the conversation faithfully whichever agent and script it uses.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console

from sagelab.audio import load_audio
from sagelab.client import Timeline, TimelineEvent
from sagelab.demo import run_demo
from sagelab.server.store import ConversationStore

REPO = Path(__file__).resolve().parents[1]


def flat(text: str) -> str:
    """Rich wraps long lines at spaces; compare text with all whitespace collapsed."""
    return " ".join(text.split())


async def test_demo_talks_calls_tools_is_interrupted_and_records_it_all(tmp_path: Path) -> None:
    console = Console(record=True, width=120)
    run_dir = await run_demo(console, config=None, out_dir=tmp_path, data=REPO / "data")
    printed = console.export_text()

    assert run_dir.parent == tmp_path
    for name in (
        "timeline.jsonl",
        "user.wav",
        "agent.wav",
        "conversations.sqlite3",
        "timeline.png",
    ):
        assert (run_dir / name).is_file(), name
    assert str(run_dir) in printed.replace("\n", "")

    timeline = Timeline.load(run_dir)
    calls = timeline.of_type("client_tool_call", "agent_tool_request")
    called = [e.data["tool_name"] for e in calls]
    assert called, "the demo should show the agent calling a tool"
    for name in called:
        assert name in printed, f"tool call {name} not shown"
    assert re.search(r"interrupted \d+ ms after the user started", printed), printed[-2000:]
    interrupted_ids = {e.event_id for e in timeline.of_type("interruption")}
    assert interrupted_ids
    responses = [e.data["agent_response"] for e in timeline.of_type("agent_response")]
    assert flat(responses[0]) in flat(printed)  # the greeting

    sent = sum(e.data["samples"] for e in timeline.of_type("user_audio_chunk"))
    received = sum(e.data["samples"] for e in timeline.of_type("audio"))
    assert sent > 5 * 16_000 and received > 5 * 16_000
    assert load_audio(run_dir / "user.wav").size == sent
    assert load_audio(run_dir / "agent.wav").size == received

    [metadata] = timeline.of_type("conversation_initiation_metadata")
    conversation_id = metadata.data["conversation_id"]
    with ConversationStore(run_dir / "conversations.sqlite3") as store:
        [summary] = store.list_conversations()
        stored = store.get_conversation(conversation_id)
    assert summary["id"] == conversation_id
    assert stored is not None
    assert stored["ended_at"] is not None and stored["close_code"] == 1000
    assert [t["name"] for t in stored["tool_calls"]] == called
    assert [t["tool_call_id"] for t in stored["tool_calls"]] == [
        e.data["tool_call_id"] for e in calls
    ]
    assert not any(t["is_error"] for t in stored["tool_calls"]), stored["tool_calls"]
    agent_turns = [t for t in stored["turns"] if t["role"] == "agent"]
    assert agent_turns[0]["text"].startswith(responses[0])
    cut = [t for t in agent_turns if t["interrupted"]]
    assert {t["event_id"] for t in cut} == interrupted_ids
    # The barge-in cut a reply part-way: the store keeps what the user actually heard.
    assert any(t["corrected_text"] and len(t["corrected_text"]) < len(t["text"]) for t in cut)
    assert any(t["role"] == "user" and t["text"] for t in stored["turns"])


class _QuietSession:
    """Just enough of ``Session`` for ``_interruption``: a timeline and a ``wait_for`` that
    times out as the real one does when no ``interruption`` arrives."""

    def __init__(self, types: list[str]) -> None:
        self.timeline = Timeline()
        for n, kind in enumerate(types):
            self.timeline.events.append(TimelineEvent(t_ns=n, direction="in", type=kind, data={}))

    async def wait_for(self, type: str, **_kw: object) -> object:
        raise TimeoutError(f"no {type!r} event within 30 s")


async def test_a_barge_in_answered_as_a_new_turn_is_reported_not_fatal() -> None:
    from sagelab.demo import _interruption

    answered = _QuietSession(["audio", "user_transcript", "agent_response"])
    assert await _interruption(answered, 1) is None  # type: ignore[arg-type]
    silent = _QuietSession(["audio", "user_transcript"])
    with pytest.raises(TimeoutError):
        await _interruption(silent, 1)  # type: ignore[arg-type]
