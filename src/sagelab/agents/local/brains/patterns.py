"""Intent patterns that one message cannot turn into a stall.

Python's ``re`` backtracks, and it holds the GIL while it does: a pattern that backtracks
badly on a long input freezes every session of the server, not just the one that sent it (a
42 KB typed message against a pattern with two overlapping lazy scans took 2 s). Three things
together keep matching cheap, because none of them is enough alone:

- the text is cut to :data:`MAX_MATCH_CHARS` before any pattern sees it, which turns the
  quadratic cases into a few milliseconds (a spoken turn of 30 s is about 500 characters);
- patterns with a quantifier inside another unbounded quantifier (``(a+)+``, ``(\\w+ ?)*``),
  the shapes that backtrack exponentially, are refused at load, where the error names them;
- every pattern is then tried against adversarial inputs built from its own words (repeated
  up to the cap, ending in a character the pattern cannot take) and refused when one search
  takes longer than :data:`PROBE_BUDGET_S`. The budget is generous (a machine under load must
  not refuse a good pattern); what it catches is the pattern that needs seconds.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator

try:  # the parser moved in 3.11; both spellings parse the same trees
    import re._parser as _sre_parse
    from re._constants import MAXREPEAT
except ImportError:  # pragma: no cover - Python < 3.11 is not supported anyway
    import sre_parse as _sre_parse  # type: ignore[no-redef]
    from sre_constants import MAXREPEAT  # type: ignore[no-redef]

__all__ = ["MAX_MATCH_CHARS", "PROBE_BUDGET_S", "UnsafePattern", "cap_text", "check_pattern"]

#: Characters of a user turn that intent patterns see; the rest is not matched.
MAX_MATCH_CHARS = 1000
#: The longest one probe search may take before the pattern is refused.
PROBE_BUDGET_S = 0.05

_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}
_WORD = re.compile(r"[a-z0-9']+")


class UnsafePattern(ValueError):
    """A pattern that could stall the server; the message says why and how to rewrite it."""


def cap_text(text: str, limit: int = MAX_MATCH_CHARS) -> str:
    """The part of ``text`` patterns are matched against: its first ``limit`` characters,
    cut back to a word boundary so a half word cannot match as a whole one."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > 0 else cut


@functools.lru_cache(maxsize=1024)
def check_pattern(pattern: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    """Compile ``pattern`` or raise ``UnsafePattern`` (or ``re.error``) saying what is wrong.

    Probing takes tens of milliseconds, so a pattern that passed is remembered: a brain is
    built per session, and the check runs once per pattern per process (at server start).
    """
    compiled = re.compile(pattern, flags)
    nested = _nested_repeat(_sre_parse.parse(pattern, flags))
    if nested:
        raise UnsafePattern(
            f"pattern {pattern!r} repeats a group that itself repeats ({nested}); such patterns "
            "backtrack exponentially on text that almost matches. Repeat the inner part once "
            "(e.g. '[\\w ]+' instead of '(\\w+ ?)+')"
        )
    for probe in _probes(pattern):
        took = _search_time(compiled, probe)
        if took > PROBE_BUDGET_S:
            # A busy machine can deschedule one search; a pattern that backtracks is slow
            # every time, so only the fastest of a few tries counts.
            took = min(took, *(_search_time(compiled, probe) for _ in range(4)))
        if took > PROBE_BUDGET_S:
            # Probes grow from 8 characters to the cap, so an exponential pattern shows
            # itself at a length where the search still ends.
            raise UnsafePattern(
                f"pattern {pattern!r} took {took * 1000:.0f} ms on a {len(probe)}-character "
                f"input (limit {PROBE_BUDGET_S * 1000:.0f} ms): it backtracks. Avoid two "
                "unbounded scans that can match the same text ('.*?x.*?y...$'); end the "
                "pattern with a group that always matches ('(?P<value>.+)$')"
            )
    return compiled


def _nested_repeat(tree: object, outer: int = 1) -> str:
    """A description of the first repeat inside another one where either is unbounded
    and both may repeat more than once, or ''. ``outer``: the enclosing repeats' maximum."""
    for op, av in _items(tree):
        if str(op) in _REPEATS and isinstance(av, tuple):
            most = int(av[1])
            if outer > 1 and most > 1 and MAXREPEAT in (outer, most):
                return "a repeated group containing a repeat"
            found = _nested_repeat(av[2], max(outer, most) if most > 1 else outer)
        else:
            found = "".join(_nested_repeat(sub, outer) for sub in _children(av))
        if found:
            return found
    return ""


def _items(tree: object) -> Iterator[tuple[object, object]]:
    data = getattr(tree, "data", tree)
    if isinstance(data, list):
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                yield item


def _children(av: object) -> Iterator[object]:
    """Sub-patterns of a node: groups, branches, lookarounds."""
    if isinstance(av, tuple):
        for part in av:
            if hasattr(part, "data"):
                yield part
            elif isinstance(part, list):  # BRANCH: (None, [alternatives])
                yield from (p for p in part if hasattr(p, "data"))


def _search_time(compiled: re.Pattern[str], probe: str) -> float:
    t0 = time.perf_counter()
    compiled.search(probe)
    return time.perf_counter() - t0


def _probes(pattern: str) -> Iterator[str]:
    """Inputs that make a backtracking pattern show it: its own words, repeated to the cap,
    ending in characters it is unlikely to accept."""
    words = sorted({w for w in _WORD.findall(pattern.lower()) if not _is_escape_word(w)})
    words = [w for w in words if len(w) > 1] or ["a"]
    sentence = " ".join(words) + " 5 "
    bodies = [sentence, *(f"{w} " for w in words), *(f"{w} 5 " for w in words), "a", "a ", "5 "]
    length = 8
    while True:
        for body in bodies:
            repeated = (body * (length // max(1, len(body)) + 1))[: length - 3]
            for tail in ("'s", " '", "!"):
                yield repeated + tail
        if length >= MAX_MATCH_CHARS:
            return
        # Small steps while short: an exponential pattern doubles its time per character.
        length = length + 2 if length < 64 else min(MAX_MATCH_CHARS, length * 2)


def _is_escape_word(word: str) -> bool:
    # Letters of escapes and group syntax ("\b", "\d", "?P<name>"): not words users say.
    return word in {"b", "d", "w", "s", "p", "b'"}
