"""Forgiving ``str.format``-style templates for replies and tool parameters.

Answers are spoken mid-call, where a crash is worse than a gap: a field the tool result or the
transcript did not provide renders as empty text (with a warning in the log for the author)
instead of raising. Field paths reach into JSON results the way the template author reads
them, ``{result.count}`` and ``{result[count]}`` alike, whether the tool returned a mapping or
a JSON string (client tools return strings).
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_FIRST = re.compile(r"[^.\[]*")
_STEP = re.compile(r"\.([^.\[]+)|\[([^\]]*)\]")


class MissingField(Exception):
    """A field path did not resolve; rendered as empty text."""


@dataclass(frozen=True)
class ResultField:
    """A tool result inside templates: ``{result}`` is its text, ``{result.x}`` looks into it."""

    text: str
    data: Any

    @classmethod
    def of(cls, value: Any) -> ResultField:
        text = value if isinstance(value, str) else json.dumps(value)
        data = value
        if isinstance(value, str):
            try:
                data = json.loads(value)
            except ValueError:
                data = None
        return cls(text, data)


def check_template(template: str) -> None:
    """Raise ``ValueError`` for a malformed template, so config errors surface at start-up."""
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        head = _FIRST.match(field)
        if head is None or not head.group() or head.group().isdigit():
            raise ValueError(f"{{{field}}}: positional fields have no value here; name them")


def render(template: str, fields: Mapping[str, Any]) -> str:
    """Fill ``template`` from ``fields``; missing values become "" and are logged."""
    return _Formatter(template).vformat(template, (), fields)


class _Formatter(string.Formatter):
    def __init__(self, template: str) -> None:
        self.template = template

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        try:
            return _resolve(field_name, kwargs), field_name
        except MissingField:
            log.warning(
                "template %r: no value for {%s}; rendered as empty", self.template, field_name
            )
            return None, field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None:
            return ""
        if isinstance(value, ResultField):
            value = value.text
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, dict | list):
            value = json.dumps(value)
        try:
            return format(value, format_spec)
        except (TypeError, ValueError):
            log.warning("template %r: cannot format %r as %r", self.template, value, format_spec)
            return str(value)


def _resolve(field_name: str, fields: Mapping[str, Any]) -> Any:
    first = _FIRST.match(field_name)
    assert first is not None  # the pattern matches the empty string
    if first.group() not in fields:
        raise MissingField(field_name)
    value = fields[first.group()]
    position = first.end()
    while position < len(field_name):
        step = _STEP.match(field_name, position)
        if step is None:
            raise MissingField(field_name)
        value = _step(value, step.group(1) if step.group(1) is not None else step.group(2))
        position = step.end()
    return value


def _step(value: Any, key: str) -> Any:
    if isinstance(value, ResultField):
        value = value.data
    if isinstance(value, Mapping):
        if key in value:
            return value[key]
        raise MissingField(key)
    if isinstance(value, list | tuple) and key.lstrip("-").isdigit():
        try:
            return value[int(key)]
        except IndexError:
            raise MissingField(key) from None
    if value is not None and not key.startswith("_") and hasattr(value, key):
        return getattr(value, key)
    raise MissingField(key)
