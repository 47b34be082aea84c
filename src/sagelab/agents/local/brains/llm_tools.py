"""Tool calls for a small local model: a grammar built from the agent's tool specs.

A 135M-parameter model cannot be trusted to write a well-formed function call on its own, so
the sampler is constrained: each reply is either spoken text (anything that does not start with
``{``) or exactly one call, ``{"tool": <name>, "arguments": <that tool's parameters>}``, where
the arguments follow the tool's own JSON schema (llama.cpp turns the schema into a GBNF
grammar). The model still chooses *whether* to call and *which* tool; the grammar only makes
what it writes parseable and shaped like the schema. Values can still be wrong (an id that does
not exist, a required key the grammar could not enforce), which is why every call goes through
the tool registry and its errors go back to the model as results.

The same instructions are put in the system prompt, because a grammar constrains the output but
does not tell the model that tools exist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sagelab.config import ToolSpec

__all__ = ["ParsedCall", "parse_call", "tool_grammar", "tool_instructions"]

# Spoken text: any first character but "{" (which starts a call), then anything at all.
_SAY_RULES = "say ::= [^{ \\t\\n] [^\\x00]*\n"
_ROOT = re.compile(r"^root ::=", re.MULTILINE)


@dataclass(frozen=True)
class ParsedCall:
    """A call the model wrote; ``error`` says why it cannot run (then the model is told)."""

    name: str
    arguments: dict[str, Any]
    raw: str
    error: str | None = None


def call_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """The JSON schema of one call to any of ``tools``."""
    options = [
        {
            "type": "object",
            "properties": {
                "tool": {"const": tool.name},
                "arguments": _arguments_schema(tool.parameters),
            },
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return options[0] if len(options) == 1 else {"oneOf": options}


def _arguments_schema(parameters: dict[str, Any]) -> dict[str, Any]:
    """The tool's parameters schema, closed: a key the tool does not know cannot be written."""
    schema = dict(parameters or {"type": "object", "properties": {}})
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return schema


def tool_grammar(tools: Sequence[ToolSpec]) -> str:
    """GBNF: spoken text, or one JSON call to one of ``tools``."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    call = json_schema_to_gbnf(json.dumps(call_schema(tools)))
    call, found = _ROOT.subn("call ::=", call)
    if found != 1:
        raise ValueError("llama.cpp's schema converter produced no root rule")
    return f"root ::= say | call\n{_SAY_RULES}{call}\n"


def tool_instructions(tools: Sequence[ToolSpec]) -> str:
    """The system-prompt paragraph that tells the model how to call ``tools``."""
    lines = [
        "You can use these tools. To use one, reply with only a JSON object and nothing else, "
        'like {"tool": "name", "arguments": {...}}. You will then get the result and can answer '
        "the user. Otherwise reply in plain spoken sentences.",
    ]
    for tool in tools:
        params = (tool.parameters or {}).get("properties") or {}
        required = set((tool.parameters or {}).get("required") or [])
        described = ", ".join(
            f"{name}{'' if name in required else ' (optional)'}: "
            f"{spec.get('description') or spec.get('type', 'value')}"
            for name, spec in params.items()
        )
        lines.append(f"- {tool.name}: {tool.description} Arguments: {described or 'none'}.")
    return "\n".join(lines)


def parse_call(text: str, tools: Sequence[ToolSpec]) -> ParsedCall:
    """Read the call the model wrote; a malformed one gets an ``error`` for the model to see."""
    raw = text.strip()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return ParsedCall("", {}, raw, f"the tool call was not valid JSON ({exc}): {raw[:200]}")
    if not isinstance(data, dict):
        return ParsedCall("", {}, raw, "a tool call must be a JSON object")
    name = data.get("tool")
    arguments = data.get("arguments", {})
    known = {t.name for t in tools}
    if not isinstance(name, str) or name not in known:
        return ParsedCall(
            str(name or ""), {}, raw, f"unknown tool {name!r}; use one of: {', '.join(known)}"
        )
    if not isinstance(arguments, dict):
        return ParsedCall(name, {}, raw, "the arguments of a tool call must be a JSON object")
    return ParsedCall(name, arguments, raw)
