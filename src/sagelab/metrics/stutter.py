"""Stutter: a playout model over agent audio chunk arrivals, and real players' reports.

The model is the player a browser or a phone runs: each agent turn is played on its own clock.
Its first chunk starts ``jitter_buffer_ms`` after it arrives; every next chunk plays right after
the one before if it has arrived by then. If it has not, the player has run dry (an
*underrun*): it waits for the chunk and, like the start, plays it ``jitter_buffer_ms`` after it
arrives. An ``interruption`` flushes the turn: nothing scheduled after it is played, and chunks
arriving after it (stale) are dropped. Gaps between turns are turn-taking, not stutter.

Per turn (``Playout.turns``):

``playback_start_delay_ms``
    first chunk received → first sample played (the jitter buffer, for the model).
``audio_ms``, ``gap_ms``, ``underruns``
    audio played, total time the player was starved mid-turn, and how often.
``stutter_ratio``
    ``gap_ms / (gap_ms + audio_ms)``: the share of the turn's playout spent in silence that
    should have been speech (the analogue of WebRTC's concealed-samples ratio).
``underruns_per_min``
    underruns per minute of playout (audio + gaps).
``prebuffer_needed_ms``
    the smallest start delay that would have avoided every gap of the turn:
    ``max_k(arrival_k − arrival_0 − audio before chunk k)``, at least 0.

``Playout.underruns`` has one row per gap: when the player ran dry (``t_ns``), for how long
(``gap_ms``), and how much of the turn had played (``at_audio_ms``).

Real measurements from a player (``player_playout``) fill the same table from the player's
``playback_start`` / ``playback_underrun`` / ``playback_end`` reports, so a notebook session can
be compared with the model run on the same chunks.

The model on the network arrivals (``chunk_table``) is not what a player in a notebook gets:
its chunks reach the browser through Jupyter's widget messages, later and with more jitter. A
player's ``playback_end`` reports list when each chunk reached it (``arrivals_ms``,
``durations_ms``); ``delivered_chunk_table`` turns them into a chunk table, so ``playout`` can run
on the arrivals the player really had. The model on delivered chunks minus the model on network
chunks is what the message path added; the player against the model on delivered chunks is the
player's fidelity to the rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeGuard

import pandas as pd

from sagelab.client.timeline import Timeline, TimelineEvent
from sagelab.metrics._events import TimelineLike, Timelines, events_of, named, per_session
from sagelab.metrics.summary import summarize_values

NAN = float("nan")
CHUNK_COLUMNS = (
    "event_id",
    "seq",
    "t_ns",
    "duration_ms",
    "samples",
    "stale",
    "interarrival_ms",
    "interrupted_ns",
)
PLAYOUT_COLUMNS = (
    "session",
    "event_id",
    "source",
    "jitter_buffer_ms",
    "chunks",
    "first_arrival_ns",
    "playback_start_ns",
    "playback_end_ns",
    "playback_start_delay_ms",
    "audio_ms",
    "gap_ms",
    "underruns",
    "stutter_ratio",
    "underruns_per_min",
    "prebuffer_needed_ms",
    "flushed",
)
UNDERRUN_COLUMNS = ("session", "event_id", "source", "t_ns", "gap_ms", "resume_ns", "at_audio_ms")
PLAYER_EVENTS = ("playback_start", "playback_underrun", "playback_end")


def chunk_table(timelines: Timelines) -> pd.DataFrame:
    """One row per agent audio chunk received: arrival, duration, whether it was stale (its
    turn had already been interrupted), and the turn's interruption time if it was cut."""
    return per_session(timelines, _chunk_table, CHUNK_COLUMNS)


def _chunk_table(timeline: TimelineLike) -> pd.DataFrame:
    events = events_of(timeline)
    cuts: dict[int, int] = {}
    for e in events:
        if e.type == "interruption" and e.direction == "recv" and isinstance(e.event_id, int):
            cuts.setdefault(e.event_id, e.t_ns)
    rows = []
    last: dict[Any, int] = {}
    seq: dict[Any, int] = {}
    for e in sorted((e for e in events if e.type == "audio" and e.direction == "recv"),
                    key=lambda e: e.t_ns):  # fmt: skip
        key = e.event_id
        prev = last.get(key)
        cut = cuts.get(key) if isinstance(key, int) else None
        samples = int(e.data.get("samples", 0))
        rows.append(
            {
                "event_id": key,
                "seq": seq.get(key, 0),
                "t_ns": float(e.t_ns),
                "duration_ms": float(e.data.get("duration_s", samples / 16_000)) * 1000,
                "samples": samples,
                "stale": bool(e.data.get("stale", False)) or (cut is not None and e.t_ns > cut),
                "interarrival_ms": (e.t_ns - prev) / 1e6 if prev is not None else NAN,
                "interrupted_ns": float(cut) if cut is not None else NAN,
            }
        )
        last[key] = e.t_ns
        seq[key] = seq.get(key, 0) + 1
    return pd.DataFrame(rows, columns=list(CHUNK_COLUMNS))


@dataclass(frozen=True)
class Playout:
    """Stutter per agent turn (``turns``) and every underrun (``underruns``)."""

    turns: pd.DataFrame
    underruns: pd.DataFrame
    jitter_buffer_ms: float | None
    source: str  # "model" or "player"

    @property
    def audio_ms(self) -> float:
        return float(self.turns["audio_ms"].sum()) if len(self.turns) else 0.0

    @property
    def gap_ms(self) -> float:
        return float(self.turns["gap_ms"].sum()) if len(self.turns) else 0.0

    @property
    def underrun_count(self) -> int:
        return int(self.turns["underruns"].sum()) if len(self.turns) else 0

    @property
    def stutter_ratio(self) -> float:
        """All gaps over all playout time (gaps + audio), pooled across turns."""
        total = self.audio_ms + self.gap_ms
        return self.gap_ms / total if total > 0 else NAN

    @property
    def underruns_per_min(self) -> float:
        total = self.audio_ms + self.gap_ms
        return self.underrun_count / (total / 60_000) if total > 0 else NAN

    @property
    def prebuffer_needed_ms(self) -> float:
        """The largest pre-buffer any turn needed to play without a gap."""
        values = self.turns["prebuffer_needed_ms"].dropna() if len(self.turns) else []
        return float(max(values)) if len(values) else NAN

    def summary(self) -> dict[str, Any]:
        """The pooled figures plus p50/p95/p99 of the per-turn ones (for JSON reports)."""
        return {
            "source": self.source,
            "jitter_buffer_ms": self.jitter_buffer_ms,
            "turns": len(self.turns),
            "audio_ms": round(self.audio_ms, 3),
            "gap_ms": round(self.gap_ms, 3),
            "underruns": self.underrun_count,
            "stutter_ratio": self.stutter_ratio,
            "underruns_per_min": self.underruns_per_min,
            "prebuffer_needed_ms": self.prebuffer_needed_ms,
            "gap_length_ms": summarize_values(self.underruns["gap_ms"]),
            "playback_start_delay_ms": summarize_values(self.turns["playback_start_delay_ms"]),
        }


def playout(
    chunks: pd.DataFrame | Timelines,
    jitter_buffer_ms: float = 0.0,
) -> Playout:
    """Run the playout model over received audio chunks.

    ``chunks`` is a ``chunk_table`` (or any DataFrame with ``event_id``, ``t_ns`` and
    ``duration_ms``; optional ``session``, ``stale`` and ``interrupted_ns``), or timelines, whose
    chunk table is built first. ``jitter_buffer_ms`` ≥ 0 delays the start of each turn and each
    restart after an underrun; 0 is an ideal player that plays everything as soon as it can.
    """
    if jitter_buffer_ms < 0:
        raise ValueError(f"jitter_buffer_ms must be >= 0, got {jitter_buffer_ms}")
    if not isinstance(chunks, pd.DataFrame):
        chunks = chunk_table(chunks)
    missing = {"event_id", "t_ns", "duration_ms"} - set(chunks.columns)
    if missing:
        raise ValueError(
            f"playout needs chunk columns event_id, t_ns and duration_ms; missing "
            f"{sorted(missing)}: build the table with sagelab.metrics.chunk_table(timeline)"
        )
    df = chunks.copy()
    if "session" not in df.columns:
        df["session"] = 0
    turn_rows: list[dict[str, Any]] = []
    gap_rows: list[dict[str, Any]] = []
    buffer_ns = jitter_buffer_ms * 1e6
    for (session, event_id), group in df.groupby(["session", "event_id"], sort=False, dropna=False):
        row, gaps = _play_turn(group.sort_values("t_ns", kind="stable"), buffer_ns)
        if row is None:
            continue
        base = {"session": session, "event_id": event_id, "source": "model"}
        turn_rows.append({**base, "jitter_buffer_ms": float(jitter_buffer_ms), **row})
        gap_rows += [{**base, **g} for g in gaps]
    turns = pd.DataFrame(turn_rows, columns=list(PLAYOUT_COLUMNS))
    underruns = pd.DataFrame(gap_rows, columns=list(UNDERRUN_COLUMNS))
    turns.attrs["t0_ns"] = chunks.attrs.get("t0_ns")
    return Playout(turns, underruns, float(jitter_buffer_ms), "model")


def _play_turn(
    group: pd.DataFrame, buffer_ns: float
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    cut = NAN
    if "interrupted_ns" in group.columns:
        cuts = group["interrupted_ns"].dropna()
        cut = float(cuts.iloc[0]) if len(cuts) else NAN
    flushed = cut == cut
    arrivals = group["t_ns"].to_numpy(dtype=float)
    durations = group["duration_ms"].to_numpy(dtype=float) * 1e6
    stale = group["stale"].to_numpy(dtype=bool) if "stale" in group.columns else None
    keep = [
        i
        for i in range(len(group))
        if not (stale is not None and stale[i]) and not (flushed and arrivals[i] > cut)
    ]
    if not keep:
        return None, []
    a0 = arrivals[keep[0]]
    segments: list[tuple[float, float]] = []  # when each chunk plays
    holes: list[tuple[float, float]] = []  # when the player was starved
    end: float | None = None
    prebuffer = queued = 0.0  # queued: audio before chunk k
    for i in keep:
        a, d = arrivals[i], durations[i]
        prebuffer = max(prebuffer, a - a0 - queued)
        queued += d
        if end is None:
            start = a + buffer_ns
        elif a > end:
            start = a + buffer_ns
            holes.append((end, start))
        else:
            start = end
        end = start + d
        segments.append((start, end))
    limit = cut if flushed else float("inf")  # an interruption flushes what is scheduled
    played = 0.0
    gaps: list[dict[str, Any]] = []
    gap = 0.0
    for hole_start, hole_end in holes:
        if hole_start >= limit:
            break
        stop = min(hole_end, limit)
        before = sum(max(0.0, min(e, hole_start) - s) for s, e in segments)
        gaps.append(
            {"t_ns": hole_start, "gap_ms": (stop - hole_start) / 1e6, "resume_ns": hole_end,
             "at_audio_ms": before / 1e6}
        )  # fmt: skip
        gap += stop - hole_start
    played = sum(max(0.0, min(e, limit) - s) for s, e in segments)
    start0 = segments[0][0]
    assert end is not None
    audio_ms, gap_ms = played / 1e6, gap / 1e6
    total = audio_ms + gap_ms
    row = {
        "chunks": len(keep),
        "first_arrival_ns": a0,
        "playback_start_ns": start0,
        "playback_end_ns": max(start0, min(end, limit)),
        "playback_start_delay_ms": (start0 - a0) / 1e6,
        "audio_ms": audio_ms,
        "gap_ms": gap_ms,
        "underruns": len(gaps),
        "stutter_ratio": gap_ms / total if total > 0 else NAN,
        "underruns_per_min": len(gaps) / (total / 60_000) if total > 0 else NAN,
        "prebuffer_needed_ms": prebuffer / 1e6,
        "flushed": flushed,
    }
    return row, gaps


PlayerReports: TypeAlias = Timelines | Iterable[Mapping[str, Any]] | pd.DataFrame


def _player_records(reports: PlayerReports) -> tuple[list[dict[str, Any]], bool]:
    """The player's reports as records with a ``session`` key, and whether they came from
    timelines (whose chunk table then gives the network arrivals)."""
    if isinstance(reports, pd.DataFrame):
        records = reports.to_dict("records")
        if "session" not in reports.columns:
            for r in records:
                r["session"] = 0
        return records, False
    if _is_timelines(reports):
        records = []
        for name, tl in named(reports):  # type: ignore[arg-type]
            for e in events_of(tl):
                if e.direction == "local" and e.type in PLAYER_EVENTS:
                    records.append(
                        {**e.data, "type": e.type, "event_id": e.event_id, "t_ns": e.t_ns,
                         "session": name}
                    )  # fmt: skip
        return records, True
    return [{"session": 0, **dict(r)} for r in reports], False  # type: ignore[arg-type]


def delivered_chunk_table(reports: PlayerReports) -> pd.DataFrame:
    """The chunks as the player got them: one row per chunk listed in its ``playback_end``
    reports, with ``chunk_table``'s columns (and ``session``), for ``playout``.

    In a notebook the agent's audio reaches the browser through Jupyter's widget messages,
    which add delay and jitter that the kernel's network arrival times never show; the model
    on this table is the rule the player should have followed on what it really received.
    ``t_ns`` is the player's arrival time (``arrivals_ms``, ``performance.now()``) put on the
    report's clock: the kernel's when the report has ``t_ns`` and ``browser_ms`` (and was placed
    with a synced clock), else the browser's. A turn's last end report has all of it (a turn
    that ends, gets more audio and ends again reports everything twice). Turns whose end has
    not been reported, or whose reports list no chunks, have no rows. A flushed turn's
    ``interrupted_ms`` (when the flush came) becomes ``interrupted_ns``. How many chunks the
    player left out of its lists (it lists at most a few thousand per turn) is in
    ``df.attrs["chunks_left_off"]``.
    """
    records, _ = _player_records(reports)
    ends: dict[tuple[Any, Any], dict[str, Any]] = {}
    for r in records:
        if r.get("type") == "playback_end" and _listed(r.get("arrivals_ms")):
            ends[(r["session"], r.get("event_id"))] = r
    rows: list[dict[str, Any]] = []
    left_off = 0
    for (session, event_id), r in ends.items():
        arrivals = [float(a) for a in r["arrivals_ms"]]
        listed = r.get("durations_ms")
        durations = [float(d) for d in listed] if _listed(listed) else []
        if len(durations) != len(arrivals):
            raise ValueError(
                f"playback_end of turn {event_id} lists {len(arrivals)} arrivals_ms but "
                f"{len(durations)} durations_ms: one of each per chunk"
            )
        if _number(r.get("arrivals_left_off")):
            left_off += int(r["arrivals_left_off"])
        offset_ns = 0.0  # browser ms → the report's clock
        t_ns, browser_ms = r.get("t_ns"), r.get("browser_ms")
        if _number(t_ns) and _number(browser_ms) and r.get("clock_synced", True) is not False:
            offset_ns = float(t_ns) - float(browser_ms) * 1e6
        cut = r.get("interrupted_ms")
        cut_ns = float(cut) * 1e6 + offset_ns if r.get("flushed") and _number(cut) else NAN
        order = sorted(range(len(arrivals)), key=arrivals.__getitem__)
        prev: float | None = None
        for seq, i in enumerate(order):
            t = arrivals[i] * 1e6 + offset_ns
            rows.append(
                {
                    "session": session,
                    "event_id": event_id,
                    "seq": seq,
                    "t_ns": t,
                    "duration_ms": durations[i],
                    "samples": round(durations[i] * 16),
                    "stale": False,
                    "interarrival_ms": (t - prev) / 1e6 if prev is not None else NAN,
                    "interrupted_ns": cut_ns,
                }
            )
            prev = t
    table = pd.DataFrame(rows, columns=["session", *CHUNK_COLUMNS])
    table.attrs["chunks_left_off"] = left_off
    return table


def _listed(value: Any) -> TypeGuard[list[Any] | tuple[Any, ...]]:
    return isinstance(value, list | tuple) and len(value) > 0


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def player_playout(
    reports: PlayerReports,
    chunks: pd.DataFrame | None = None,
) -> Playout:
    """The ``Playout`` table from a real player's reports instead of the model.

    ``reports`` are ``playback_start`` / ``playback_underrun`` / ``playback_end`` records (see
    ``sagelab.metrics``): as ``local`` events in timelines (their chunk table is then used for
    arrival times), or as dicts / a DataFrame with a ``type`` column. ``chunks`` (a
    ``chunk_table``) gives first arrivals and the pre-buffer each turn needed; without it those
    columns are NaN.
    """
    records, from_timelines = _player_records(reports)
    if from_timelines and chunks is None:
        chunks = chunk_table(reports)  # type: ignore[arg-type]
    for r in records:
        if r.get("type") not in PLAYER_EVENTS:
            raise ValueError(
                f"player report of unknown type {r.get('type')!r}: expected one of "
                f"{', '.join(PLAYER_EVENTS)}"
            )
        if r["type"] == "playback_underrun" and r.get("gap_ms") is None:
            raise ValueError("a playback_underrun report needs gap_ms (how long it was silent)")
    model = playout(chunks) if chunks is not None and len(chunks) else None
    model_rows = (
        {(r["session"], r["event_id"]): r for r in model.turns.to_dict("records")} if model else {}
    )
    turn_rows = []
    gap_rows = []
    keys = list(dict.fromkeys((r["session"], r.get("event_id")) for r in records))
    for session, event_id in keys:
        mine = [r for r in records if r["session"] == session and r.get("event_id") == event_id]
        start = next((r for r in mine if r["type"] == "playback_start"), None)
        # A player may report a turn's end more than once (each time its queue drains); the
        # last report has the whole count.
        end = next((r for r in reversed(mine) if r["type"] == "playback_end"), None)
        underruns = [r for r in mine if r["type"] == "playback_underrun"]
        gap_ms = float(sum(float(r["gap_ms"]) for r in underruns))
        audio_ms = float(end["played_ms"]) if end and end.get("played_ms") is not None else NAN
        total = audio_ms + gap_ms
        ref = model_rows.get((session, event_id), {})
        first = ref.get("first_arrival_ns", NAN)
        start_ns = float(start["t_ns"]) if start and start.get("t_ns") is not None else NAN
        turn_rows.append(
            {
                "session": session,
                "event_id": event_id,
                "source": "player",
                "jitter_buffer_ms": NAN,
                "chunks": ref.get("chunks", NAN),
                "first_arrival_ns": first,
                "playback_start_ns": start_ns,
                "playback_end_ns": float(end["t_ns"]) if end and end.get("t_ns") else NAN,
                "playback_start_delay_ms": (start_ns - first) / 1e6,
                "audio_ms": audio_ms,
                "gap_ms": gap_ms,
                "underruns": len(underruns),
                "stutter_ratio": gap_ms / total if total > 0 else NAN,
                "underruns_per_min": len(underruns) / (total / 60_000) if total > 0 else NAN,
                "prebuffer_needed_ms": ref.get("prebuffer_needed_ms", NAN),
                "flushed": bool(end.get("flushed", False)) if end else False,
            }
        )
        for r in underruns:
            t = r.get("t_ns")
            gap_rows.append(
                {
                    "session": session,
                    "event_id": event_id,
                    "source": "player",
                    "t_ns": float(t) if t is not None else NAN,
                    "gap_ms": float(r["gap_ms"]),
                    "resume_ns": float(t) + float(r["gap_ms"]) * 1e6 if t is not None else NAN,
                    "at_audio_ms": float(r.get("at_audio_ms", NAN)),
                }
            )
    return Playout(
        pd.DataFrame(turn_rows, columns=list(PLAYOUT_COLUMNS)),
        pd.DataFrame(gap_rows, columns=list(UNDERRUN_COLUMNS)),
        None,
        "player",
    )


def _is_timelines(value: Any) -> bool:
    if isinstance(value, Timeline):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(v, Timeline | list | tuple) for v in value.values()) and bool(value)
    if isinstance(value, list | tuple) and value:
        first = value[0]
        return isinstance(first, Timeline | TimelineEvent) or (
            isinstance(first, list | tuple) and bool(first) and isinstance(first[0], TimelineEvent)
        )
    return False
