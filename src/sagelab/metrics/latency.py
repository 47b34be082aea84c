"""Latency tables: one row per agent turn, per tool call, per round-trip sample.

Every latency is the difference of two timeline stamps taken at the client's socket edge
(``time.monotonic_ns()`` when a frame was sent or received), so it is what the user of that
client experienced, network included. Start and end points, per agent turn:

``voice_to_voice_ms``
    end of the user's speech in the audio actually sent (the send time of the chunk holding
    the last speech sample: the recording's trailing silence is not speech) → the first audio
    chunk of the agent's reply received.
``ttfa_ms`` (time to first audio)
    the end of the user turn as the server saw it (its final ``user_transcript`` received; for
    a typed turn, the ``user_message`` sent) → the reply's first audio chunk received. It
    leaves out the server's endpointing and speech-to-text, which voice-to-voice includes.
``transcript_ms``
    end of speech sent → the final ``user_transcript`` received (endpointing + STT).
``agent_text_ms``
    end of the user's input (end of speech, or the ``user_message`` sent) → the reply's first
    text received (``agent_response`` or a streamed ``agent_chat_response_part``).
``interruption_ms``
    onset of the barge-in speech (the send time of the chunk holding its first speech sample)
    → the ``interruption`` event for the turn it cut received.
``interruption_audio_ms``
    the same onset → the last audio chunk of the interrupted turn received (0 when none came
    after the onset): how long the agent's audio kept arriving.
``stage_<name>_ms``
    the server's own per-stage timings for the turn (``internal_sagelab_stage`` events, asked
    for with ``Session.connect(..., stages=True)``); a stage reported twice in one turn (two
    tool calls) is summed.

Which user input a turn answers: the latest input (a ``user_speech`` marker from
``Session.send_audio``, or a ``user_message`` sent) that ended before the turn's final
transcript arrived (or, without a transcript, before its first event), and that no earlier
turn answered. A greeting therefore has no user input and ``NaN`` latencies; of a pause that
made the server split one utterance into two turns, only the second is measured from the end
of speech. The barge-in of an interrupted turn is the latest speech input that started before
the ``interruption`` event.

Tool calls: a client tool's duration runs from ``client_tool_call`` received to
``client_tool_result`` sent (the client's own work); a server tool's from
``agent_tool_request`` to ``agent_tool_response`` received (the server's work). Round trips:
``ping_ms`` is the server's own measurement of the previous ping → pong (whole milliseconds,
as in the protocol); ``ws_rtt`` is a WebSocket ping frame timed by the client
(``Session.measure_rtt``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sagelab.client.timeline import TimelineEvent
from sagelab.metrics._events import (
    TimelineLike,
    Timelines,
    events_of,
    ms_between,
    per_session,
)

NAN = float("nan")
STAGE_EVENT = "internal_sagelab_stage"
_AGENT_TEXT = ("agent_response", "agent_chat_response_part")
_TOOL_CALLS = ("client_tool_call", "agent_tool_request")

TURN_COLUMNS = (
    "event_id",
    "user_input",
    "user_speech_start_ns",
    "user_speech_end_ns",
    "user_text_sent_ns",
    "user_transcript_ns",
    "agent_text_ns",
    "first_audio_ns",
    "last_audio_ns",
    "interruption_ns",
    "barge_in_ns",
    "voice_to_voice_ms",
    "ttfa_ms",
    "transcript_ms",
    "agent_text_ms",
    "interrupted",
    "interruption_ms",
    "interruption_audio_ms",
    "audio_ms",
    "audio_chunks",
    "stale_chunks",
    "tool_calls",
    "tool_errors",
    "tools",
    "user_text",
    "agent_text",
    "corrected_text",
)
TOOL_COLUMNS = (
    "event_id",
    "tool_call_id",
    "name",
    "kind",
    "parameters",
    "call_ns",
    "result_ns",
    "duration_ms",
    "answered",
    "is_error",
)
PING_COLUMNS = ("source", "event_id", "t_ns", "rtt_ms")


@dataclass
class _UserInput:
    kind: str  # "speech" | "text"
    start_ns: int
    end_ns: int
    text: str | None = None
    claimed: bool = False


@dataclass
class _Turn:
    event_id: int
    events: list[TimelineEvent] = field(default_factory=list)

    def first(self, *types: str, direction: str = "recv") -> TimelineEvent | None:
        found = [e for e in self.events if e.type in types and e.direction == direction]
        return min(found, key=lambda e: e.t_ns) if found else None


def turn_table(timelines: Timelines) -> pd.DataFrame:
    """One row per agent turn (``event_id``): latencies, interruption, tools, stages, texts.

    Several timelines (a list or a name → timeline mapping) give one table with a ``session``
    column. Column meanings are in this module's docstring.
    """
    table = per_session(timelines, _turn_table, TURN_COLUMNS)
    stage_cols = sorted(c for c in table.columns if str(c).startswith("stage_"))
    if stage_cols:  # sessions with different stages: keep the columns in one stable order
        base = [c for c in table.columns if c not in stage_cols]
        table = table[base + stage_cols]
    return table


def _turn_table(timeline: TimelineLike) -> pd.DataFrame:
    events = events_of(timeline)
    inputs = _user_inputs(events)
    turns = _agent_turns(events)
    results = _tool_results(events)
    rows = []
    for turn in sorted(turns.values(), key=lambda t: min(e.t_ns for e in t.events)):
        rows.append(_turn_row(turn, inputs, results))
    df = pd.DataFrame(rows, columns=[*TURN_COLUMNS, *_stage_columns(rows)])
    return df


def _stage_columns(rows: list[dict[str, Any]]) -> list[str]:
    names: set[str] = set()
    for row in rows:
        names.update(k for k in row if k.startswith("stage_"))
    return sorted(names)


def _user_inputs(events: list[TimelineEvent]) -> list[_UserInput]:
    inputs = []
    for e in events:
        if e.type == "user_speech" and e.direction == "local":
            start, end = e.data.get("speech_start_ns"), e.data.get("speech_end_ns")
            if isinstance(start, int) and isinstance(end, int):
                inputs.append(_UserInput("speech", start, end))
        elif e.type == "user_message" and e.direction == "send":
            inputs.append(_UserInput("text", e.t_ns, e.t_ns, e.data.get("text")))
    return sorted(inputs, key=lambda u: u.end_ns)


def _agent_turns(events: list[TimelineEvent]) -> dict[int, _Turn]:
    """Events grouped by the agent turn (event id) they belong to.

    A transcript without an event id (the relay protocol has none) belongs to the next turn
    whose first agent event follows it.
    """
    turns: dict[int, _Turn] = {}
    loose: list[TimelineEvent] = []
    for e in events:
        if e.direction != "recv" or e.type == "ping":
            continue
        if e.type == "user_transcript" and e.event_id is None:
            loose.append(e)
        elif isinstance(e.event_id, int):
            turns.setdefault(e.event_id, _Turn(e.event_id)).events.append(e)
    # Only ids that carry agent output or a transcript are turns (not a stray feedback id).
    keep = {
        k: t
        for k, t in turns.items()
        if any(e.type in ("audio", "user_transcript", *_AGENT_TEXT) for e in t.events)
    }
    for e in loose:
        later = [t for t in keep.values() if min(x.t_ns for x in t.events) >= e.t_ns]
        if later:
            min(later, key=lambda t: min(x.t_ns for x in t.events)).events.append(e)
    return keep


def _tool_results(events: list[TimelineEvent]) -> dict[tuple[str, Any], TimelineEvent]:
    """``(kind, tool_call_id)`` → the event that ended the call. The server also reports
    client tools with ``agent_tool_response``; a client tool's end is the result it sent."""
    results: dict[tuple[str, Any], TimelineEvent] = {}
    for e in events:
        call_id = e.data.get("tool_call_id")
        if e.type == "client_tool_result" and e.direction == "send":
            results.setdefault(("client", call_id), e)
        elif (
            e.type in ("agent_tool_response", "agent_tool_response_full_payload")
            and e.direction == "recv"
        ):
            results.setdefault(("server", call_id), e)
    return results


def _kind(call: TimelineEvent) -> str:
    return "client" if call.type == "client_tool_call" else "server"


def _turn_row(
    turn: _Turn, inputs: list[_UserInput], results: dict[tuple[str, Any], TimelineEvent]
) -> dict[str, Any]:
    transcript = turn.first("user_transcript")
    text = turn.first(*_AGENT_TEXT)
    audio = sorted((e for e in turn.events if e.type == "audio"), key=lambda e: e.t_ns)
    cut = turn.first("interruption")
    # Audio after the interruption is stale even if the recorder did not flag it.
    fresh = [e for e in audio if not e.data.get("stale") and (cut is None or e.t_ns <= cut.t_ns)]
    correction = turn.first("agent_response_correction")
    anchor = transcript.t_ns if transcript else min(e.t_ns for e in turn.events)

    user = _claim_input(inputs, anchor)
    speech_end = float(user.end_ns) if user and user.kind == "speech" else NAN
    input_end = float(user.end_ns) if user else NAN
    if transcript is not None:
        turn_end = float(transcript.t_ns)
    elif user is not None and user.kind == "text":
        turn_end = float(user.end_ns)
    else:
        turn_end = NAN
    first_audio = float(fresh[0].t_ns) if fresh else NAN
    last_audio = float(fresh[-1].t_ns) if fresh else NAN

    barge = _barge_in(inputs, cut.t_ns) if cut is not None else None
    cut_ns = float(cut.t_ns) if cut is not None else NAN
    barge_ns = float(barge.start_ns) if barge is not None else NAN
    audio_stop = NAN
    if barge is not None:
        after = [e.t_ns for e in audio if e.t_ns >= barge.start_ns]
        audio_stop = ms_between(barge_ns, float(max(after))) if after else 0.0

    calls = [e for e in turn.events if e.type in _TOOL_CALLS]
    errors = sum(
        1
        for c in calls
        if (r := results.get((_kind(c), c.data.get("tool_call_id")))) is not None
        and r.data.get("is_error")
    )
    agent_texts = [
        str(e.data.get("agent_response", ""))
        for e in sorted(turn.events, key=lambda e: e.t_ns)
        if e.type == "agent_response"
    ]
    row: dict[str, Any] = {
        "event_id": turn.event_id,
        "user_input": user.kind if user else None,
        "user_speech_start_ns": float(user.start_ns) if user and user.kind == "speech" else NAN,
        "user_speech_end_ns": speech_end,
        "user_text_sent_ns": float(user.end_ns) if user and user.kind == "text" else NAN,
        "user_transcript_ns": float(transcript.t_ns) if transcript else NAN,
        "agent_text_ns": float(text.t_ns) if text else NAN,
        "first_audio_ns": first_audio,
        "last_audio_ns": last_audio,
        "interruption_ns": cut_ns,
        "barge_in_ns": barge_ns,
        "voice_to_voice_ms": ms_between(speech_end, first_audio),
        "ttfa_ms": ms_between(turn_end, first_audio),
        "transcript_ms": ms_between(speech_end, float(transcript.t_ns) if transcript else NAN),
        "agent_text_ms": ms_between(input_end, float(text.t_ns) if text else NAN),
        "interrupted": cut is not None,
        "interruption_ms": ms_between(barge_ns, cut_ns),
        "interruption_audio_ms": audio_stop,
        "audio_ms": sum(float(e.data.get("duration_s", 0.0)) for e in fresh) * 1000,
        "audio_chunks": len(fresh),
        "stale_chunks": len(audio) - len(fresh),
        "tool_calls": len(calls),
        "tool_errors": errors,
        "tools": [str(c.data.get("tool_name", "")) for c in calls],
        "user_text": " ".join(
            str(e.data.get("user_transcript", ""))
            for e in sorted(turn.events, key=lambda e: e.t_ns)
            if e.type == "user_transcript"
        )
        or (user.text if user and user.kind == "text" else None),
        "agent_text": " ".join(agent_texts) if agent_texts else None,
        "corrected_text": correction.data.get("corrected_agent_response") if correction else None,
    }
    for e in turn.events:
        if e.type == STAGE_EVENT and "stage" in e.data:
            key = f"stage_{e.data['stage']}_ms"
            row[key] = row.get(key, 0.0) + float(e.data.get("ms", NAN))
    return row


def _claim_input(inputs: list[_UserInput], anchor: int) -> _UserInput | None:
    """The latest unclaimed input that ended by ``anchor``; older unanswered ones stay so."""
    candidates = [u for u in inputs if u.end_ns <= anchor]
    if not candidates or candidates[-1].claimed:
        return None
    latest = candidates[-1]
    latest.claimed = True
    return latest


def _barge_in(inputs: list[_UserInput], cut_ns: int) -> _UserInput | None:
    started = [u for u in inputs if u.kind == "speech" and u.start_ns <= cut_ns]
    return max(started, key=lambda u: u.start_ns) if started else None


def tool_call_table(timelines: Timelines) -> pd.DataFrame:
    """One row per tool call: client tools (``client_tool_call`` received → ``client_tool_result``
    sent) and server tools (``agent_tool_request`` → ``agent_tool_response`` received).

    ``answered`` is False when no result was seen (the session ended first, or the relay
    protocol, whose clients do not answer); ``is_error`` is then missing (``<NA>``).
    """
    return per_session(timelines, _tool_call_table, TOOL_COLUMNS)


def _tool_call_table(timeline: TimelineLike) -> pd.DataFrame:
    events = events_of(timeline)
    results = _tool_results(events)
    rows = []
    for e in events:
        if e.direction != "recv" or e.type not in _TOOL_CALLS:
            continue
        call_id = e.data.get("tool_call_id")
        result = results.get((_kind(e), call_id)) if call_id is not None else None
        rows.append(
            {
                "event_id": e.event_id,
                "tool_call_id": call_id,
                "name": e.data.get("tool_name"),
                "kind": _kind(e),
                "parameters": e.data.get("parameters"),
                "call_ns": float(e.t_ns),
                "result_ns": float(result.t_ns) if result else NAN,
                "duration_ms": ms_between(float(e.t_ns), float(result.t_ns)) if result else NAN,
                "answered": result is not None,
                "is_error": bool(result.data.get("is_error")) if result else pd.NA,
            }
        )
    df = pd.DataFrame(rows, columns=list(TOOL_COLUMNS))
    df["is_error"] = df["is_error"].astype("boolean")
    df["answered"] = df["answered"].astype(bool)
    return df


def ping_table(timelines: Timelines) -> pd.DataFrame:
    """One row per round-trip sample: ``source`` is ``ping_ms`` (the server's measurement of
    the previous ping → pong, whole ms) or ``ws_rtt`` (a WebSocket ping frame, client-timed)."""
    return per_session(timelines, _ping_table, PING_COLUMNS)


def _ping_table(timeline: TimelineLike) -> pd.DataFrame:
    rows = []
    for e in events_of(timeline):
        if e.type == "ping" and e.direction == "recv" and e.data.get("ping_ms") is not None:
            rows.append(("ping_ms", e.event_id, float(e.t_ns), float(e.data["ping_ms"])))
        elif e.type == "ws_rtt" and e.direction == "local":
            rows.append(("ws_rtt", None, float(e.t_ns), float(e.data["rtt_ms"])))
    return pd.DataFrame(rows, columns=list(PING_COLUMNS))
