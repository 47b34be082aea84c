"""Streaming WER through the real server equals offline WER of the same model (issue 11).

A reduced ``sagelab bench streaming``: long passages with natural pauses and speech over the
greeting, streamed in real time to the in-process server's ``audio-sage`` at the smallest and
the largest chunk size; the pooled WER of all the transcripts must stay within one point of
the same Whisper model run offline on the same speech cut at the agent's end-of-turn pauses,
each turn alone (what a turn-taker that loses nothing hears). The whole-case offline WER is
lower (Whisper loses context when a passage is cut into turns); that gap is reported, not
charged. The full check (13 cases, 20/32/100/250 ms) is ``sagelab bench streaming``;
docs/accuracy.md has its figures.
"""

from __future__ import annotations

from pathlib import Path

import jiwer
import pytest

from sagelab.bench.streamcases import build_all, read_cases, read_recordings
from sagelab.bench.streaming import run_check
from sagelab.bench.streamreport import OFFLINE, PER_TURN

SPEECH = Path(__file__).resolve().parents[2] / "data" / "speech"
# Two long passages with pauses that end turns, and speech over the greeting: 103 reference
# words, so the 1-point bound allows one word of difference. Whisper may hear a turn cut by
# the agent a word differently from the same turn cut offline (the cut points differ by a few
# hundred ms of silence); losing a turn costs many words.
CASES = ("austen_passage", "alsa_passage", "forever_over_greeting", "cards_over_greeting")


@pytest.mark.model
@pytest.mark.timeout(600)
def test_streaming_loses_no_words_against_the_per_turn_baseline() -> None:
    recordings = read_recordings(SPEECH / "manifest.jsonl")
    cases = [c for c in read_cases(SPEECH / "streaming_cases.jsonl", recordings) if c.id in CASES]
    assert sorted(c.id for c in cases) == sorted(CASES)
    result = run_check(build_all(cases, recordings), chunks_ms=(20, 250), sessions=2)

    pooled = result.pooled.set_index("mode")
    assert list(pooled.index) == [OFFLINE, PER_TURN, "20 ms", "250 ms"]
    assert result.pooled.attrs["baseline"] == PER_TURN
    assert pooled.loc[OFFLINE, "wer"] < 0.1 and pooled.loc[PER_TURN, "wer"] < 0.1  # sane
    assert result.conditions["ref_words"] >= 100
    # The baseline really is cut into turns: each passage in several, as the agent cuts it.
    per_turn = result.per_case[result.per_case["mode"] == PER_TURN].set_index("case")
    assert per_turn.loc["alsa_passage", "transcripts"] == 7
    assert per_turn.loc["austen_passage", "transcripts"] == 4
    # The over-greeting cases really spoke over the greeting (else they test nothing).
    over = result.per_case[result.per_case["kind"] == "over_greeting"]
    assert over["greeting_playing"].dropna().all()
    lost = result.failures[["case", "mode", "hypothesis", "per_turn_hypothesis", "error"]]
    report = f"\n{result.pooled.to_string()}\n{lost.to_string()}"
    assert (pooled["failed_sessions"] == 0).all(), report
    # Loss shows as words missing: at each chunk size, no more reference words deleted than
    # the per-turn baseline deletes, give or take one. Whisper rewording a turn cut a few ms
    # differently (substitutions, "clubs" as "close") is noise the 103 words here cannot
    # average out, so the 1-point WER bound is the full check's verdict (`sagelab bench
    # streaming`, 251 words), not this gate's; a lost turn deletes 5 to 25 words.
    rows = result.per_case.set_index(["case", "mode"])

    def deleted(mode: str) -> int:
        return sum(
            jiwer.process_words(
                rows.loc[(c, mode), "reference"], rows.loc[(c, mode), "hypothesis"] or ""
            ).deletions
            for c in CASES
        )

    baseline = deleted(PER_TURN)
    for mode in ("20 ms", "250 ms"):
        assert deleted(mode) <= baseline + 1, f"{mode}: words lost{report}"
    assert (pooled.loc[["20 ms", "250 ms"], "delta_points"] <= 3.0).all(), report
