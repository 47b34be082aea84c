"""The per-turn baseline cuts where the agent's own detector ends turns (issue 11).

``sagelab bench streaming`` holds streaming to the case cut at every pause at least as long
as the agent's end-of-turn silence, found with the energy reference of ``speech_bounds``. That
baseline is only fair if it is what the agent's turn detector (Silero VAD with the agent's
``vad`` options) does with the same audio: cutting more often would make the baseline worse
than the agent and let a loss through; cutting less often would charge streaming with
Whisper's segmentation errors. This runs the real detector over every bundled case.

The speech starts on a whole 32 ms window here. In a conversation it starts wherever the
greeting left the stream, and for 3 of 16 sub-window offsets the detector also splits the
alsa passage's "front left | front center" (a 0.3 s pause plus the fade of "left"): one more
turn, not a different cut elsewhere (docs/accuracy.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sagelab.audio import SAMPLE_RATE
from sagelab.bench.streamcases import build_all, read_cases, read_recordings, turn_bounds
from sagelab.bench.streaming import end_of_turn_silence_s, server_config

SPEECH = Path(__file__).resolve().parents[2] / "data" / "speech"


@pytest.mark.model
def test_the_baseline_turns_are_the_agents_turns(tmp_path: Path) -> None:
    from sagelab.agents.local.vad import VadTurnDetector

    agent = server_config(None, "audio-sage", tmp_path).agents[0]
    configured_s, cut_s = end_of_turn_silence_s(agent)
    recordings = read_recordings(SPEECH / "manifest.jsonl")
    cases = build_all(read_cases(SPEECH / "streaming_cases.jsonl", recordings), recordings)
    lead = SAMPLE_RATE  # a second of silence before the speech, as after the greeting
    multi = 0
    for audio in cases:
        # The silence rule at the agent's earliest end of turn (its end-of-turn model can only
        # keep a turn open longer, never end it sooner).
        vad = {**(agent.options.get("vad") or {}), "end_silence_ms": configured_s * 1000}
        detector = VadTurnDetector(**vad)
        stream = np.concatenate([np.zeros(lead, np.int16), audio.pcm,
                                 np.zeros(2 * SAMPLE_RATE, np.int16)])  # fmt: skip
        events = detector.feed(stream)
        starts = [e.sample - lead for e in events if e.kind == "speech_start"]
        ends = [e.sample - lead for e in events if e.kind == "speech_end"]
        bounds = turn_bounds(audio, cut_s)
        assert len(starts) == len(ends) == len(bounds), (audio.case.id, starts, bounds)
        # Each of the detector's turns overlaps the baseline turn of the same rank and no
        # other one: the same speech in the same turns. (A ``speech_start`` is back-dated by
        # ``speech_pad_ms``, which may reach into the previous turn's end-of-turn wait.)
        pad = round(detector.speech_pad_ms * SAMPLE_RATE / 1000)
        for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
            low, high = bounds[i]
            assert start < high and end > low, (audio.case.id, i, start, end, bounds)
            assert i == 0 or start + pad >= bounds[i - 1][1], (audio.case.id, i, start, bounds)
            assert i == len(bounds) - 1 or end <= bounds[i + 1][0], (audio.case.id, i, end)
        multi += len(bounds) > 1
    assert multi >= 5  # the passages and the after-turn-end cases really are cut
