"""The registry inside the official SDK's ``ClientTools``, called exactly as the SDK calls it."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from typing import Any

import pytest
from elevenlabs.conversational_ai.conversation import ClientTools

from sagelab.tools import ToolRegistry


@pytest.fixture
def registry() -> Iterator[ToolRegistry]:
    with ToolRegistry() as reg:

        @reg.tool
        def add(a: int, b: int = 1) -> int:
            """Add two numbers."""
            return a + b

        @reg.tool
        async def greet(name: str, formal: bool = False) -> dict[str, str]:
            """Greet someone."""
            await asyncio.sleep(0)
            return {"greeting": f"{'Good day' if formal else 'Hi'}, {name}"}

        @reg.tool
        def exists(name: str) -> bool:
            """Whether a name is known."""
            return name == "Anna"

        @reg.tool
        def explode() -> None:
            """Always fails."""
            raise ValueError("the ledger is locked; try again in a minute")

        yield reg


@pytest.fixture
def client_tools(registry: ToolRegistry) -> Iterator[ClientTools]:
    tools = ClientTools()
    registry.register_with_client_tools(tools)
    tools.start()  # type: ignore[no-untyped-call]
    yield tools
    tools.stop()  # type: ignore[no-untyped-call]


def _call(tools: ClientTools, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """What the SDK does on a ``client_tool_call``: inject the id, execute, wait for the reply."""
    replies: queue.Queue[dict[str, Any]] = queue.Queue()
    tools.execute_tool(name, {"tool_call_id": "call_1", **params}, replies.put)
    return replies.get(timeout=10)


def test_every_tool_is_registered_sync_or_async(client_tools: ClientTools) -> None:
    assert {name: is_async for name, (_, is_async) in client_tools.tools.items()} == {
        "add": False,
        "greet": True,
        "exists": False,
        "explode": False,
    }


def test_a_valid_sync_call(client_tools: ClientTools) -> None:
    assert _call(client_tools, "add", {"a": "2", "b": 3}) == {
        "type": "client_tool_result",
        "tool_call_id": "call_1",
        "result": 5,
        "is_error": False,
    }


def test_a_valid_async_call(client_tools: ClientTools) -> None:
    reply = _call(client_tools, "greet", {"name": "Anna", "formal": "yes"})
    assert reply["result"] == {"greeting": "Good day, Anna"}
    assert reply["is_error"] is False


def test_invalid_parameters_come_back_as_an_error_with_the_fix(client_tools: ClientTools) -> None:
    reply = _call(client_tools, "add", {"a": "two"})
    assert reply["is_error"] is True
    assert reply["tool_call_id"] == "call_1"
    assert reply["result"].startswith("Invalid parameters for add: a must be a whole number")
    assert "Call add again with parameters a (a whole number, e.g. 42, required)" in reply["result"]


def test_async_invalid_parameters_too(client_tools: ClientTools) -> None:
    reply = _call(client_tools, "greet", {})
    assert reply["is_error"] is True
    assert "name is required" in reply["result"]


def test_a_raising_handler(client_tools: ClientTools) -> None:
    reply = _call(client_tools, "explode", {})
    assert reply == {
        "type": "client_tool_result",
        "tool_call_id": "call_1",
        "result": "explode failed: the ledger is locked; try again in a minute",
        "is_error": True,
    }


def test_a_false_result_is_not_turned_into_success_text(client_tools: ClientTools) -> None:
    # The SDK replaces falsy results with "Client tool: ... called successfully."
    assert _call(client_tools, "exists", {"name": "Bob"})["result"] == "false"
    assert _call(client_tools, "exists", {"name": "Anna"})["result"] is True


def test_calls_are_counted_in_the_registry(
    client_tools: ClientTools, registry: ToolRegistry
) -> None:
    _call(client_tools, "add", {"a": 1})
    _call(client_tools, "add", {"a": "x"})
    _call(client_tools, "greet", {"name": "Mia"})
    stats = registry.stats()
    assert (stats["add"].calls, stats["add"].errors) == (2, 1)
    assert stats["greet"].calls == 1
