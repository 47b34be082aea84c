"""The ``llm`` brain on the real SmolLM2-135M GGUF (llama.cpp): streaming, tools, limits.

A 135M model's words are not predictable, so these tests check what the brain guarantees
whatever the model says: text streams in many pieces, tool calls are well-formed and go through
``call_tool``, errors come back to the model as results, the context is bounded, the model is
shared and released on barge-in. Sampling is seeded at temperature 0, so a failure reproduces.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sagelab.agents.base import ToolResult
from sagelab.agents.local.brain import BrainError, ChatMessage, create_brain
from sagelab.agents.local.brains.llm import LLMBrain
from sagelab.agents.local.brains.llm_tools import parse_call, tool_grammar
from sagelab.config import ToolSpec

pytest.importorskip("llama_cpp")

SEARCH = ToolSpec(
    name="search_records",
    type="server",
    description="Find customer accounts by name, city, owner, status or words in their notes.",
    parameters={
        "type": "object",
        "required": ["query"],
        "properties": {"query": {"type": "string", "description": "A name, a city or a topic."}},
    },
)
GET = ToolSpec(
    name="get_record",
    type="server",
    description="Read one customer account in full, by its id.",
    parameters={
        "type": "object",
        "required": ["record_id"],
        "properties": {"record_id": {"type": "integer", "description": "The account's id."}},
    },
)
UPDATE = ToolSpec(
    name="update_record",
    type="server",
    description="Change one field of a customer account: its status, owner, city or notes.",
    parameters={
        "type": "object",
        "required": ["record_id", "field", "value"],
        "properties": {
            "record_id": {"type": "integer", "description": "The account's id."},
            "field": {"type": "string", "enum": ["status", "owner", "city", "notes"]},
            "value": {"type": "string", "description": "The new value."},
        },
    },
)
TOOLS = [SEARCH, GET, UPDATE]
SYSTEM = (
    "You are Audio Sage, a voice assistant for customer accounts. To change an account, use "
    "update_record. Keep answers to one short sentence."
)
# The request SmolLM2-135M maps to the right call most reliably (see docs/llm.md).
ASK = [ChatMessage("user", "Update record five, set the status to paused.")]


def brain(**options: Any) -> LLMBrain:
    made = create_brain("llm", {"temperature": 0, "seed": 7, **options})
    assert isinstance(made, LLMBrain)
    return made


class Tools:
    """Records calls; answers like the demo registry, or with an error."""

    def __init__(self, error: str | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.error = error

    async def __call__(self, name: str, params: dict[str, Any]) -> ToolResult:
        self.calls.append((name, params))
        if self.error is not None:
            return ToolResult("c1", self.error, is_error=True)
        return ToolResult("c1", {"summary": "Lena Vogel's status changed from active to paused."})


async def collect(pieces: Any) -> list[str]:
    return [p async for p in pieces]


# -- without the model --------------------------------------------------------------------


@pytest.mark.fast
@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('search_records {"query": "oslo"}', None),
        ("none", None),
        ('search_records {"query": "os', "not valid JSON"),
        ('launch {"at": 1}', "unknown tool 'launch'"),
        ("search_records [1]", "must be a JSON object"),
        ("", "unknown tool ''"),
    ],
)
def test_calls_the_model_wrote_are_parsed_or_explained(text: str, error: str | None) -> None:
    call = parse_call(text, [SEARCH, GET])
    if error is not None:
        assert call.error is not None and error in call.error
    elif text == "none":
        assert call.name is None and call.error is None
    else:
        assert call.error is None and call.arguments == {"query": "oslo"}


@pytest.mark.fast
def test_the_grammar_offers_speech_or_one_call_per_tool() -> None:
    grammar = tool_grammar([SEARCH, GET])
    root = grammar.splitlines()[0]
    assert root == 'root ::= "none" | "search_records " tool0-args | "get_record " tool1-args'
    assert "tool1-args ::=" in grammar and "record-id" in grammar  # get_record's own schema


@pytest.mark.fast
def test_bad_options_fail_at_creation() -> None:
    with pytest.raises(BrainError, match="max_tokens"):
        create_brain("llm", {"max_tokens": 0})
    with pytest.raises(BrainError, match=r"no GGUF model at /nope\.gguf"):
        create_brain("llm", {"model_path": "/nope.gguf"})


# -- with the model -----------------------------------------------------------------------


@pytest.mark.model
async def test_a_reply_streams_token_by_token_and_stops_at_max_tokens() -> None:
    b = brain(max_tokens=24)
    history = [ChatMessage("user", "Tell me a story about a cat.")]
    pieces = await collect(b.respond(history, system_prompt="", tools=[], call_tool=Tools()))
    assert len(pieces) > 5, pieces  # many pieces, not one string at the end
    assert b.last_stats[0].completion_tokens <= 24
    assert b.last_stats[0].first_token_s is not None


@pytest.mark.model
async def test_the_same_seed_gives_the_same_reply() -> None:
    history = [ChatMessage("user", "What is the capital of France?")]
    first = "".join(
        await collect(brain().respond(history, system_prompt="", tools=[], call_tool=Tools()))
    )
    again = "".join(
        await collect(brain().respond(history, system_prompt="", tools=[], call_tool=Tools()))
    )
    assert first and first == again


@pytest.mark.model
async def test_a_tool_call_is_schema_shaped_runs_and_its_result_is_spoken() -> None:
    tools = Tools()
    b = brain()
    reply = "".join(
        await collect(b.respond(ASK, system_prompt=SYSTEM, tools=TOOLS, call_tool=tools))
    )
    assert tools.calls, f"no tool call; the model said {reply!r}"
    name, params = tools.calls[0]
    assert name == "update_record"
    assert set(params) == {"record_id", "field", "value"}  # closed schema: no other keys
    assert isinstance(params["record_id"], int)
    assert params["field"] in ("status", "owner", "city", "notes")
    assert reply.strip()
    assert len(b.last_stats) == 2  # one pass for the decision, one for the answer


@pytest.mark.model
async def test_no_tool_is_called_when_the_model_decides_none() -> None:
    tools = Tools()
    b = brain()
    bye = [ChatMessage("user", "Thanks, goodbye.")]
    reply = "".join(
        await collect(b.respond(bye, system_prompt=SYSTEM, tools=TOOLS, call_tool=tools))
    )
    assert tools.calls == [] and reply.strip()
    assert b.last_stats[0].completion_tokens <= 3  # "none" is a token or two


@pytest.mark.model
async def test_a_cut_off_call_becomes_an_error_the_model_sees_not_a_crash() -> None:
    """call_tokens cuts the JSON call short: the brain tells the model, which then answers."""
    tools = Tools()
    b = brain(call_tokens=6)
    reply = "".join(
        await collect(b.respond(ASK, system_prompt=SYSTEM, tools=TOOLS, call_tool=tools))
    )
    assert tools.calls == []  # a malformed call never reaches the tool
    assert len(b.last_stats) == 2 and reply.strip()


@pytest.mark.model
async def test_a_tool_error_goes_back_to_the_model() -> None:
    tools = Tools(error="the database is locked")
    b = brain()
    reply = "".join(
        await collect(b.respond(ASK, system_prompt=SYSTEM, tools=TOOLS, call_tool=tools))
    )
    assert len(tools.calls) == 1 and reply.strip()


@pytest.mark.model
async def test_a_long_history_is_cut_to_the_context_and_the_latest_turn_kept() -> None:
    b = brain(context_tokens=512, max_tokens=16)
    old = [
        ChatMessage("user" if i % 2 == 0 else "assistant", f"Message {i}: " + "blah " * 60)
        for i in range(40)
    ]
    history = [*old, ChatMessage("user", "Say hello.")]
    messages = b._fit(SYSTEM, history)
    assert messages[-1]["content"] == "Say hello."
    assert 1 < len(messages) < len(history)
    used = b.model.count_tokens(SYSTEM) + sum(b.model.count_tokens(m["content"]) for m in messages)
    assert used <= 512 - 16
    assert await collect(b.respond(history, system_prompt=SYSTEM, tools=[], call_tool=Tools()))


@pytest.mark.model
async def test_sessions_share_one_model_and_a_barge_in_frees_it() -> None:
    a, b = brain(max_tokens=200), brain(max_tokens=8)
    assert a.model is b.model  # one model per process
    long = [ChatMessage("user", "Count from one to one hundred in words.")]
    stream = a.respond(long, system_prompt="", tools=[], call_tool=Tools())
    first = await anext(stream)
    assert first
    # The other session queues behind the running reply; the barge-in (closing the
    # generator) must free the model within a token, not after 200.
    other = asyncio.create_task(
        collect(b.respond(ASK, system_prompt="", tools=[], call_tool=Tools()))
    )
    await asyncio.sleep(0.2)
    assert not other.done()
    await stream.aclose()
    pieces = await asyncio.wait_for(other, timeout=20)
    assert pieces
    assert a.last_stats[0].completion_tokens < 200


@pytest.mark.model
def test_server_start_warns_once_when_the_llm_cannot_load(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """prepare() at server start: a clear warning, no traceback, the other agents go on."""
    from sagelab.agents.local.factory import prepare

    options = {"brain": "llm", "brain_options": {"model_path": "./missing.gguf"}}
    with caplog.at_level("WARNING"):
        prepare(options, tmp_path)
    [record] = [r for r in caplog.records if "llm brain is not ready" in r.getMessage()]
    assert str(tmp_path / "missing.gguf") in record.getMessage()  # resolved next to the file
    assert record.exc_info is None
