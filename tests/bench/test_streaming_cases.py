"""The streaming-accuracy check's parts that need no model: cases, audio, scoring, microphone."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from sagelab.audio import SAMPLE_RATE, load_audio, speech_bounds
from sagelab.bench.streamcases import (
    CaseError,
    build_all,
    build_audio,
    parse_case,
    read_cases,
    read_recordings,
    speech_runs,
    turn_bounds,
    turns,
    windows,
)
from sagelab.bench.streaming import Microphone, end_of_turn_silence_s
from sagelab.bench.streamreport import (
    OFFLINE,
    PER_TURN,
    Heard,
    failures,
    per_case_table,
    pooled_table,
)

SPEECH = Path(__file__).resolve().parents[2] / "data" / "speech"
pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def recordings():  # type: ignore[no-untyped-def]
    return read_recordings(SPEECH / "manifest.jsonl")


@pytest.fixture(scope="module")
def bundled(recordings):  # type: ignore[no-untyped-def]
    return build_all(read_cases(SPEECH / "streaming_cases.jsonl", recordings), recordings)


def test_bundled_cases_cover_what_the_check_is_for(bundled) -> None:  # type: ignore[no-untyped-def]
    kinds = {a.case.kind for a in bundled}
    assert kinds == {"single", "passage", "over_greeting", "after_turn_end"}
    assert any(a.case.start == "during_greeting" for a in bundled)
    passages = [a for a in bundled if a.case.kind == "passage"]
    # Long passages with natural pauses: some shorter and some longer than audio-sage's
    # 400 ms end-of-turn silence, and speech going on after each.
    pauses = [p for a in passages for p in a.case.pauses_s]
    assert min(pauses) <= 0.4 < 1.0 <= max(pauses) <= 1.5
    assert max(a.duration_s for a in passages) > 20
    resumed = [a for a in bundled if a.case.kind == "after_turn_end"]
    assert resumed and all(min(a.case.pauses_s) >= 1.5 for a in resumed)


def test_pauses_are_the_silence_between_speech(bundled) -> None:  # type: ignore[no-untyped-def]
    """Each recording keeps its speech whole, and the silence from the end of one
    utterance's speech to the start of the next is the pause the case asks for."""
    frame = SAMPLE_RATE // 100  # speech_bounds works in 10 ms frames
    checked = 0
    for audio in bundled:
        bounds = []
        for start, end in audio.spans:
            b = speech_bounds(audio.pcm[start:end])
            assert b is not None
            bounds.append((start + b[0], start + b[1]))
        for (_, end), (start, _), pause in zip(bounds, bounds[1:], audio.case.pauses_s,
                                               strict=False):  # fmt: skip
            assert abs((start - end) - pause * SAMPLE_RATE) <= 2 * frame, audio.case.id
            checked += 1
    assert checked >= 15


def test_reference_and_speech_come_from_the_manifest(recordings) -> None:  # type: ignore[no-untyped-def]
    ids = ["cards_001", "cards_003"]
    case = parse_case({"id": "x", "parts": [ids[0], 0.8, ids[1]]}, recordings, "test")
    audio = build_audio(case, recordings)
    assert audio.reference == "ten of clubs seven of clubs"
    assert audio.case.start == "after_greeting" and audio.case.kind == "passage"
    # Each recording is cut to its speech and at most 0.1 s of room tone either side.
    bounds = [speech_bounds(load_audio(recordings[i].audio)) for i in ids]
    speech = sum(b[1] - b[0] for b in bounds if b is not None)
    assert len(bounds) == 2 and all(bounds)
    assert speech + 0.8 * SAMPLE_RATE <= audio.pcm.size <= speech + 1.2 * SAMPLE_RATE


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "a", "parts": ["nope"]}, "not an utterance id"),
        ({"id": "a", "parts": ["cards_001", 0.5]}, "alternate"),
        ({"id": "a", "parts": []}, "alternate"),
        ({"id": "a", "parts": ["cards_001", -1, "cards_002"]}, "between 0 and"),
        ({"id": "a", "parts": ["cards_001", "1", "cards_002"]}, "number of seconds"),
        ({"id": "a", "parts": ["cards_001", True, "cards_002"]}, "number of seconds"),
        ({"id": "a", "kind": "song", "parts": ["cards_001"]}, "'kind'"),
        ({"id": "a", "start": "later", "parts": ["cards_001"]}, "'start'"),
        ({"id": "a", "lead_s": 99, "parts": ["cards_001"]}, "'lead_s'"),
        ({"parts": ["cards_001"]}, "'id'"),
        (["cards_001"], "JSON object"),
    ],
)
def test_bad_cases_are_refused_with_where_and_why(recordings, row, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CaseError, match=message) as info:
        parse_case(row, recordings, "cases.jsonl:7")
    assert "cases.jsonl:7" in str(info.value)


def test_case_file_errors_name_the_line(tmp_path: Path, recordings) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cases.jsonl"
    good = json.dumps({"id": "a", "parts": ["cards_001"]})
    path.write_text(good + "\n{not json\n")
    with pytest.raises(CaseError, match=r"cases.jsonl:2: not JSON"):
        read_cases(path, recordings)
    path.write_text(good + "\n\n" + good + "\n")
    with pytest.raises(CaseError, match=r"cases.jsonl:3: case id 'a' appears twice"):
        read_cases(path, recordings)
    path.write_text("\n")
    with pytest.raises(CaseError, match="no cases"):
        read_cases(path, recordings)


def test_long_cases_are_split_at_pauses_for_whisper(recordings) -> None:  # type: ignore[no-untyped-def]
    long = [u for u in recordings if u.startswith("librivox")] * 2
    parts: list[object] = []
    for n, uid in enumerate(long):
        parts += ([1.0] if n else []) + [uid]
    case = parse_case({"id": "long", "parts": parts}, recordings, "test")
    audio = build_audio(case, recordings)
    assert audio.duration_s > 45
    pieces = windows(audio, max_s=28.0)
    assert len(pieces) >= 2
    assert all(p.size <= 28 * SAMPLE_RATE for p in pieces)
    assert np.array_equal(np.concatenate(pieces), audio.pcm)
    # Every cut falls in a pause, never inside an utterance.
    cut = 0
    for piece in pieces[:-1]:
        cut += piece.size
        assert not any(start < cut < end for start, end in audio.spans)
    short = build_audio(parse_case({"id": "s", "parts": ["cards_001"]}, recordings, "t"),
                        recordings)  # fmt: skip
    assert len(windows(short)) == 1


# -- the per-turn baseline's cuts ------------------------------------------------------------

CUT_S = 0.416  # audio-sage's 400 ms end-of-turn silence, as the detector counts it (13 windows)


def test_turns_are_cut_at_the_pauses_that_end_a_turn(bundled) -> None:  # type: ignore[no-untyped-def]
    """Every pause between recordings at least as long as the end-of-turn silence is a cut,
    no shorter one is, and a pause inside a recording counts the same way."""
    by_id = {a.case.id: a for a in bundled}
    for audio in bundled:
        bounds = turn_bounds(audio, CUT_S)
        long_pauses = sum(p >= CUT_S for p in audio.case.pauses_s)
        inside = len(speech_runs(audio.pcm, CUT_S)) - 1 - long_pauses  # cuts within recordings
        assert len(bounds) == 1 + long_pauses + inside, audio.case.id
        assert inside == 0, audio.case.id  # none of the bundled recordings pauses that long
    # Pauses close to the limit: 0.40 s (cards) stays one turn, 0.45 s (alsa) is cut.
    assert len(turn_bounds(by_id["cards_passage"], CUT_S)) == 4  # 0.8, 1.0, 0.5 cut; 0.4 not
    assert len(turn_bounds(by_id["alsa_passage"], CUT_S)) == 6 + 1  # 0.3 not cut
    assert len(turn_bounds(by_id["austen_passage"], CUT_S)) == 4  # 0.35 not cut
    # With the configured 400 ms uncounted, the 0.40 s pause would be cut too.
    assert len(turn_bounds(by_id["cards_passage"], 0.4)) == 5


def test_turns_hold_all_the_speech_once_in_order(bundled) -> None:  # type: ignore[no-untyped-def]
    """The baseline drops nothing: every sample of speech is in exactly one turn, the turns
    follow one another without overlap, and what lies between them is silence."""
    for audio in bundled:
        bounds = turn_bounds(audio, CUT_S)
        pieces = turns(audio, CUT_S)
        assert [p.size for p in pieces] == [end - start for start, end in bounds]
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(bounds))
        covered = np.zeros(audio.pcm.size, dtype=int)
        for (start, end), piece in zip(bounds, pieces, strict=True):
            lo, hi = max(0, start), min(audio.pcm.size, end)
            covered[lo:hi] += 1
            assert np.array_equal(piece[lo - start : hi - start], audio.pcm[lo:hi])
            assert not piece[: lo - start].any() and not piece[hi - start :].any()  # silence
        # Laid out like the agent's utterances: 0.3 s of pre-roll, the end-of-turn wait after.
        runs = speech_runs(audio.pcm, CUT_S)
        assert bounds[0][0] == runs[0][0] - round(0.3 * SAMPLE_RATE)
        assert [end for _, end in bounds] == [last + round(CUT_S * SAMPLE_RATE) for _, last in runs]
        for first, last in speech_runs(audio.pcm, 0.0):  # every 10 ms frame of speech
            assert (covered[first:last] == 1).all(), audio.case.id
        gaps = np.flatnonzero(covered == 0)
        if gaps.size:
            assert speech_bounds(audio.pcm[gaps]) is None, audio.case.id


def test_a_case_without_speech_is_one_turn(recordings) -> None:  # type: ignore[no-untyped-def]
    audio = build_audio(parse_case({"id": "s", "parts": ["cards_001"]}, recordings, "t"),
                        recordings)  # fmt: skip
    quiet = type(audio)(audio.case, np.zeros(16000, np.int16), audio.reference, ((0, 16000),))
    assert turn_bounds(quiet, CUT_S) == [] and len(turns(quiet, CUT_S)) == 1


@pytest.mark.parametrize(
    ("vad", "expected"),
    [({"end_silence_ms": 400}, (0.4, 0.416)), ({}, (0.5, 0.512)), (None, (0.5, 0.512)),
     ({"end_silence_ms": 320}, (0.32, 0.32))],
)  # fmt: skip
def test_the_cut_is_the_agents_end_of_turn_silence_in_whole_vad_windows(vad, expected) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    agent = SimpleNamespace(options={} if vad is None else {"vad": vad, "stt": {}})
    configured, counted = end_of_turn_silence_s(agent)
    assert (configured, counted) == pytest.approx(expected)


# -- scoring ------------------------------------------------------------------------------


def _heard(case: str, chunk: int | None, text: str, error: str | None = None) -> Heard:
    return Heard(case, OFFLINE if chunk is None else f"{chunk} ms", chunk, (text,), error)


def _cases(recordings, n_words: int):  # type: ignore[no-untyped-def]
    """Two cases whose references total ``n_words`` words or more."""
    a = build_audio(parse_case({"id": "a", "parts": ["cards_005"]}, recordings, "t"), recordings)
    b = build_audio(
        parse_case({"id": "b", "parts": ["librivox_sense_and_sensibility_01_austen_64kb-0870"]},
                   recordings, "t"),
        recordings,
    )  # fmt: skip
    assert len(a.reference.split()) + len(b.reference.split()) >= n_words
    return [a, b]


def test_pooled_wer_and_the_one_point_bound(recordings) -> None:  # type: ignore[no-untyped-def]
    cases = _cases(recordings, 31)
    a, b = (c.reference for c in cases)  # 9 + 22 = 31 words
    b_words = b.split()
    heard = [
        _heard("a", None, a), _heard("b", None, b),
        _heard("a", 20, a), _heard("b", 20, b),  # the same as offline
        _heard("a", 250, a), _heard("b", 250, " ".join(b_words[5:])),  # 5 words lost
        _heard("a", 100, a), _heard("b", 100, "", error="session closed"),
    ]  # fmt: skip
    per_case = per_case_table(cases, heard)
    pooled = pooled_table(per_case).set_index("mode")
    assert list(pooled.index) == [OFFLINE, "20 ms", "100 ms", "250 ms"]
    assert pooled.loc[OFFLINE, "wer"] == 0 and pooled.loc["20 ms", "within_1_point"]
    assert pooled.loc["250 ms", "word_errors"] == 5
    assert pooled.loc["250 ms", "wer"] == pytest.approx(5 / 31)
    assert pooled.loc["250 ms", "delta_points"] == pytest.approx(500 / 31)
    assert not pooled.loc["250 ms", "within_1_point"]
    assert pooled.loc["100 ms", "failed_sessions"] == 1
    assert not pooled.loc["100 ms", "within_1_point"]
    assert pooled_table(per_case).attrs["passed"] is False
    lost = failures(per_case)
    assert set(zip(lost["case"], lost["mode"].astype(str), strict=True)) == {
        ("b", "250 ms"),
        ("b", "100 ms"),
    }
    row = lost[lost["mode"] == "250 ms"].iloc[0]
    assert row["offline_hypothesis"] == row["reference"] != row["hypothesis"]

    # Within one point passes; the bound is on the pooled figure, both ways.
    fine = [h for h in heard if h.chunk_ms in (None, 20)]
    assert pooled_table(per_case_table(cases, fine)).attrs["passed"] is True


def test_offline_errors_are_the_baseline_not_the_reference(recordings) -> None:  # type: ignore[no-untyped-def]
    """Streaming is compared with what the same model makes of the whole speech: a word
    offline also gets wrong costs streaming nothing."""
    cases = _cases(recordings, 31)
    a, b = (c.reference for c in cases)
    wrong_b = b.replace("dashwood", "dashboard")
    heard = [_heard("a", None, a), _heard("b", None, wrong_b),
             _heard("a", 32, a), _heard("b", 32, wrong_b)]  # fmt: skip
    pooled = pooled_table(per_case_table(cases, heard)).set_index("mode")
    assert pooled.loc[OFFLINE, "wer"] > 0
    assert pooled.loc["32 ms", "delta_points"] == 0
    assert pooled_table(per_case_table(cases, heard)).attrs["passed"] is True


def test_streaming_is_held_to_the_per_turn_baseline(recordings) -> None:  # type: ignore[no-untyped-def]
    """Whisper hears a turn alone worse than the whole passage: that gap is reported but not
    charged to streaming. Losing a turn is charged, against the per-turn figure."""
    cases = _cases(recordings, 31)
    a, b = (c.reference for c in cases)  # 9 + 22 words
    segmented = b.replace("dashwood", "dash would")  # 2 edits, as a turn heard alone might
    heard = [
        _heard("a", None, a), _heard("b", None, b),
        Heard("a", PER_TURN, None, (a,)), Heard("b", PER_TURN, None, (segmented,)),
        _heard("a", 20, a), _heard("b", 20, segmented),  # what per turn heard: no loss
        _heard("a", 250, ""), _heard("b", 250, segmented),  # a whole turn lost
    ]  # fmt: skip
    per_case = per_case_table(cases, heard)
    assert list(per_case["mode"].cat.categories[:2]) == [OFFLINE, PER_TURN]
    pooled = pooled_table(per_case)
    assert pooled.attrs["baseline"] == PER_TURN
    pooled = pooled.set_index("mode")
    assert list(pooled.index) == [OFFLINE, PER_TURN, "20 ms", "250 ms"]
    assert pooled.loc[PER_TURN, "delta_whole_points"] == pytest.approx(200 / 31)
    assert pooled.loc["20 ms", "delta_points"] == 0
    assert pooled.loc["20 ms", "delta_whole_points"] == pytest.approx(200 / 31)
    assert pooled.loc["20 ms", "within_1_point"]  # 6.5 points off the whole case, yet fair
    assert pooled.loc["250 ms", "delta_points"] == pytest.approx(900 / 31)
    assert not pooled.loc["250 ms", "within_1_point"]
    lost = failures(per_case)
    assert list(zip(lost["case"], lost["mode"].astype(str), strict=True)) == [("a", "250 ms")]
    row = lost.iloc[0]
    assert row["per_turn_hypothesis"] == row["offline_hypothesis"] == row["reference"]
    assert row["per_turn_wer"] == 0 and row["wer"] == 1

    # Without the per-turn rows, the whole case is the baseline and segmentation is charged.
    whole_only = per_case_table(cases, [h for h in heard if h.mode != PER_TURN])
    assert pooled_table(whole_only).attrs["baseline"] == OFFLINE
    assert not pooled_table(whole_only).set_index("mode").loc["20 ms", "within_1_point"]


# -- the microphone -----------------------------------------------------------------------


class _Socket:
    """What the microphone needs of a Session: it records every chunk sent."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.closed = False

    async def send_audio_chunk(self, pcm: np.ndarray) -> int:
        self.chunks.append(pcm.copy())
        return len(self.chunks)  # a send "time": the chunk's number


async def test_microphone_sends_queued_audio_without_gaps_and_silence_around_it() -> None:
    socket = _Socket()
    mic = Microphone(socket, 10)  # type: ignore[arg-type]
    running = asyncio.create_task(mic.run())
    first_piece = np.arange(1, 251, dtype=np.int16)  # 2.5 chunks: shares a chunk with the next
    second_piece = np.arange(1000, 1100, dtype=np.int16)
    await asyncio.sleep(0.03)  # silence first, as a microphone sends before the user talks
    first, _ = mic.play(first_piece)
    _, last = mic.play(second_piece)
    start_chunk, end_chunk = await first, await last
    await asyncio.sleep(0.03)
    socket.closed = True
    await asyncio.wait_for(running, 1)
    sent = np.concatenate(socket.chunks)
    assert all(c.size == 160 for c in socket.chunks)
    nonzero = np.flatnonzero(sent)
    assert np.array_equal(sent[nonzero[0] : nonzero[-1] + 1],
                          np.concatenate([first_piece, second_piece]))  # fmt: skip
    assert nonzero[0] >= 160 and sent[nonzero[-1] + 1 :].size >= 160  # silence either side
    assert start_chunk == nonzero[0] // 160 + 1 and end_chunk == nonzero[-1] // 160 + 1
    with pytest.raises(ValueError, match="needs some audio"):
        mic.play(np.zeros(0, dtype=np.int16))


# -- when a conversation is over --------------------------------------------------------


class _Timeline:
    def __init__(self, *events: tuple[str, int | None, dict[str, object]]) -> None:
        from sagelab.client.timeline import TimelineEvent

        self.events = [TimelineEvent(n * 1_000_000, "recv", kind, eid, data)
                       for n, (kind, eid, data) in enumerate(events)]  # fmt: skip


class _Session:
    def __init__(self, *events: tuple[str, int | None, dict[str, object]]) -> None:
        self.timeline = _Timeline(*events)


def test_a_transcription_is_pending_until_its_reply_or_its_stt_stage() -> None:
    from sagelab.bench.streaming import STAGE, _transcription_pending

    def pending(*events: tuple[str, int | None, dict[str, object]], speech_to: int = 0) -> bool:
        # The case's speech is sent until ``speech_to`` ns, one second of it a millisecond.
        def speech_after(t_ns: int) -> float:
            return max(0, speech_to - t_ns) / 1_000_000

        return _transcription_pending(_Session(*events), 0, speech_after)  # type: ignore[arg-type]

    said, reply = ("user_transcript", 3, {}), ("agent_response", 3, {})
    # Without stage timings: nothing heard yet, or a transcript still waiting for its reply.
    assert pending()
    assert pending(said)
    assert not pending(said, reply)
    assert pending(said, reply, ("user_transcript", 4, {}))
    # A reply with seconds of speech sent after it answers an earlier turn: the last turns
    # may still be queued for transcription (event n arrives at n ms).
    assert pending(said, reply, speech_to=2_500_000)
    assert not pending(said, reply, ("user_transcript", 4, {}), ("agent_response", 4, {}),
                       speech_to=2_500_000)  # fmt: skip
    # A breath after the last word (under 0.5 s of "speech" by energy) needs no answer.
    assert not pending(said, reply, speech_to=1_000_000 + 400_000)
    # With them: the newest turn being transcribed decides; an older one that was dropped
    # for it is a loss, not a reason to wait.
    cut = (STAGE, 5, {"stage": "utterance"})
    assert pending(cut)
    assert not pending(cut, (STAGE, 5, {"stage": "stt"}))
    assert not pending(cut, (STAGE, 6, {"stage": "utterance"}), (STAGE, 6, {"stage": "stt"}))
    assert pending((STAGE, 6, {"stage": "utterance"}), (STAGE, 5, {"stage": "stt"}))


def test_agent_audio_counts_as_playing_until_its_playout_ends() -> None:
    from sagelab.bench.streaming import _agent_playing_at

    # Two 0.5 s chunks received at 0 and 1 ms: they play until 1.0 s.
    session = _Session(("audio", 1, {"duration_s": 0.5}), ("audio", 1, {"duration_s": 0.5}))
    assert _agent_playing_at(session, int(0.9e9))  # type: ignore[arg-type]
    assert not _agent_playing_at(session, int(1.1e9))  # type: ignore[arg-type]
    cut = _Session(("audio", 1, {"duration_s": 5.0}), ("interruption", 1, {}))
    assert not _agent_playing_at(cut, int(0.9e9))  # type: ignore[arg-type]
    # Cut in the half second before: the agent stopped on the breath before the first word.
    assert _agent_playing_at(cut, int(0.3e9))  # type: ignore[arg-type]


# -- the command ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--case", "nope"], "no case 'nope'"),
        (["--chunk-ms", "5"], "between 10 and 1000 ms"),
        (["--chunk-ms", "20,fast"], "integers in ms"),
    ],
)
def test_the_command_refuses_bad_input_before_starting_anything(args, message) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from sagelab.cli import app

    result = CliRunner().invoke(app, ["bench", "streaming", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_the_command_names_the_bad_line_of_a_case_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sagelab.cli import app

    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "a", "parts": ["cards_001", 0.5]}\n')
    result = CliRunner().invoke(
        app, ["bench", "streaming", "--cases", str(cases), "--manifest",
              str(SPEECH / "manifest.jsonl")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "cases.jsonl:1" in "".join(result.output.split())
