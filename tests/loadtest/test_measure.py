"""The load-test users' arithmetic and microphones, without locust, gevent or a server."""

from __future__ import annotations

import json
from base64 import b64decode
from pathlib import Path

import numpy as np
import pytest

from sagelab.audio import IncrementalWebmDecoder, load_audio, speech_bounds
from sagelab.loadtest.measure import RawLog, TurnTracker
from sagelab.loadtest.mic import MicLoop
from sagelab.loadtest.summary import Budget, RawTail, measure, read_raw

SPEECH = Path(__file__).resolve().parents[2] / "data" / "speech" / "goforward.wav"


def test_convai_mic_is_whole_chunks_and_marks_speech() -> None:
    mic = MicLoop.convai(SPEECH, gap_ms=2500, chunk_ms=100)
    chunks = [b64decode(json.loads(m)["user_audio_chunk"]) for m in mic.messages]
    assert {len(c) for c in chunks} == {3200}  # 100 ms of PCM16 at 16 kHz, padded
    speech = load_audio(SPEECH)
    start, end = speech_bounds(speech) or (0, speech.size)
    assert mic.speech_start_chunk == start // 1600
    assert mic.speech_end_chunk == (end - 1) // 1600
    # The user stopped talking this long before the speech-end chunk could be sent.
    assert mic.speech_end_tail_s == pytest.approx((mic.speech_end_chunk + 1) * 0.1 - end / 16000)
    assert 0 < mic.speech_end_tail_s <= 0.1
    assert 0 < mic.speech_start_lead_s <= 0.1
    assert len(chunks) == mic.cycle_chunks
    assert len(chunks) * 0.1 == pytest.approx(speech.size / 16000 + 2.5, abs=0.1)
    assert not any(chunks[-1])  # the cycle ends in silence
    assert mic.repeats
    assert mic.speech_ends_at(mic.speech_end_chunk + 3 * mic.cycle_chunks)
    assert not mic.speech_ends_at(mic.speech_end_chunk + 1)


def test_a_lead_of_silence_delays_the_first_utterance_only() -> None:
    plain = MicLoop.convai(SPEECH, gap_ms=1000)
    mic = MicLoop.convai(SPEECH, gap_ms=1000, lead_ms=1250)
    assert mic.lead_chunks == 13  # rounded up to whole 100 ms chunks
    silent = b64decode(json.loads(mic.lead_message or "{}")["user_audio_chunk"])
    assert len(silent) == 3200 and not any(silent)
    assert [mic.message(k) for k in range(13)] == [mic.lead_message] * 13
    assert mic.message(13) == plain.message(0)
    assert mic.message(13 + 2 * mic.cycle_chunks + 4) == plain.message(4)
    end = plain.speech_end_chunk
    assert plain.speech_ends_at(end) and not mic.speech_ends_at(end)
    assert mic.speech_ends_at(13 + end) and mic.speech_ends_at(13 + mic.cycle_chunks + end)
    assert mic.speech_starts_at(13 + mic.speech_start_chunk)


def test_relay_mic_is_one_webm_stream_that_decodes_to_the_whole_session() -> None:
    mic = MicLoop.relay(SPEECH, gap_ms=1000, chunk_ms=100, cycles=2, lead_ms=500)
    parts = [b64decode(json.loads(m)["data"]) for m in mic.messages]
    assert mic.message(len(parts)) is None  # the session is over: the user sends 'end'
    assert mic.message(0) == mic.messages[0]
    assert {json.loads(m)["type"] for m in mic.messages} == {"audio"}
    assert parts[0][:4] == b"\x1a\x45\xdf\xa3"  # the EBML header comes once, first
    assert not any(p[:4] == b"\x1a\x45\xdf\xa3" for p in parts[1:])
    assert len(parts) >= 5 + 2 * mic.cycle_chunks
    assert not mic.repeats
    with IncrementalWebmDecoder() as decoder:
        for part in parts:
            decoder.feed(part)
        decoder.close()
        pcm = decoder.read()
    assert pcm.size / 16000 == pytest.approx(0.5 + 2 * mic.cycle_s, abs=0.05)
    # Speech where the schedule has it: chunk k of the stream is chunk k - lead of the cycles.
    for cycle in (0, 1):
        first = (mic.lead_chunks + cycle * mic.cycle_chunks) * 1600
        bounds = speech_bounds(pcm[first : first + mic.cycle_chunks * 1600])
        assert bounds is not None
        assert bounds[0] // 1600 == pytest.approx(mic.speech_start_chunk, abs=1)
        assert mic.speech_starts_at(first // 1600 + mic.speech_start_chunk)


def test_mic_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="at least one cycle"):
        MicLoop.relay(SPEECH, cycles=0)
    with pytest.raises(ValueError, match="chunk_ms > 0"):
        MicLoop.convai(SPEECH, chunk_ms=0)


def test_first_audio_waits_for_a_newer_turn() -> None:
    turns = TurnTracker(timeout_s=10)
    turns.audio(1, 0.0, 0.1)  # greeting
    turns.speech_ended(1.0)
    assert turns.audio(1, 1.2, 0.1).first_audio_ms == []  # still the greeting
    frame = turns.audio(2, 1.5, 0.1)
    assert frame.first_audio_ms == [pytest.approx(500.0)]
    assert frame.gap_ms is None  # a new turn starts: no gap across turns
    assert turns.pending == []


def test_audio_gap_counts_only_lateness_beyond_the_frame() -> None:
    turns = TurnTracker()
    turns.audio(3, 0.0, 0.1)
    assert turns.audio(3, 0.05, 0.1).gap_ms == 0.0  # early (server lead): no stutter
    assert turns.audio(3, 0.30, 0.1).gap_ms == pytest.approx(150.0)  # due 0.15, came at 0.3
    turns.interrupted(0.35)
    assert turns.audio(3, 5.0, 0.1).gap_ms is None


def test_stutter_is_the_playout_underrun_of_a_turn() -> None:
    turns = TurnTracker()
    # A 200 ms lead arrives at once, then frames every 100 ms: the buffer never empties.
    for i, t in enumerate([0.0, 0.0, 0.0, 0.1, 0.2, 0.3]):
        assert turns.audio(1, t, 0.1).stutter_ms is None, i
    # Playout ends at 0.6; a frame at 0.9 means the player waited 300 ms.
    turns.audio(1, 0.9, 0.1)
    turns.audio(1, 0.95, 0.1)  # back ahead: no more underrun
    first_of_next = turns.audio(2, 3.0, 0.1)
    assert first_of_next.stutter_ms == pytest.approx(300.0)  # turn 1's total, closed by turn 2
    assert turns.finish_turn() == 0.0  # turn 2 played cleanly
    assert turns.finish_turn() is None  # nothing playing any more


def test_interruption_latency_and_the_cut_turn() -> None:
    turns = TurnTracker()
    turns.audio(1, 0.0, 1.0)
    turns.speech_started(0.5)
    latency, stutter = turns.interrupted(0.62)
    assert latency == pytest.approx(120.0)
    assert stutter == 0.0
    assert turns.interrupted(0.9) == (None, None)  # no new speech, nothing playing


def test_reply_timeout_expires_once() -> None:
    turns = TurnTracker(timeout_s=10)
    turns.speech_ended(0.0)
    assert turns.expired(5.0) == []
    assert turns.expired(10.5) == [pytest.approx(10500.0)]
    assert turns.expired(20.0) == []


def _log(
    tmp_path: Path, worker: int, rows: list[tuple[int, str, float | None, str | None]]
) -> Path:
    log = RawLog(tmp_path / f"raw-{worker}.jsonl", worker=worker)
    for user, metric, value, error in rows:
        log.write(user, metric, value, error, **({"code": 1000} if metric == "close" else {}))
    log.close()
    assert log.path is not None
    return log.path


def test_raw_logs_of_workers_merge_and_measure(tmp_path: Path) -> None:
    a = _log(
        tmp_path,
        1,
        [
            (1, "connect", 5.0, None),
            (1, "first_audio", 10.0, None),
            (1, "first_audio", 20.0, None),
            (1, "stutter", 0.0, None),
            (1, "stutter", 40.0, None),
            *[(1, "audio_gap", 0.0, None)] * 500,
            (1, "close", 60000.0, None),
        ],
    )
    b = _log(
        tmp_path,
        2,
        [
            (1, "connect", 7.0, None),  # user 1 of another worker: another session
            (1, "first_audio", 30.0, None),
            (1, "first_audio", 10000.0, "no reply audio within 10 s"),
        ],
    )
    raw = read_raw([a, b, tmp_path / "missing.jsonl"])
    s = measure(raw)
    assert s["sessions"] == 2
    assert s["metrics"]["connect"]["users_with_samples"] == 2
    assert s["metrics"]["first_audio"]["n"] == 3  # the failure has no latency
    assert s["metrics"]["first_audio"]["p50"] == 20.0
    assert s["metrics"]["first_audio"]["failures"] == 1
    # Failures over connects, replies and closes; the 500 audio frames do not dilute it.
    assert s["counted_requests"] == 7
    assert s["error_rate"] == pytest.approx(1 / 7, abs=1e-4)
    assert s["error_samples"] == ["1x no reply audio within 10 s"]
    assert s["stutter"] == {"turns": 2, "turns_with_stutter": 1, "share": 0.5, "total_ms": 40.0}
    assert s["close_codes"] == {"1000": 1}
    assert Budget().violations(s) == [
        "error rate 14.29% > 2.00%",
        "stutter in 50.0% of turns > 5.0%",
    ]
    lenient = Budget(max_error_rate=0.5, max_p95_first_audio_ms=15, max_stutter_share=0.5)
    assert lenient.violations(s) == ["first_audio p95 29 ms > 15 ms"]


def test_a_run_where_nobody_answered_breaks_any_budget(tmp_path: Path) -> None:
    raw = read_raw([_log(tmp_path, 1, [(1, "connect", 5.0, None)])])
    assert "no first_audio sample: no agent ever answered" in Budget().violations(measure(raw))


def test_read_raw_of_nothing_is_an_empty_frame(tmp_path: Path) -> None:
    raw = read_raw([tmp_path / "none.jsonl"])
    assert len(raw) == 0
    assert measure(raw)["error_rate"] == 0.0


def test_voice_to_voice_budget_is_judged_on_its_own(tmp_path: Path) -> None:
    rows = [(1, "first_audio", float(v), None) for v in np.linspace(900, 1000, 20)]
    rows += [(1, "voice_to_voice", float(v), None) for v in np.linspace(1400, 1600, 20)]
    s = measure(read_raw([_log(tmp_path, 1, rows)]))
    local = Budget(max_p95_first_audio_ms=None, max_p95_voice_to_voice_ms=1500)
    assert local.violations(s) == ["voice_to_voice p95 1590 ms > 1500 ms"]


def test_raw_tail_reads_each_complete_line_once(tmp_path: Path) -> None:
    path = tmp_path / "raw-1.jsonl"
    rows = [{"w": 1, "user": 1, "metric": "first_audio", "value_ms": 500.0 + i, "t": 100.0 + i,
             "ok": True, "error": None} for i in range(4)]  # fmt: skip
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:20])  # a line half-written
    tail = RawTail([path, tmp_path / "raw-2.jsonl"])
    assert tail.frame()["value_ms"].tolist() == [500.0]
    path.write_text(json.dumps(rows[0]) + "\n" + "".join(json.dumps(r) + "\n" for r in rows[1:]))
    frame = tail.frame(since=101.0)
    assert frame["value_ms"].tolist() == [501.0, 502.0, 503.0]
    assert measure(frame)["metrics"]["first_audio"]["n"] == 3
    assert tail.frame(since=103.0)["t"].tolist() == [103.0]
