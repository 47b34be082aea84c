"""Read a tool's description and its parameters' descriptions out of a Python docstring.

An agent decides whether and how to call a tool from these texts alone, so ``@tool`` takes them
from where a Python author already writes them (Google ``Args:``, NumPy ``Parameters``, or Sphinx
``:param x:``) instead of asking for them twice. The parser is deliberately small: it
understands the section layouts, not reStructuredText.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

__all__ = ["Docstring", "parse_docstring"]

_GOOGLE_ARGS = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters):\s*$"
)
_GOOGLE_ANY = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")
_GOOGLE_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ARGS = {"Parameters", "Other Parameters", "Keyword Arguments"}
_NUMPY_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?::.*)?$")
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_SPHINX_ANY = re.compile(r"^:\w+")


@dataclass(frozen=True)
class Docstring:
    """The prose before the first section, and one description per documented parameter."""

    description: str = ""
    params: dict[str, str] = field(default_factory=dict)


def parse_docstring(doc: str | None) -> Docstring:
    if not doc:
        return Docstring()
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    prose_end = len(lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_numpy_header(lines, i):
            prose_end = min(prose_end, i)
            end = _numpy_section_end(lines, i + 2)
            if line.strip() in _NUMPY_ARGS:
                params.update(_numpy_entries(lines[i + 2 : end]))
            i = end
        elif _GOOGLE_ANY.match(line):
            prose_end = min(prose_end, i)
            end = _google_section_end(lines, i + 1)
            if _GOOGLE_ARGS.match(line):
                params.update(_indented_entries(lines[i + 1 : end], _GOOGLE_ENTRY))
            i = end
        elif _SPHINX_ANY.match(line):
            prose_end = min(prose_end, i)
            end = _google_section_end(lines, i + 1)
            params.update(_indented_entries(lines[i:end], _SPHINX_PARAM))
            i = end
        else:
            i += 1
    return Docstring(_paragraphs(lines[:prose_end]), params)


def _is_numpy_header(lines: list[str], i: int) -> bool:
    nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
    return bool(lines[i].strip()) and len(nxt) >= 3 and set(nxt) == {"-"}


def _numpy_section_end(lines: list[str], start: int) -> int:
    return next((j for j in range(start, len(lines)) if _is_numpy_header(lines, j)), len(lines))


def _google_section_end(lines: list[str], start: int) -> int:
    """A section runs until the next line that starts at the left margin."""
    for j in range(start, len(lines)):
        line = lines[j]
        if line.strip() and not line[0].isspace() and not _SPHINX_PARAM.match(line):
            return j
        if _SPHINX_ANY.match(line) and not _SPHINX_PARAM.match(line):
            return j
    return len(lines)


def _indented_entries(lines: list[str], entry: re.Pattern[str]) -> dict[str, str]:
    """Entries start at the shallowest indentation; deeper lines continue the previous one."""
    margin = min((_indent(x) for x in lines if x.strip()), default=0)
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if not line.strip():
            continue
        match = entry.match(line.strip()) if _indent(line) == margin else None
        if match:
            current = found.setdefault(match.group(1), [])
            if match.group(2).strip():
                current.append(match.group(2).strip())
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(words) for name, words in found.items()}


def _numpy_entries(lines: list[str]) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if not line.strip():
            continue
        match = _NUMPY_ENTRY.match(line) if _indent(line) == 0 else None
        if match:
            current = found.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(words) for name, words in found.items()}


def _paragraphs(lines: list[str]) -> str:
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return "\n\n".join(" ".join(p) for p in paragraphs if p)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
