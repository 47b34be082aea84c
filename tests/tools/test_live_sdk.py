"""Registry tools inside the official SDK's ``ClientTools``, in a live conversation."""

from __future__ import annotations

import time
from typing import Literal

from elevenlabs.client import ElevenLabs
from elevenlabs.conversational_ai.conversation import ClientTools, Conversation

from sagelab.tools import ToolRegistry


def _converse(server_url: str, registry: ToolRegistry) -> list[str]:
    client_tools = ClientTools()
    registry.register_with_client_tools(client_tools)
    responses: list[str] = []
    conv = Conversation(
        ElevenLabs(api_key="unused", base_url=server_url),
        "scripted",
        requires_auth=False,
        client_tools=client_tools,
        callback_agent_response=responses.append,
    )
    conv.start_session()
    try:
        deadline = time.monotonic() + 15
        while len(responses) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        conv.send_user_message("hello")
        while len(responses) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        conv.send_user_message("what's the weather?")  # the scripted agent calls get_weather
        while len(responses) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        conv.end_session()
        conv.wait_for_session_end()
    return responses


def test_registry_tool_answers_a_live_tool_call(bg_server):
    registry = ToolRegistry()

    @registry.tool
    def get_weather(city: Literal["Paris", "London"], unit: Literal["c", "f"] = "c") -> str:
        """Current weather.

        Args:
            city: City name.
            unit: Temperature unit.
        """
        return f"21 degrees {unit.upper()} in {city}"

    responses = _converse(bg_server.http_url, registry)
    assert (
        responses[2] == "I looked that up for you. The weather in Paris is 21 degrees C in Paris."
    )
    assert registry.stats()["get_weather"].calls == 1


def test_invalid_parameters_reach_the_agent_as_an_error_that_says_what_to_fix(bg_server):
    registry = ToolRegistry()

    @registry.tool
    def get_weather(city: str, days: int) -> str:
        """Forecast.

        Args:
            city: City name.
            days: How many days ahead.
        """
        raise AssertionError("must not run without days")

    responses = _converse(bg_server.http_url, registry)
    reply = responses[2]
    assert reply.startswith("I looked that up for you. The weather in Paris is unavailable (")
    assert "days" in reply  # the message names the missing parameter
    bg_server.store.flush()
    stored = bg_server.store.list_conversations(agent_id="scripted")[0]
    call = bg_server.store.get_conversation(stored["id"])["tool_calls"][0]
    assert call["is_error"] and "days" in str(call["result"])
