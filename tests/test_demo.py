"""``make demo`` in-process: the printed conversation and everything it writes to disk."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from sagelab.audio import load_audio
from sagelab.client import Timeline
from sagelab.demo import run_demo
from sagelab.server.store import ConversationStore

REPO = Path(__file__).resolve().parents[1]


async def test_demo_talks_calls_a_tool_is_interrupted_and_records_it_all(tmp_path: Path) -> None:
    console = Console(record=True, width=120)
    run_dir = await run_demo(console, config=None, out_dir=tmp_path, data=REPO / "data")
    printed = console.export_text()

    assert "get_weather(city='Paris')" in printed
    assert "The weather in Paris is sunny and 21 degrees." in printed
    assert "after the user started speaking" in printed
    assert str(run_dir) in printed.replace("\n", "")

    assert run_dir.parent == tmp_path
    for name in ("timeline.jsonl", "user.wav", "agent.wav", "conversations.sqlite3"):
        assert (run_dir / name).is_file(), name
    timeline = Timeline.load(run_dir)
    sent = sum(e.data["samples"] for e in timeline.of_type("user_audio_chunk"))
    assert sent > 5 * 16_000  # four real recordings plus their trailing silence
    assert load_audio(run_dir / "user.wav").size == sent
    assert load_audio(run_dir / "agent.wav").size > 0
    [metadata] = timeline.of_type("conversation_initiation_metadata")
    conversation_id = metadata.data["conversation_id"]

    with ConversationStore(run_dir / "conversations.sqlite3") as store:
        [summary] = store.list_conversations()
        stored = store.get_conversation(conversation_id)
    assert summary["id"] == conversation_id
    assert stored is not None
    assert stored["agent_id"] == "scripted"
    assert stored["ended_at"] is not None and stored["close_code"] == 1000
    [tool] = stored["tool_calls"]
    assert (tool["name"], tool["parameters"]) == ("get_weather", {"city": "Paris"})
    assert (tool["result"], tool["is_error"]) == ("sunny and 21 degrees", False)
    agent_turns = [t for t in stored["turns"] if t["role"] == "agent"]
    user_turns = [t for t in stored["turns"] if t["role"] == "user"]
    assert agent_turns[0]["text"].startswith("Hello!")
    assert len(user_turns) == 4  # three turns and the barge-in
    [cut] = [t for t in agent_turns if t["interrupted"]]
    assert cut["text"].startswith("Here is a longer answer")
    assert cut["corrected_text"] and cut["text"].startswith(cut["corrected_text"])
