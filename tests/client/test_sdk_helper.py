"""The official SDK ``Conversation`` built by sagelab, recorded into a timeline."""

from __future__ import annotations

import time

from sagelab.client.sdk import FileAudioInterface, sdk_conversation
from sagelab.tools import ToolRegistry


def test_sdk_conversation_with_overrides_registry_tools_and_a_timeline(bg_server, speech_dir):
    registry = ToolRegistry()

    @registry.tool
    def get_weather(city: str) -> str:
        """Weather.

        Args:
            city: City name.
        """
        return f"mild in {city}"

    mic = FileAudioInterface(speech_dir / "goforward.wav", lead_s=5.0, tail_s=20.0)
    conv, timeline = sdk_conversation(
        "scripted",
        api_key="unused",
        base_url=bg_server.http_url,
        first_message="Hi {{name}}.",
        dynamic_variables={"name": "Ann"},
        registry=registry,
        audio=mic,
    )
    conv.start_session()
    try:
        deadline = time.monotonic() + 30
        while len(timeline.of_type("agent_response")) < 2:
            assert time.monotonic() < deadline, "no reply"
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        conv.end_session()
        conv.wait_for_session_end()
    responses = [e.data["agent_response"] for e in timeline.of_type("agent_response")]
    assert responses[0] == "Hi Ann."
    assert responses[1].startswith("I heard you")
    assert timeline.of_type("user_transcript")
    assert timeline.user_audio.size >= 16000 * 7  # the mic's lead, speech and tail so far
    assert timeline.agent_audio.size > 16000  # greeting and reply audio, recorded
    assert any(e.data.get("ping_ms") for e in timeline.of_type("ping"))
