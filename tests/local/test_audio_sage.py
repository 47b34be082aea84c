"""The offline voice agent end to end: the official SDK talks to ``audio-sage`` with speech."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from elevenlabs.client import ElevenLabs
from elevenlabs.conversational_ai.conversation import Conversation

from sagelab.agents.local.stt import get_stt
from sagelab.audio import from_bytes, load_audio
from sagelab.audio.activity import speech_bounds
from sagelab.client import Session
from sagelab.config import ServerConfig, load_config
from sagelab.metrics.accuracy import normalize, score
from sagelab.server.app import BackgroundServer, SagelabServer

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


def sage_config(tmp_path: Path, **changes: object) -> ServerConfig:
    config = load_config(None, env={}, port=0, store_path=str(tmp_path / "store.sqlite3"))
    config.agents = [a for a in config.agents if a.id == "audio-sage"]
    spec = config.agents[0]
    options = dict(spec.options)
    options["server_tools"] = {**options["server_tools"], "database": str(tmp_path / "db.sqlite3")}
    options.update(changes)
    spec.options = options
    return config


def _wait(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_official_sdk_speaks_with_audio_sage(tmp_path, WavMicrophone):
    """Speech in; a correct transcript; a server tool over SQLite; speech out that says the
    agent's text."""
    mic = WavMicrophone([(8.0, load_audio(DEMO / "user" / "01_search.wav"))], total_s=20.0)
    transcripts: list[str] = []
    responses: list[str] = []
    with BackgroundServer(sage_config(tmp_path)) as server:
        conv = Conversation(
            ElevenLabs(api_key="unused", base_url=server.http_url),
            "audio-sage",
            requires_auth=False,
            audio_interface=mic,
            callback_user_transcript=transcripts.append,
            callback_agent_response=responses.append,
        )
        conv.start_session()
        try:
            _wait(lambda: len(responses) >= 2, timeout=40)
            reply_at = time.monotonic()
            time.sleep(6.0)  # let the reply's audio arrive
        finally:
            conv.end_session()
            conversation_id = conv.wait_for_session_end()
        server.store.flush()
        stored = server.store.get_conversation(conversation_id)

    assert normalize(transcripts[0]) == "search for customers in oslo"
    assert "Anna Berg" in responses[1] and "Jonas Lind" in responses[1]
    call = stored["tool_calls"][0]
    assert call["name"] == "search_records" and call["parameters"] == {"query": "oslo"}
    assert call["is_error"] is False and call["result"]["count"] == 2
    reply_audio = from_bytes(b"".join(chunk for t, chunk in mic.outputs if t > reply_at - 3))
    heard = get_stt().transcribe(reply_audio).text
    # Names read by one model and heard by another ("Anna Berg in Oslo" → "Anna Bergen-Ocelo")
    # cost whole words, so the check is on characters.
    assert score(responses[1], heard).cer <= 0.2, (responses[1], heard)


async def test_llm_failure_is_reported_and_the_session_goes_on(tmp_path):
    """An unreachable LLM (the openai brain pointed at a closed port) gives an llm_error event
    with the URL in it, and the session keeps serving."""
    config = sage_config(
        tmp_path,
        brain="openai",
        brain_options={"base_url": "http://127.0.0.1:9/v1", "model": "none", "timeout_s": 2},
    )
    async with (
        SagelabServer(config) as server,
        Session.connect(server.http_url, "audio-sage", text_only=True) as s,
    ):
        await s.wait_for("agent_response", timeout=10)
        mark = s.mark()
        await s.send_text("search for oslo")
        error = await s.wait_for("error", since=mark, timeout=15)
        assert error.data["error_type"] == "llm_error"
        assert "127.0.0.1:9" in error.data["message"]
        assert not s.closed
        await s.send_text("still there?")
        again = await s.wait_for("error", since=s.timeline.events.index(error) + 1, timeout=15)
        assert again.data["error_type"] == "llm_error"


@pytest.mark.parametrize(
    ("option", "value", "word"),
    [
        ("stt", {"model": "/nonexistent/whisper"}, "whisper"),
        ("tts", {"model": "/nope.onnx"}, "nope"),
    ],
)
async def test_a_model_that_cannot_load_refuses_the_session_clearly(tmp_path, option, value, word):
    config = sage_config(tmp_path, **{option: value})
    async with SagelabServer(config) as server:
        session = Session.connect(server.http_url, "audio-sage")
        with pytest.raises(Exception, match="could not start") as info:
            await session.__aenter__()
        assert word in str(info.value)
        health = server.registry.active
    assert health == 0


async def test_a_pause_that_ends_the_turn_loses_nothing_when_the_user_goes_on(tmp_path):
    """The user pauses just past the end-of-turn silence, then goes on talking before the
    agent has said a word: the reply to the first half is dropped, but its words are not.
    The agent answers once, to everything that was said."""
    speech = Path(__file__).resolve().parents[2] / "data" / "speech"
    halves = []
    for name in ("0880", "0890"):
        pcm = load_audio(speech / f"librivox_sense_and_sensibility_01_austen_64kb-{name}.wav")
        bounds = speech_bounds(pcm)
        assert bounds is not None
        halves.append(pcm[bounds[0] : bounds[1]])
    pause = np.zeros(16000 * 450 // 1000, dtype=np.int16)  # 400 ms ends a turn
    said = "he was not an ill disposed young man unless to be rather cold hearted and rather "
    said += "selfish is to be ill disposed"
    # Without speculation, transcription starts at the end of the turn and takes longer than
    # the pause's remaining 50 ms plus speech onset, so the agent cannot have spoken yet.
    config = sage_config(tmp_path, speculate_after_ms=None)
    async with (
        SagelabServer(config) as server,
        Session.connect(server.http_url, "audio-sage") as s,
    ):
        await s.wait_for("agent_response", timeout=30)
        await s.wait_agent_done(timeout=60)
        mark = s.mark()
        await s.send_audio(np.concatenate([halves[0], pause, halves[1]]), trailing_silence_ms=1500)
        await s.wait_for("agent_response", since=mark, timeout=30)
        await s.wait_agent_done(timeout=60)
        events = s.timeline.events[mark:]
    heard = " ".join(e.data["user_transcript"] for e in events if e.type == "user_transcript")
    assert score(said, heard).wer <= 0.25, heard
    replies = {e.event_id for e in events if e.type == "agent_response"}
    assert len(replies) == 1, [e.data for e in events if e.type == "agent_response"]
