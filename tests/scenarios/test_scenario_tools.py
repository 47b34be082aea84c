"""A scenario run with the application's own tools (``ToolRegistry.session_tools()``) instead of
the scenario's canned client-tool answers: what a prompt-and-tool lab needs. The bundled
``scripted`` agent's second reply calls ``get_weather`` for Paris and speaks its result."""

from __future__ import annotations

import asyncio
from typing import Any

from sagelab.scenarios import parse_scenario, run_suite
from sagelab.server.app import SagelabServer
from sagelab.tools import ToolRegistry


def weather_scenario(expect: dict[str, Any]) -> Any:
    return parse_scenario(
        {
            "agent": "scripted",
            "settings": {"greeting": "talk_over"},
            # A canned answer the real handler must replace.
            "client_tools": {"get_weather": {"result": "canned drizzle"}},
            "steps": [{"send_text": "hello"}, {"send_text": "the weather?", "expect": expect}],
        },
        where="inline",
    )


def test_real_handlers_answer_the_agents_tool_calls(bg_server: SagelabServer) -> None:
    registry = ToolRegistry()
    cities: list[str] = []

    @registry.tool
    def get_weather(city: str) -> str:
        """Look up the current weather for a city."""
        cities.append(city)
        return f"sunny in {city}"

    scenario = weather_scenario(
        {
            "tool": {"name": "get_weather", "parameters": {"city": "Paris"}, "error": False},
            "reply_contains": "sunny in Paris",
            "reply_not_contains": "canned",
        }
    )
    suite = asyncio.run(run_suite([scenario], bg_server.http_url, tools=registry.session_tools()))
    assert suite.passed, suite.explain()
    assert cities == ["Paris"]
    assert registry.stats()["get_weather"].calls == 1


def test_a_failing_handler_reaches_the_agent_as_a_tool_error(bg_server: SagelabServer) -> None:
    registry = ToolRegistry()

    @registry.tool
    def get_weather(city: str) -> str:
        """Look up the current weather for a city."""
        raise ValueError(f"no weather station in {city}")

    scenario = weather_scenario({"tool": {"name": "get_weather", "error": True}})
    suite = asyncio.run(run_suite([scenario], bg_server.http_url, tools=registry.session_tools()))
    assert suite.passed, suite.explain()
    sent = [
        e.data
        for e in suite.results[0].run.timeline.events
        if e.type == "client_tool_result" and e.direction == "send"
    ]
    assert [d.get("is_error") for d in sent] == [True]
