"""The web app's chain: a browser on the relay protocol → sagelab with the ``elevenlabs``
backend → an upstream ConvAI agent (here another sagelab server standing in for ElevenLabs,
speaking the same protocol). Upstream client tool calls run in the middle server's registry."""

from __future__ import annotations

from pathlib import Path

from sagelab.client import Session
from sagelab.config import AgentSpec, ToolSpec, load_config
from sagelab.server.app import SagelabServer
from sagelab.tools import ToolRegistry

CALLS: list[dict[str, str]] = []


def weather_tools() -> ToolRegistry:
    """The middle server's tools (loaded by import path from the agents file)."""
    registry = ToolRegistry()

    @registry.tool
    def get_weather(city: str) -> str:
        """Current weather for a city.

        Args:
            city: City name.
        """
        CALLS.append({"city": city})
        return f"sunny in {city}"

    return registry


def relay_config(tmp_path: Path, upstream_url: str):  # type: ignore[no-untyped-def]
    config = load_config(None, env={}, port=0, store_path=str(tmp_path / "middle.sqlite3"))
    config.agents = [
        AgentSpec(
            id="sage-relay",
            first_message="Hello from the relay.",
            backend="elevenlabs",
            tools=[ToolSpec(name="get_weather", type="server", description="weather")],
            options={
                "base_url": upstream_url,
                "agent_id": "scripted",
                "server_tools": {"factory": f"{__name__}:weather_tools"},
            },
        )
    ]
    config.relay_agent = "sage-relay"
    return config


async def test_spoken_turns_and_a_tool_call_cross_the_relay_chain(server, tmp_path, speech_dir):
    CALLS.clear()
    async with (
        SagelabServer(relay_config(tmp_path, server.http_url)) as middle,
        Session.connect_relay(middle.http_url, "detail-7") as browser,
    ):
        greeting = await browser.wait_for("agent_response", timeout=10)
        assert greeting.data["agent_response"] == "Hello from the relay."
        await browser.wait_agent_done(timeout=20)

        mark = browser.mark()
        await browser.send_audio(speech_dir / "goforward.wav", trailing_silence_ms=900)
        heard = await browser.wait_for("user_transcript", since=mark, timeout=10)
        reply = await browser.wait_for("agent_response", since=mark, timeout=10)
        await browser.wait_for("audio", since=mark, timeout=10)
        await browser.wait_agent_done(timeout=20)
        assert heard.data["user_transcript"].startswith("(speech,")
        assert reply.data["agent_response"].startswith("I heard you")

        mark = browser.mark()
        await browser.send_audio(speech_dir / "cards_001.wav", trailing_silence_ms=900)
        tool = await browser.wait_for("client_tool_call", since=mark, timeout=10)
        answer = await browser.wait_for("agent_response", since=mark, timeout=10)
        await browser.wait_agent_done(timeout=20)
        await browser.end()

    assert tool.data == {"tool_name": "get_weather", "parameters": {"city": "Paris"}}
    assert answer.data["agent_response"] == (
        "I looked that up for you. The weather in Paris is sunny in Paris."
    )
    assert CALLS == [{"city": "Paris"}]
    # Both ends stored the call: the middle ran it, the upstream asked for it.
    server.store.flush()
    upstream = server.store.list_conversations(agent_id="scripted")[0]
    upstream_call = server.store.get_conversation(upstream["id"])["tool_calls"][0]
    assert upstream_call["result"] == "sunny in Paris" and not upstream_call["is_error"]
