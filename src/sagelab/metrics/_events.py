"""What the metric functions accept: one timeline, several, or several by name.

A timeline is a ``sagelab.client.Timeline`` or a plain sequence of ``TimelineEvent`` (what a
notebook or another recorder may hold). Tables over several sessions get a ``session`` column:
the mapping's key, or the position in the sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import pandas as pd

from sagelab.client.timeline import Timeline, TimelineEvent

TimelineLike: TypeAlias = Timeline | Sequence[TimelineEvent]
Timelines: TypeAlias = TimelineLike | Sequence[TimelineLike] | Mapping[Any, TimelineLike]


def events_of(timeline: TimelineLike) -> list[TimelineEvent]:
    if isinstance(timeline, Timeline):
        return list(timeline.events)
    events = list(timeline)
    for e in events[:1]:
        if not isinstance(e, TimelineEvent):
            raise TypeError(
                f"expected a Timeline or a list of TimelineEvent, got a list of "
                f"{type(e).__name__}; load a saved run with Timeline.load(directory)"
            )
    return events


def t0_of(timeline: TimelineLike) -> int | None:
    if isinstance(timeline, Timeline):
        return timeline.t0_ns
    events = events_of(timeline)
    return min((e.t_ns for e in events), default=None)


def named(timelines: Timelines) -> list[tuple[Any, TimelineLike]]:
    """``(session name, timeline)`` pairs from one timeline, a sequence or a mapping."""
    if isinstance(timelines, Timeline):
        return [(0, timelines)]
    if isinstance(timelines, Mapping):
        return list(timelines.items())
    items: list[Any] = list(timelines)
    if not items or isinstance(items[0], TimelineEvent):
        return [(0, items)]  # a single timeline given as its events
    return list(enumerate(items))


def per_session(
    timelines: Timelines,
    build: Callable[[TimelineLike], pd.DataFrame],
    columns: Iterable[str],
) -> pd.DataFrame:
    """Run a one-timeline table builder on each session and stack the results."""
    frames = []
    t0s = []
    for name, tl in named(timelines):
        df = build(tl)
        df.insert(0, "session", [name] * len(df))
        frames.append(df)
        t0 = t0_of(tl)
        if t0 is not None:
            t0s.append(t0)
    non_empty = [f for f in frames if len(f)]
    if non_empty:
        out = pd.concat(non_empty, ignore_index=True) if len(non_empty) > 1 else non_empty[0]
    else:
        out = pd.DataFrame(columns=["session", *columns])
    out.attrs["t0_ns"] = min(t0s) if t0s else None
    return out


def ns_or_nan(value: Any) -> float:
    """A timestamp column value: the int as float, or NaN when absent."""
    return float(value) if isinstance(value, int | float) else float("nan")


def ms_between(start: float, end: float) -> float:
    """Milliseconds from ``start`` to ``end`` (monotonic ns); NaN when either is missing."""
    if start != start or end != end:  # NaN
        return float("nan")
    return (end - start) / 1e6
