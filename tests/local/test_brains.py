"""Brains through their public interface: ``create_brain(...).respond(...)``.

Tools are real async functions that record what they were asked; the ``openai`` brain talks to
a scripted chat-completions server over real HTTP (``openai_server.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from openai_server import Call, Error, Hang, Raw, ScriptedChatServer, Text, ToolCalls

from sagelab.agents.base import ToolResult
from sagelab.agents.local.brain import Brain, BrainError, ChatMessage, create_brain
from sagelab.agents.local.brains.text import normalise_transcript
from sagelab.config import ToolSpec


class RecordingTools:
    """A tool runner: records each call and answers with what the test's handler returns."""

    def __init__(self, **handlers: Callable[[dict[str, Any]], Any]) -> None:
        self.handlers = handlers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, name: str, parameters: dict[str, Any]) -> ToolResult:
        self.calls.append((name, parameters))
        call_id = f"t{len(self.calls)}"
        try:
            value = self.handlers[name](parameters)
        except LookupError as exc:
            return ToolResult(call_id, f"{name} failed: {exc.args[0]}", is_error=True)
        return ToolResult(call_id, value)


def tool(name: str, **properties: str) -> ToolSpec:
    schema = {
        "type": "object",
        "properties": {p: {"type": t} for p, t in properties.items()},
        "required": list(properties),
    }
    return ToolSpec(name=name, description=f"The {name} tool.", parameters=schema)


TOOLS = [
    tool("search_records", query="string"),
    tool("get_record", id="integer"),
    tool("update_record", id="integer", field="string", value="string"),
]
RECORDS = {3: {"title": "Printer jam", "status": "open"}, 5: {"title": "Lost badge"}}


def demo_tools() -> RecordingTools:
    def get_record(p: dict[str, Any]) -> Any:
        record_id = int(p["id"])
        if record_id not in RECORDS:
            raise LookupError(f"record {record_id} does not exist")
        return RECORDS[record_id]

    return RecordingTools(
        search_records=lambda p: {"count": 2, "summary": "Alice Smith and Alice Jones."},
        get_record=get_record,
        # Client tools answer with strings; JSON in them is still reachable from templates.
        update_record=lambda p: json.dumps({"record": {"id": p["id"], p["field"]: p["value"]}}),
    )


async def reply(
    brain: Brain,
    text: str,
    call_tool: RecordingTools | None = None,
    *,
    tools: Sequence[ToolSpec] = TOOLS,
    system_prompt: str = "You are a records assistant.",
    history: Sequence[ChatMessage] = (),
) -> list[str]:
    pieces = brain.respond(
        [*history, ChatMessage("user", text)],
        system_prompt=system_prompt,
        tools=tools,
        call_tool=call_tool or RecordingTools(),
    )
    return [piece async for piece in pieces]


# -- create_brain ------------------------------------------------------------------------------


def test_unknown_brain_names_the_choices() -> None:
    with pytest.raises(BrainError, match=r"unknown brain 'gpt'.*echo, rules, openai"):
        create_brain("gpt", {})


def test_option_typos_fail_at_creation_with_their_path() -> None:
    with pytest.raises(BrainError, match=r"'echo' brain: prefx: Extra inputs"):
        create_brain("echo", {"prefx": "Heard: "})
    with pytest.raises(BrainError, match=r"intents\.0\.patterns.*not a valid regex"):
        create_brain("rules", {"intents": [{"name": "x", "patterns": ["(?P<a"], "answer": "a"}]})
    with pytest.raises(BrainError, match=r"intents\.0\.answer.*template '\{a': expected '\}'"):
        create_brain("rules", {"intents": [{"name": "x", "patterns": ["x"], "answer": "{a"}]})
    with pytest.raises(BrainError, match=r"'openai' brain: model: Field required"):
        create_brain("openai", {"base_url": "http://127.0.0.1:9/v1"})


# -- echo --------------------------------------------------------------------------------------


async def test_echo_says_back_the_latest_user_message() -> None:
    brain = create_brain("echo", {})
    history = [ChatMessage("user", "first"), ChatMessage("assistant", "You said: first")]
    assert await reply(brain, "  Hello there. ", history=history) == ["You said: Hello there."]


async def test_echo_prefix_is_an_option_and_silence_gets_no_reply() -> None:
    brain = create_brain("echo", {"prefix": "Heard: "})
    assert await reply(brain, "testing") == ["Heard: testing"]
    assert await reply(brain, "   ") == []


# -- rules -------------------------------------------------------------------------------------

RULES: dict[str, Any] = {
    "intents": [
        {
            # Before "search": "look up record 5" must read, not search for "record 5".
            "name": "read",
            "patterns": [r"\b(?:read|look up|show)\b(?: me)? record (?:number )?(?P<id>\d+)"],
            "tool": "get_record",
            "parameters": {"id": "{id}"},
            "answer": "Record {id} is {result.title}. Its status is {result[status]}.",
            "error_answer": "Sorry, I could not read record {id}: {error}.",
        },
        {
            "name": "search",
            "patterns": [r"\b(?:search|find|look up|look for)\b(?: for)? (?P<query>.+)"],
            "tool": "search_records",
            "parameters": {"query": "{query}"},
            "answer": "I found {result.count} records matching {query}. {result.summary}",
        },
        {
            "name": "update",
            "patterns": [
                r"\b(?:update|change|set) record (?:number )?(?P<id>\d+)(?:'s)? "
                r"(?P<field>\w+) to (?P<value>.+)"
            ],
            "tool": "update_record",
            "parameters": {"id": "{id}", "field": "{field}", "value": "{value}"},
            "answer": "Done. Record {result.record.id} now says {value}.",
        },
        {"name": "hello", "patterns": [r"^(?:hi|hello)\b"], "answer": "Hello {user_name}!"},
    ],
    "fallback": "Sorry, I can search records, read one, or update one.",
    "variables": {"user_name": "Ada"},
}


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        ("Search for Alice.", "search for alice"),
        ("look up record number five", "look up record number 5"),
        ("Update record 3 status to closed", "update record 3 status to closed"),
        ("Record #5, please!", "record 5 please"),
        ("What's twenty-one plus one hundred and five?", "what's 21 plus 105"),
        (
            "Call five five five, about 1,000 items at 3.5 each.",
            "call 5 5 5 about 1000 items at 3.5 each",
        ),
    ],
)
def test_transcripts_are_normalised_for_patterns(heard: str, expected: str) -> None:
    assert normalise_transcript(heard) == expected


async def test_rules_search_extracts_the_query_and_speaks_sentence_by_sentence() -> None:
    tools = demo_tools()
    pieces = await reply(create_brain("rules", RULES), "Search for Alice.", tools)
    assert tools.calls == [("search_records", {"query": "alice"})]
    assert pieces == ["I found 2 records matching alice. ", "Alice Smith and Alice Jones."]


async def test_rules_first_matching_intent_wins_and_number_words_become_digits() -> None:
    tools = demo_tools()
    pieces = await reply(create_brain("rules", RULES), "look up record number five", tools)
    assert tools.calls == [("get_record", {"id": "5"})]
    # "status" is missing from record 5: rendered empty, not a crash.
    assert "".join(pieces) == "Record 5 is Lost badge. Its status is."


async def test_rules_update_reads_fields_from_a_json_string_result() -> None:
    tools = demo_tools()
    brain = create_brain("rules", RULES)
    pieces = await reply(brain, "Update record 3 status to closed", tools)
    assert tools.calls == [("update_record", {"id": "3", "field": "status", "value": "closed"})]
    assert pieces == ["Done. ", "Record 3 now says closed."]


async def test_rules_tool_error_speaks_the_error_answer() -> None:
    tools = demo_tools()
    pieces = await reply(create_brain("rules", RULES), "Read record 99.", tools)
    assert tools.calls == [("get_record", {"id": "99"})]
    assert "".join(pieces) == (
        "Sorry, I could not read record 99: get_record failed: record 99 does not exist."
    )


async def test_rules_tool_error_without_error_answer_uses_the_default() -> None:
    options = {"intents": [{**RULES["intents"][0], "error_answer": None}]}
    pieces = await reply(create_brain("rules", options), "read record 7", demo_tools())
    assert (
        "".join(pieces) == "Sorry, I could not do that: get_record failed: record 7 does not exist"
    )


async def test_rules_fallback_when_nothing_matches() -> None:
    tools = demo_tools()
    pieces = await reply(create_brain("rules", RULES), "What's the weather like?", tools)
    assert tools.calls == []
    assert "".join(pieces) == RULES["fallback"]


async def test_rules_templates_use_variables_and_missing_fields_render_empty(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert await reply(create_brain("rules", RULES), "Hello!") == ["Hello Ada!"]
    options = {"intents": [{"name": "x", "patterns": ["hi"], "answer": "Hi {who}, welcome."}]}
    with caplog.at_level(logging.WARNING):
        assert await reply(create_brain("rules", options), "hi") == ["Hi, welcome."]
    assert "no value for {who}" in caplog.text


async def test_rules_do_not_call_a_tool_the_agent_does_not_have() -> None:
    tools = demo_tools()
    pieces = await reply(create_brain("rules", RULES), "search for bob", tools, tools=TOOLS[1:])
    assert tools.calls == []
    assert "".join(pieces) == "Sorry, I could not do that: the tool search_records is not available"


async def test_rules_stop_cleanly_when_cancelled_during_a_tool_call() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow_tool(name: str, parameters: dict[str, Any]) -> ToolResult:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    brain = create_brain("rules", RULES)
    pieces: list[str] = []

    async def consume() -> None:
        history = [ChatMessage("user", "search for alice")]
        async for piece in brain.respond(
            history, system_prompt="", tools=TOOLS, call_tool=slow_tool
        ):
            pieces.append(piece)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
    assert pieces == []


# -- openai ------------------------------------------------------------------------------------


@pytest.fixture
async def llm_brains() -> AsyncIterator[Callable[..., Brain]]:
    """Builds ``openai`` brains and closes their connection pools after the test."""
    pytest.importorskip("openai")
    made: list[Brain] = []

    def make(base_url: str, **options: Any) -> Brain:
        brain = create_brain("openai", {"base_url": base_url, "model": "test-model", **options})
        made.append(brain)
        return brain

    yield make
    for brain in made:
        await brain.aclose()


async def test_openai_streams_text_and_sends_prompt_history_and_tools(
    llm_brains: Callable[..., Brain],
) -> None:
    with ScriptedChatServer(Text(["Hello", " there.", " How can I help?"])) as server:
        brain = llm_brains(server.base_url, temperature=0.2, max_tokens=64, extra_body={"top_k": 5})
        history = [ChatMessage("user", "hi"), ChatMessage("assistant", "Hello!")]
        pieces = await reply(brain, "Who are you?", history=history)
    assert pieces == ["Hello", " there.", " How can I help?"]
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    body = request.body
    assert body["model"] == "test-model"
    assert body["stream"] is True
    assert body["messages"] == [
        {"role": "system", "content": "You are a records assistant."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Who are you?"},
    ]
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "search_records",
            "description": "The search_records tool.",
            "parameters": TOOLS[0].parameters,
        },
    }
    assert [t["function"]["name"] for t in body["tools"]] == [t.name for t in TOOLS]
    assert "tool_choice" not in body
    assert (body["temperature"], body["max_tokens"], body["top_k"]) == (0.2, 64, 5)


async def test_openai_runs_a_streamed_tool_call_and_returns_its_result(
    llm_brains: Callable[..., Brain],
) -> None:
    script = (
        ToolCalls([Call("call_abc", "search_records", ['{"qu', 'ery": "Al', 'ice"}'])]),
        Text(["I found two records. ", "Alice Smith and Alice Jones."]),
    )
    tools = demo_tools()
    with ScriptedChatServer(*script) as server:
        pieces = await reply(llm_brains(server.base_url), "Find Alice", tools)
    assert "".join(pieces) == "I found two records. Alice Smith and Alice Jones."
    assert tools.calls == [("search_records", {"query": "Alice"})]
    first, second = server.requests
    assert second.body["messages"][:-2] == first.body["messages"]
    assistant, tool_message = second.body["messages"][-2:]
    assert assistant == {  # no "content" key at all: llama.cpp's server rejects null
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "search_records", "arguments": '{"query": "Alice"}'},
            }
        ],
    }
    assert tool_message == {
        "role": "tool",
        "tool_call_id": "call_abc",
        "content": json.dumps({"count": 2, "summary": "Alice Smith and Alice Jones."}),
    }


async def test_openai_parallel_tool_calls_keep_their_ids_and_errors_are_marked(
    llm_brains: Callable[..., Brain],
) -> None:
    calls = [
        Call("call_1", "get_record", ['{"id"', ": 3}"]),
        Call("call_2", "get_record", ['{"id":', " 42", "}"]),
    ]
    tools = demo_tools()
    with ScriptedChatServer(ToolCalls(calls), Text(["Record 3 is a printer jam."])) as server:
        pieces = await reply(llm_brains(server.base_url), "Read records 3 and 42", tools)
    assert pieces == ["Record 3 is a printer jam."]
    assert tools.calls == [("get_record", {"id": 3}), ("get_record", {"id": 42})]
    results = server.requests[1].body["messages"][-2:]
    assert results == [
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps(RECORDS[3])},
        {
            "role": "tool",
            "tool_call_id": "call_2",
            "content": "Error: get_record failed: record 42 does not exist",
        },
    ]


async def test_openai_invalid_tool_arguments_go_back_to_the_model_not_to_the_tool(
    llm_brains: Callable[..., Brain],
) -> None:
    tools = demo_tools()
    script = (ToolCalls([Call("c1", "get_record", ['{"id": 3'])]), Text(["Sorry."]))
    with ScriptedChatServer(*script) as server:
        assert await reply(llm_brains(server.base_url), "read 3", tools) == ["Sorry."]
    assert tools.calls == []
    tool_message = server.requests[1].body["messages"][-1]
    assert tool_message["tool_call_id"] == "c1"
    assert tool_message["content"].startswith("Error: the arguments were not valid JSON")


async def test_openai_tool_loop_is_capped_and_the_last_round_forbids_tools(
    llm_brains: Callable[..., Brain],
) -> None:
    again = ToolCalls([Call("c", "search_records", ['{"query": "x"}'])])
    with ScriptedChatServer(again, again) as server:
        brain = llm_brains(server.base_url, max_tool_rounds=2)
        with pytest.raises(BrainError, match="still asked for tools after 2 rounds"):
            await reply(brain, "search x", demo_tools())
    assert [r.body.get("tool_choice") for r in server.requests] == [None, "none"]


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("required", "required"),
        ("search_records", {"type": "function", "function": {"name": "search_records"}}),
    ],
)
async def test_openai_tool_choice_insists_on_the_first_request_only(
    llm_brains: Callable[..., Brain], choice: str, sent: object
) -> None:
    """For small models that never call a tool unasked; later requests are free again."""
    script = (
        ToolCalls([Call("c", "search_records", ['{"query": "x"}'])]),
        Text(["Done."]),
    )
    with ScriptedChatServer(*script) as server:
        brain = llm_brains(server.base_url, tool_choice=choice, max_tool_rounds=3)
        assert await reply(brain, "search x", demo_tools()) == ["Done."]
    assert [r.body.get("tool_choice") for r in server.requests] == [sent, None]


async def test_openai_tool_choice_must_name_one_of_the_tools(
    llm_brains: Callable[..., Brain],
) -> None:
    with ScriptedChatServer(Text(["never sent"])) as server:
        brain = llm_brains(server.base_url, tool_choice="launch_rocket")
        with pytest.raises(BrainError, match="launch_rocket"):
            await reply(brain, "search x", demo_tools())
    assert server.requests == []


async def test_openai_sends_the_key_from_the_configured_variable(
    llm_brains: Callable[..., Brain], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGELAB_TEST_LLM_KEY", "sk-test-123")
    with ScriptedChatServer(Text(["ok"])) as server:
        brain = llm_brains(server.base_url, api_key_env="SAGELAB_TEST_LLM_KEY")
        assert await reply(brain, "hi") == ["ok"]
    assert server.requests[0].headers["authorization"] == "Bearer sk-test-123"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (Error(500, "model crashed"), r"/v1/chat/completions answered HTTP 500: .*model crashed"),
        (Error(401, "bad key"), r"rejected the API key \(HTTP 401\); set api_key or the OPENAI"),
        (Error(404, "no such model"), r"HTTP 404 .*base_url ends with /v1.*'test-model'"),
        (Raw(["data: {not json\n\n"]), r"malformed stream"),
    ],
)
async def test_openai_server_errors_become_brain_errors_naming_the_url(
    llm_brains: Callable[..., Brain], error: Error | Raw, message: str
) -> None:
    with ScriptedChatServer(error) as server:
        with pytest.raises(BrainError, match=message) as caught:
            await reply(llm_brains(server.base_url), "hi")
        assert f"{server.base_url}/chat/completions" in str(caught.value)


async def test_openai_unreachable_server_is_a_brain_error(
    llm_brains: Callable[..., Brain],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BrainError, match=rf"cannot reach the LLM at http://127.0.0.1:{port}/v1"):
        await reply(llm_brains(f"http://127.0.0.1:{port}/v1"), "hi")


@pytest.mark.parametrize(
    "script", [Hang(), Text(["Let me think. ", "never sent"], stall_after=1)], ids=["hang", "stall"]
)
async def test_openai_timeout_applies_to_the_first_and_every_next_token(
    llm_brains: Callable[..., Brain], script: Hang | Text
) -> None:
    pieces: list[str] = []
    with ScriptedChatServer(script) as server:
        brain = llm_brains(server.base_url, timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(BrainError, match=r"did not answer within 0.3 s.*raise timeout_s"):
            async for piece in brain.respond(
                [ChatMessage("user", "hi")], system_prompt="", tools=[], call_tool=RecordingTools()
            ):
                pieces.append(piece)
        elapsed = time.monotonic() - started
    assert pieces == ([] if isinstance(script, Hang) else ["Let me think. "])
    assert 0.3 <= elapsed < 3


@pytest.mark.parametrize("how", ["cancel the task", "close the generator"])
async def test_openai_barge_in_closes_the_http_stream(
    llm_brains: Callable[..., Brain], how: str
) -> None:
    with ScriptedChatServer(Text(["Once upon a time. ", "never sent"], stall_after=1)) as server:
        brain = llm_brains(server.base_url)
        pieces = brain.respond(
            [ChatMessage("user", "tell me a story")],
            system_prompt="",
            tools=[],
            call_tool=RecordingTools(),
        )
        heard: list[str] = []
        if how == "close the generator":
            assert isinstance(pieces, AsyncGenerator)
            heard.append(await anext(pieces))
            await pieces.aclose()
        else:
            first = asyncio.Event()

            async def speak() -> None:
                async for piece in pieces:
                    heard.append(piece)
                    first.set()

            task = asyncio.create_task(speak())
            await asyncio.wait_for(first.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await asyncio.to_thread(server.disconnected.wait, 5)
    assert heard == ["Once upon a time. "]
