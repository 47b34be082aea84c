"""The official ``elevenlabs`` SDK, unchanged, holds conversations with the bundled server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from elevenlabs.client import AsyncElevenLabs, ElevenLabs
from elevenlabs.conversational_ai.conversation import (
    AsyncConversation,
    ClientTools,
    Conversation,
    ConversationInitiationData,
)

from sagelab.audio import load_audio, pcm_bytes
from sagelab.config import load_config
from sagelab.server.app import BackgroundServer

ASSETS = Path(__file__).resolve().parents[2] / "src" / "sagelab" / "assets" / "audio"


def _wait(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_sync_sdk_conversation_with_tools_callbacks_and_latency(
    bg_server, speech_dir, WavMicrophone
):
    """Spoken turns in, transcripts/responses/latency out, a client tool answered."""
    mic = WavMicrophone(
        [
            (5.0, load_audio(speech_dir / "goforward.wav")),
            (13.0, load_audio(speech_dir / "cards_001.wav")),
        ],
        total_s=25.0,
    )
    tools = ClientTools()
    calls: list[dict] = []

    def get_weather(params: dict) -> str:
        calls.append(params)
        return f"sunny in {params['city']}"

    tools.register("get_weather", get_weather)
    responses: list[str] = []
    transcripts: list[str] = []
    latencies: list[int] = []
    conv = Conversation(
        ElevenLabs(api_key="unused", base_url=bg_server.http_url),
        "scripted",
        requires_auth=False,
        audio_interface=mic,
        client_tools=tools,
        callback_agent_response=responses.append,
        callback_user_transcript=transcripts.append,
        callback_latency_measurement=latencies.append,
    )
    conv.start_session()
    try:
        _wait(lambda: len(responses) >= 3, timeout=40)
    finally:
        conv.end_session()
        conversation_id = conv.wait_for_session_end()

    assert responses[0].startswith("Hello! I am the scripted sagelab agent")
    assert responses[1] == "I heard you. This reply is a recording, streamed in real time."
    assert responses[2] == "I looked that up for you. The weather in Paris is sunny in Paris."
    assert calls and calls[0]["city"] == "Paris" and calls[0]["tool_call_id"].startswith("call_")
    assert len(transcripts) == 2 and all(t.startswith("(speech,") for t in transcripts)
    assert latencies and all(0 < ms < 1000 for ms in latencies)
    # The greeting's audio reached the audio interface, byte for byte as recorded.
    greeting = pcm_bytes(load_audio(ASSETS / "greeting.wav"))
    received = b"".join(chunk for _, chunk in mic.outputs)
    assert received.startswith(greeting[:32000])

    bg_server.store.flush()
    stored = bg_server.store.get_conversation(conversation_id)
    assert stored is not None and stored["agent_id"] == "scripted"
    assert [t["role"] for t in stored["turns"]][:3] == ["agent", "user", "agent"]
    assert stored["tool_calls"][0]["name"] == "get_weather"
    assert stored["tool_calls"][0]["result"] == "sunny in Paris"


def test_sync_sdk_interruption_drops_stale_audio(bg_server, speech_dir, WavMicrophone):
    """Talking over the long reply: the SDK gets `interruption`, no audio of the cut turn
    arrives after it, and the next turn's audio is the next reply from its first sample."""
    go = load_audio(speech_dir / "goforward.wav")
    # The long reply (10 s) first, so that it comes after the first turn: from ~8.3 s; at
    # 11 s the user talks over it, and the short reply comes after that.
    agent = bg_server.config.agents[0]
    replies = agent.options["replies"]
    agent.options = {**agent.options, "replies": [replies[2], replies[0]]}
    mic = WavMicrophone(
        [(5.0, go), (11.0, load_audio(speech_dir / "cards_002.wav"))],
        total_s=20.0,
    )
    corrections: list[tuple[str, str]] = []
    responses: list[str] = []
    tools = ClientTools()
    tools.register("get_weather", lambda p: "fine")
    conv = Conversation(
        ElevenLabs(api_key="unused", base_url=bg_server.http_url),
        "scripted",
        requires_auth=False,
        audio_interface=mic,
        client_tools=tools,
        callback_agent_response=responses.append,
        callback_agent_response_correction=lambda o, c: corrections.append((o, c)),
    )
    conv.start_session()
    try:
        _wait(lambda: len(responses) >= 3, timeout=60)
        time.sleep(1.0)
    finally:
        conv.end_session()
        conv.wait_for_session_end()

    assert len(mic.interrupts) >= 1
    original, corrected = corrections[0]
    assert original.startswith("Here is a longer answer")
    assert 0 < len(corrected) < len(original) and original.startswith(corrected)
    cut_at = mic.interrupts[0]
    after = b"".join(chunk for t, chunk in mic.outputs if t > cut_at)
    next_reply = pcm_bytes(load_audio(ASSETS / "reply_heard.wav"))
    assert after.startswith(next_reply[:16000]), "stale audio of the cut turn was played"


async def test_async_sdk_conversation_text_turn(server):
    """AsyncConversation in text mode: user_message in, tool call, response out."""
    responses: list[str] = []
    tools = ClientTools(loop=asyncio.get_running_loop())

    async def get_weather(params: dict) -> str:
        return "cloudy"

    tools.register("get_weather", get_weather, is_async=True)
    conv = AsyncConversation(
        AsyncElevenLabs(api_key="unused", base_url=server.http_url),
        "scripted",
        requires_auth=False,
        client_tools=tools,
        config=ConversationInitiationData(dynamic_variables={"user_name": "Ann"}),
        callback_agent_response=lambda text: _append(responses, text),
    )
    await conv.start_session()
    try:
        await _await(lambda: len(responses) >= 1)
        await conv.send_user_message("hello")
        await _await(lambda: len(responses) >= 2)
        await conv.send_user_message("what's the weather?")
        await _await(lambda: len(responses) >= 3)
    finally:
        await conv.end_session()
        await conv.wait_for_session_end()
    assert responses[1].startswith("I heard you")
    assert responses[2] == "I looked that up for you. The weather in Paris is cloudy."


async def _append(target: list[str], text: str) -> None:
    target.append(text)


async def _await(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
def auth_server(tmp_path):  # type: ignore[no-untyped-def]
    config = load_config(
        None, env={}, port=0, store_path=str(tmp_path / "s.sqlite3"), api_keys=["sk-test-key"]
    )
    config.agents = [a for a in config.agents if a.id == "scripted"]
    config.agents[0].requires_auth = True
    with BackgroundServer(config) as srv:
        yield srv


def test_signed_url_flow_with_requires_auth(auth_server):
    responses: list[str] = []
    conv = Conversation(
        ElevenLabs(api_key="sk-test-key", base_url=auth_server.http_url),
        "scripted",
        requires_auth=True,
        callback_agent_response=responses.append,
    )
    conv.start_session()
    try:
        _wait(lambda: len(responses) >= 1, timeout=10)
    finally:
        conv.end_session()
        assert conv.wait_for_session_end() is not None
    assert responses[0].startswith("Hello!")


def test_signed_url_refused_with_wrong_key(auth_server):
    from elevenlabs.core.api_error import ApiError

    conv = Conversation(
        ElevenLabs(api_key="wrong", base_url=auth_server.http_url),
        "scripted",
        requires_auth=True,
    )
    with pytest.raises(ApiError) as info:
        conv.start_session()
    assert info.value.status_code == 401


def test_unsigned_connection_to_auth_agent_is_refused(auth_server):
    ended: list[object] = []
    conv = Conversation(
        ElevenLabs(api_key="unused", base_url=auth_server.http_url),
        "scripted",
        requires_auth=False,
        callback_disconnect=ended.append,
    )
    conv.start_session()
    conv.wait_for_session_end()
    assert ended and ended[0].reason == "error" and ended[0].close_code == 1008
