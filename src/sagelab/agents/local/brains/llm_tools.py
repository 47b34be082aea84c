"""Tool calls for a small local model: a grammar built from the agent's tool specs.

A 135M-parameter model does not decide on its own to write a function call: offered "text or
JSON", SmolLM2-135M always starts with text and sometimes writes JSON in the middle of a
sentence. So the decision is its own, short, constrained pass: the model writes ``none`` or a
tool's name followed by that tool's arguments as JSON, and llama.cpp's sampler only lets it
write what the grammar allows (names of the agent's tools; arguments shaped by each tool's JSON
schema, turned into GBNF by llama.cpp's converter). The model still chooses *whether* to call
and *which* tool with which values; values can still be wrong (an id that does not exist), and
a reply cut by ``max_tokens`` is incomplete, which is why every call goes through the tool
registry and every problem goes back to the model as a result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sagelab.config import ToolSpec

__all__ = [
    "NO_TOOL",
    "ParsedCall",
    "decision_prompt",
    "parse_call",
    "tool_grammar",
    "tools_prompt",
]

NO_TOOL = "none"


@dataclass(frozen=True)
class ParsedCall:
    """What the model chose; ``error`` says why a call cannot run (the model is then told)."""

    name: str | None  # None: no tool
    arguments: dict[str, Any]
    raw: str
    error: str | None = None


def _arguments_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """The tool's parameters schema, closed: a key the tool does not know cannot be written."""
    schema = dict(parameters or {})
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return schema


def tool_grammar(tools: Sequence[ToolSpec]) -> str:
    """GBNF: ``none``, or one tool's name, a space and its arguments as JSON."""
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    choices = [f'"{NO_TOOL}"']
    for i, tool in enumerate(tools):
        rule = f"tool{i}-args"
        schema = converter.resolve_refs(_arguments_schema(tool.parameters), rule)
        converter.visit(schema, rule)
        choices.append(f'"{tool.name} " {rule}')
    return f"root ::= {' | '.join(choices)}\n{converter.format_grammar()}\n"


def tools_prompt(system_prompt: str, tools: Sequence[ToolSpec]) -> str:
    """The agent's system prompt with its tools listed, shared by both passes (so llama.cpp
    reuses the evaluated prompt for the answer instead of reading it twice)."""
    listed = "\n".join(f"- {t.name}: {t.description}{_arguments_line(t)}" for t in tools)
    return f"{system_prompt.strip()}\n\nTools:\n{listed}".strip()


def decision_prompt(tools_system: str) -> str:
    """The system prompt of the decision pass: ``tools_prompt``'s text and then the format.

    Measured on SmolLM2-135M with the demo's six requests: appended to the system prompt it
    picked the right tool (or none) 4 times in 6; as a separate last message, 3 in 6. An
    example call in the instruction made it copy the example's values instead of the user's.
    """
    return (
        f"{tools_system}\n\nIf a tool is needed to answer the user's last message, write the "
        f"tool's name, then its arguments as JSON. If no tool is needed, write: {NO_TOOL}"
    )


def _arguments_line(tool: ToolSpec) -> str:
    props = (tool.parameters or {}).get("properties") or {}
    if not props:
        return ""
    described = "; ".join(
        f"{k}: {v.get('description') or v.get('type', '')}" for k, v in props.items()
    )
    return f" Arguments: {described}."


def parse_call(text: str, tools: Sequence[ToolSpec]) -> ParsedCall:
    """Read the decision the model wrote; a malformed one gets an ``error`` for the model."""
    raw = text.strip()
    if raw == NO_TOOL:
        return ParsedCall(None, {}, raw)
    name, _, rest = raw.partition(" ")
    known = [t.name for t in tools]
    if name not in known:
        return ParsedCall(name, {}, raw, f"unknown tool {name!r}; use one of: {', '.join(known)}")
    try:
        arguments = json.loads(rest or "{}")
    except ValueError as exc:
        return ParsedCall(
            name, {}, raw, f"the arguments of {name} were not valid JSON ({exc}): {rest[:200]}"
        )
    if not isinstance(arguments, dict):
        return ParsedCall(name, {}, raw, f"the arguments of {name} must be a JSON object")
    return ParsedCall(name, arguments, raw)
