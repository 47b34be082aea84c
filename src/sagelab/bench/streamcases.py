"""Cases for the streaming-accuracy check: real recordings joined into realistic user turns.

A case file is JSONL, one case a line, built from the utterances of a speech manifest (the
``id``/``audio``/``text`` lines of ``data/speech/manifest.jsonl``) so that no new audio has to
be stored::

    {"id": "austen_passage", "kind": "passage", "start": "after_greeting", "lead_s": 0.5,
     "parts": ["austen-0870", 0.6, "austen-0880", 1.2, "austen-0890"]}

``parts`` alternates utterance ids and pauses in seconds. A pause is the silence between the
end of one utterance's speech and the start of the next one's: each recording is cut to its
speech (by energy, ``sagelab.audio.speech_bounds``) plus up to ``PAD_S`` of its own room tone
on either side, and digital silence fills the rest of the pause. Joining readings of one
speaker this way gives a long passage with natural pauses, some shorter and some longer than
the agent's end-of-turn silence, at no cost in repository size.

``start`` says when the user begins: ``after_greeting`` (``lead_s`` after the agent's greeting
has finished playing) or ``during_greeting`` (``lead_s`` after the greeting's first audio
arrived, so the user talks over it). ``kind`` is a label for the report (``single``, ``passage``,
``over_greeting``, ``after_turn_end``); the reference transcript is the parts' texts joined.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sagelab.audio import PCM16, SAMPLE_RATE, load_audio, speech_bounds

# The energy reference of ``speech_bounds``: a 10 ms frame louder than -40 dBFS is speech.
_FRAME = SAMPLE_RATE // 100
_THRESHOLD_DBFS = -40.0

Start = Literal["after_greeting", "during_greeting"]
KINDS = ("single", "passage", "over_greeting", "after_turn_end")
STARTS: tuple[Start, ...] = ("after_greeting", "during_greeting")
PAD_S = 0.1
PREROLL_S = 0.3  # audio before a turn's speech the agent keeps (LocalAgent's preroll_ms)
MAX_PAUSE_S = 10.0
MAX_LEAD_S = 30.0


class CaseError(ValueError):
    """A case file that cannot be used, with the file and line it comes from."""


@dataclass(frozen=True)
class Recording:
    """One utterance of a speech manifest: its audio and reference transcript."""

    id: str
    audio: Path
    text: str


@dataclass(frozen=True)
class StreamCase:
    id: str
    kind: str
    start: Start
    lead_s: float
    utterances: tuple[str, ...]
    pauses_s: tuple[float, ...]  # one fewer than ``utterances``


@dataclass(frozen=True)
class CaseAudio:
    """A case made concrete: the speech the user says (pauses included), and its reference.

    ``spans`` are the ``(start, end)`` samples of each utterance inside ``pcm``, so a pause
    can be found again (the offline transcription splits a case longer than Whisper's 30 s
    window at its pauses).
    """

    case: StreamCase
    pcm: PCM16
    reference: str
    spans: tuple[tuple[int, int], ...]

    @property
    def duration_s(self) -> float:
        return self.pcm.size / SAMPLE_RATE


def read_recordings(manifest: Path) -> dict[str, Recording]:
    """The utterances of a speech manifest (JSONL with ``id``, ``audio``, ``text``), by id."""
    items: dict[str, Recording] = {}
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rec = Recording(str(row["id"]), manifest.parent / row["audio"], str(row["text"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CaseError(
                f"{manifest}:{n}: each line needs JSON with 'id', 'audio' and 'text' ({exc})"
            ) from exc
        if rec.id in items:
            raise CaseError(f"{manifest}:{n}: utterance id {rec.id!r} appears twice")
        items[rec.id] = rec
    return items


def parse_case(row: Any, recordings: Mapping[str, Recording], where: str) -> StreamCase:
    """One case line, checked against the manifest; every problem names ``where``."""
    if not isinstance(row, dict):
        raise CaseError(f"{where}: a case is a JSON object, got {type(row).__name__}")
    case_id = row.get("id")
    if not isinstance(case_id, str) or not case_id:
        raise CaseError(f"{where}: 'id' must be a non-empty string")
    kind = row.get("kind", "passage")
    if kind not in KINDS:
        raise CaseError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
    start = row.get("start", "after_greeting")
    if start not in STARTS:
        raise CaseError(f"{where}: 'start' must be one of {', '.join(STARTS)}, not {start!r}")
    lead_s = _seconds(row.get("lead_s", 0.5), f"{where}: 'lead_s'", MAX_LEAD_S)
    parts = row.get("parts")
    if not isinstance(parts, list) or not parts or len(parts) % 2 == 0:
        raise CaseError(
            f"{where}: 'parts' must alternate utterance ids and pauses in seconds, starting "
            f'and ending with an id (e.g. ["a", 0.8, "b"])'
        )
    utterances: list[str] = []
    pauses: list[float] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if not isinstance(part, str) or part not in recordings:
                raise CaseError(f"{where}: part {i} ({part!r}) is not an utterance id of the "
                                f"manifest")  # fmt: skip
            utterances.append(part)
        else:
            pauses.append(_seconds(part, f"{where}: pause at part {i}", MAX_PAUSE_S))
    return StreamCase(case_id, kind, start, lead_s, tuple(utterances), tuple(pauses))


def _seconds(value: Any, what: str, most: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CaseError(f"{what} must be a number of seconds, got {value!r}")
    if not 0 <= value <= most:
        raise CaseError(f"{what} must be between 0 and {most:g} s, got {value!r}")
    return float(value)


def read_cases(path: Path, recordings: Mapping[str, Recording]) -> list[StreamCase]:
    cases: list[StreamCase] = []
    seen: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaseError(f"{where}: not JSON ({exc})") from exc
        case = parse_case(row, recordings, where)
        if case.id in seen:
            raise CaseError(f"{where}: case id {case.id!r} appears twice")
        seen.add(case.id)
        cases.append(case)
    if not cases:
        raise CaseError(f"{path}: no cases")
    return cases


def _trimmed(pcm: PCM16) -> tuple[PCM16, int, int]:
    """The recording cut to its speech plus up to ``PAD_S`` either side; and the pads kept."""
    bounds = speech_bounds(pcm)
    if bounds is None:
        return pcm, 0, 0
    pad = int(PAD_S * SAMPLE_RATE)
    first, last = max(0, bounds[0] - pad), min(pcm.size, bounds[1] + pad)
    return pcm[first:last], bounds[0] - first, last - bounds[1]


def build_audio(
    case: StreamCase,
    recordings: Mapping[str, Recording],
    *,
    cache: dict[str, PCM16] | None = None,
) -> CaseAudio:
    """Join the case's recordings with its pauses (see the module docstring)."""
    cache = {} if cache is None else cache
    pieces: list[PCM16] = []
    spans: list[tuple[int, int]] = []
    texts: list[str] = []
    position = 0
    tail = 0  # room tone kept after the previous utterance's speech
    for i, uid in enumerate(case.utterances):
        rec = recordings[uid]
        if uid not in cache:
            cache[uid] = load_audio(rec.audio)
        clip, head, clip_tail = _trimmed(cache[uid])
        if i > 0:
            gap = round(case.pauses_s[i - 1] * SAMPLE_RATE) - tail - head
            if gap > 0:
                pieces.append(np.zeros(gap, dtype=np.int16))
                position += gap
            elif gap < 0:  # a pause shorter than the room tone kept: cut the room tone
                clip, head = clip[min(-gap, head) :], max(0, head + gap)
        pieces.append(clip)
        spans.append((position, position + clip.size))
        position += clip.size
        tail = clip_tail
        texts.append(rec.text.strip())
    pcm = np.concatenate(pieces).astype(np.int16, copy=False)
    return CaseAudio(case, pcm, " ".join(texts), tuple(spans))


def build_all(cases: Sequence[StreamCase], recordings: Mapping[str, Recording]) -> list[CaseAudio]:
    cache: dict[str, PCM16] = {}
    return [build_audio(case, recordings, cache=cache) for case in cases]


def windows(audio: CaseAudio, max_s: float = 28.0) -> list[PCM16]:
    """The case's speech in pieces no longer than ``max_s``, cut in the middle of pauses.

    Whisper reads 30 s at a time; a passage longer than that, given whole, would have a word
    cut at the window edge, which is no fault of the streaming path being measured.
    """
    limit = int(max_s * SAMPLE_RATE)
    if audio.pcm.size <= limit:
        return [audio.pcm]
    cuts = [0]
    for (_, end), (start, _) in itertools.pairwise(audio.spans):
        middle = (end + start) // 2
        if middle - cuts[-1] > limit:
            raise CaseError(f"case {audio.case.id}: one utterance run is longer than {max_s} s")
        cuts.append(middle)
    if audio.pcm.size - cuts[-1] > limit:
        raise CaseError(f"case {audio.case.id}: one utterance run is longer than {max_s} s")
    cuts.append(audio.pcm.size)
    out: list[PCM16] = []
    begin = 0
    for previous, cut in itertools.pairwise(cuts):
        if cut - begin > limit:
            out.append(audio.pcm[begin:previous])
            begin = previous
    out.append(audio.pcm[begin:])
    return out


def speech_runs(pcm: PCM16, min_pause_s: float) -> list[tuple[int, int]]:
    """``(start, end)`` samples of the speech in ``pcm``, split at every pause of at least
    ``min_pause_s``.

    Speech is what ``speech_bounds`` calls speech (10 ms frames louder than -40 dBFS), so a
    pause is both the silence a case puts between two recordings (digital silence and room
    tone, both below the threshold) and a silence inside one recording ("rear ... right").
    """
    n = pcm.size // _FRAME
    if n == 0:
        return []
    frames = pcm[: n * _FRAME].astype(np.float32).reshape(n, _FRAME)
    loud = np.flatnonzero(
        (frames * frames).mean(axis=1) > (32768.0**2) * 10 ** (_THRESHOLD_DBFS / 10)
    )
    if loud.size == 0:
        return []
    min_gap = math.ceil(min_pause_s * SAMPLE_RATE / _FRAME - 1e-9)  # in frames
    runs: list[tuple[int, int]] = []
    first = previous = int(loud[0])
    for frame in loud[1:].tolist():
        if frame - previous - 1 >= min_gap:
            runs.append((first * _FRAME, (previous + 1) * _FRAME))
            first = frame
        previous = frame
    runs.append((first * _FRAME, (previous + 1) * _FRAME))
    return runs


def turn_bounds(
    audio: CaseAudio, end_silence_s: float, preroll_s: float = PREROLL_S
) -> list[tuple[int, int]]:
    """Where a loss-free turn-taker that ends a turn after ``end_silence_s`` of silence cuts
    the case: ``(start, end)`` samples of each turn, relative to the case's audio (a start
    below 0 or an end past its length reaches into the silence the microphone sends around
    the speech).

    One turn per run of speech between pauses of at least ``end_silence_s``, laid out like
    the agent's utterances: it starts ``preroll_s`` before its speech (never before the
    previous turn's end) and ends ``end_silence_s`` after it, the silence the detector
    waited through.
    """
    bounds: list[tuple[int, int]] = []
    before, after = round(preroll_s * SAMPLE_RATE), round(end_silence_s * SAMPLE_RATE)
    for first, last in speech_runs(audio.pcm, end_silence_s):
        start = first - before if not bounds else max(bounds[-1][1], first - before)
        bounds.append((start, last + after))
    return bounds


def turns(audio: CaseAudio, end_silence_s: float, preroll_s: float = PREROLL_S) -> list[PCM16]:
    """The audio of each of ``turn_bounds``, digital silence outside the case's own audio.

    Transcribing each alone is what a turn-taker with that end-of-turn rule hears when it
    drops nothing: the per-turn offline baseline.
    """
    bounds = turn_bounds(audio, end_silence_s, preroll_s)
    if not bounds:
        return [audio.pcm]
    low, high = min(0, bounds[0][0]), max(audio.pcm.size, bounds[-1][1])
    padded = np.concatenate(
        [np.zeros(-low, np.int16), audio.pcm, np.zeros(high - audio.pcm.size, np.int16)]
    ).astype(np.int16, copy=False)
    return [padded[start - low : end - low] for start, end in bounds]
