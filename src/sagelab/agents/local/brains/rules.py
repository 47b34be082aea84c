"""``rules``: the default offline brain, deterministic intents from the agents file.

It makes the whole voice pipeline (and tool calling) testable and benchmarkable without an
LLM: the same words always give the same tool call and the same answer, so a benchmark
measures the transport and the models, not sampling luck. Options::

    brain: rules
    brain_options:
      intents:                       # tried in order; the first pattern that matches wins
        - name: search
          patterns:                  # Python regexes, case-insensitive, re.search()ed
            - "\\b(?:search|find|look up|look for)\\b(?: for)? (?P<query>.+)"
          tool: search_records       # optional; must be one of the agent's tools
          parameters: {query: "{query}"}          # templates, nested mappings/lists allowed
          answer: "I found {result.count} records matching {query}. {result.summary}"
          error_answer: "Sorry, I could not search: {error}"   # optional
      fallback: "Sorry, I can search records, read one, or update one."
      variables: {}                  # extra template fields, e.g. the session's dynamic variables

Patterns see the transcript normalised by ``brains.text.normalise_transcript``: lowercase, no
punctuation, spelled-out numbers as digits. "Look up record number five." is matched as
"look up record number 5", so ``record (?:number )?(?P<id>\\d+)`` catches both spellings. The
named groups' values are taken from that normal form too (lowercase, digits), stripped. Only
the first ``patterns.MAX_MATCH_CHARS`` characters of a turn are matched, and a pattern that
backtracks badly is refused when the agents file is loaded (see ``brains.patterns``).

Templates are ``str.format`` strings (``{{`` for a literal brace) over the named groups and
``variables`` (a group wins over a variable of the same name); answers also get ``{result}``
(the tool result's text), ``{result.field}`` or ``{result[field]}`` (into a JSON result, nested
paths allowed) and ``{error}`` (the failure message, empty on success). ``parameters`` are
rendered as strings: converting ``"5"`` to the schema's integer is the tool layer's job. A field
without a value renders as empty text and logs a warning. When the tool fails, ``error_answer``
is spoken, or "Sorry, I could not do that: {error}" if none is given. Answers are yielded
sentence by sentence. The greeting is not the brain's job (``first_message``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sagelab.agents.base import ToolResult
from sagelab.agents.local.brain import Brain, ChatMessage, ToolCaller
from sagelab.agents.local.brains.options import parse_options
from sagelab.agents.local.brains.patterns import (
    MAX_MATCH_CHARS,
    UnsafePattern,
    cap_text,
    check_pattern,
)
from sagelab.agents.local.brains.templates import ResultField, check_template, render
from sagelab.agents.local.brains.text import normalise_transcript, split_sentences
from sagelab.config import ToolSpec

log = logging.getLogger(__name__)

DEFAULT_ERROR_ANSWER = "Sorry, I could not do that: {error}"
DEFAULT_FALLBACK = "Sorry, I did not understand that."
#: How long matching one turn may take before the brain gives up and answers the fallback.
MATCH_TIMEOUT_S = 1.0
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?])")


class IntentOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    patterns: list[str] = Field(min_length=1)
    tool: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    answer: str
    error_answer: str | None = None

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                check_pattern(pattern)
            except UnsafePattern:
                raise
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regex: {exc}") from exc
        return patterns

    @field_validator("answer", "error_answer")
    @classmethod
    def _template(cls, template: str | None) -> str | None:
        if template is not None:
            _check(template)
        return template

    @field_validator("parameters")
    @classmethod
    def _parameter_templates(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        _check_nested(parameters)
        return parameters


class RulesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    intents: list[IntentOptions] = Field(default_factory=list)
    fallback: str = DEFAULT_FALLBACK
    variables: dict[str, Any] = Field(default_factory=dict)

    @field_validator("fallback")
    @classmethod
    def _template(cls, template: str) -> str:
        _check(template)
        return template


@dataclass(frozen=True)
class Intent:
    name: str
    patterns: tuple[re.Pattern[str], ...]
    tool: str | None
    parameters: dict[str, Any]
    answer: str
    error_answer: str

    @classmethod
    def from_options(cls, options: IntentOptions) -> Intent:
        return cls(
            name=options.name,
            patterns=tuple(re.compile(p, re.IGNORECASE) for p in options.patterns),
            tool=options.tool,
            parameters=options.parameters,
            answer=options.answer,
            error_answer=options.error_answer or DEFAULT_ERROR_ANSWER,
        )

    def match(self, text: str) -> re.Match[str] | None:
        return next((m for p in self.patterns if (m := p.search(text))), None)


class RulesBrain(Brain):
    def __init__(
        self,
        intents: Sequence[Intent],
        fallback: str = DEFAULT_FALLBACK,
        variables: dict[str, Any] | None = None,
    ) -> None:
        self.intents = tuple(intents)
        self.fallback = fallback
        self.variables = dict(variables or {})

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RulesBrain:
        parsed = parse_options(RulesOptions, options, "rules")
        intents = [Intent.from_options(i) for i in parsed.intents]
        return cls(intents, parsed.fallback, parsed.variables)

    async def respond(
        self,
        history: Sequence[ChatMessage],
        *,
        system_prompt: str,
        tools: Sequence[ToolSpec],
        call_tool: ToolCaller,
    ) -> AsyncIterator[str]:
        heard = history[-1].content if history and history[-1].role == "user" else ""
        found = await self._match(heard)
        if found is not None:
            answer = await self._answer(found[0], found[1], tools, call_tool)
        else:
            answer = render(self.fallback, self.variables)
        for sentence in split_sentences(_tidy(answer)):
            yield sentence

    async def _match(self, heard: str) -> tuple[Intent, re.Match[str]] | None:
        """The first intent that matches, found off the event loop and within a time limit.

        The text is capped before normalising or matching (``patterns.cap_text``), and the
        patterns were checked at load; the thread and the timeout are the last line: a turn
        whose matching takes too long gets the fallback instead of holding the session.
        """
        text = heard[: 4 * MAX_MATCH_CHARS]  # punctuation that normalising drops included
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._match_now, text), timeout=MATCH_TIMEOUT_S
            )
        except TimeoutError:
            log.warning("intent matching took over %g s; answering the fallback", MATCH_TIMEOUT_S)
            return None

    def _match_now(self, heard: str) -> tuple[Intent, re.Match[str]] | None:
        text = cap_text(normalise_transcript(heard))
        for intent in self.intents:
            match = intent.match(text)
            if match is not None:
                log.debug("intent %s matched %r", intent.name, text)
                return intent, match
        log.debug("no intent matched %r", text)
        return None

    async def _answer(
        self,
        intent: Intent,
        match: re.Match[str],
        tools: Sequence[ToolSpec],
        call_tool: ToolCaller,
    ) -> str:
        fields: dict[str, Any] = dict(self.variables)
        for name, value in match.groupdict().items():
            # An optional group that did not take part must not hide a variable of that name.
            if value is not None or name not in fields:
                fields[name] = value.strip() if value is not None else None
        if intent.tool is None:
            return render(intent.answer, fields)
        parameters = _render_nested(intent.parameters, fields)
        if not any(t.name == intent.tool for t in tools):
            log.warning(
                "intent %s: tool %r is not one of the agent's tools", intent.name, intent.tool
            )
            result = ToolResult("", f"the tool {intent.tool} is not available", is_error=True)
        else:
            result = await call_tool(intent.tool, parameters)
        if result.is_error:
            fields.update(result=ResultField("", None), error=result.text)
            return render(intent.error_answer, fields)
        fields.update(result=ResultField.of(result.value), error="")
        return render(intent.answer, fields)


def _tidy(text: str) -> str:
    """Close the gaps empty fields leave ("Hi , welcome." → "Hi, welcome.")."""
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(text.split()))


def _render_nested(value: Any, fields: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return render(value, fields)
    if isinstance(value, dict):
        return {k: _render_nested(v, fields) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_nested(v, fields) for v in value]
    return value


def _check(template: str) -> None:
    try:
        check_template(template)
    except ValueError as exc:
        raise ValueError(f"template {template!r}: {exc}") from exc


def _check_nested(value: Any) -> None:
    if isinstance(value, str):
        _check(value)
    elif isinstance(value, dict):
        for item in value.values():
            _check_nested(item)
    elif isinstance(value, list):
        for item in value:
            _check_nested(item)
