"""The load-test users' arithmetic, without locust, gevent or a server."""

from __future__ import annotations

import json
from base64 import b64decode
from pathlib import Path

import pandas as pd
import pytest

from sagelab.audio import load_audio, speech_bounds
from sagelab.loadtest.measure import MicLoop, RawLog, TurnTracker, bytes_per_second, ws_url
from sagelab.loadtest.runner import check_thresholds, summarize

SPEECH = Path(__file__).resolve().parents[2] / "data" / "speech" / "goforward.wav"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("http://127.0.0.1:8765", "ws://127.0.0.1:8765/v1/convai/conversation?agent_id=scripted"),
        ("https://h.example/pre/", "wss://h.example/pre/v1/convai/conversation?agent_id=scripted"),
    ],
)
def test_ws_url_keeps_prefix_and_swaps_scheme(host: str, expected: str) -> None:
    assert ws_url(host, "scripted") == expected


def test_bytes_per_second() -> None:
    assert bytes_per_second("pcm_16000") == 32000
    assert bytes_per_second("ulaw_8000") == 8000
    assert bytes_per_second(None) == 32000


def test_mic_loop_is_whole_chunks_and_marks_the_end_of_speech() -> None:
    mic = MicLoop.from_file(SPEECH, gap_ms=2500, chunk_ms=100)
    chunks = [b64decode(json.loads(m)["user_audio_chunk"]) for m in mic.messages]
    assert {len(c) for c in chunks} == {3200}  # 100 ms of PCM16 at 16 kHz, padded
    speech = load_audio(SPEECH)
    _, end = speech_bounds(speech) or (0, speech.size)
    assert mic.speech_end_chunk == (end - 1) // 1600
    assert len(chunks) * 0.1 == pytest.approx(speech.size / 16000 + 2.5, abs=0.1)
    assert not any(chunks[-1])  # the cycle ends in silence


def test_first_audio_waits_for_a_newer_turn() -> None:
    turns = TurnTracker(timeout_s=10)
    turns.audio(1, 0.0, 0.1)  # greeting
    turns.speech_ended(1.0)
    first, _ = turns.audio(1, 1.2, 0.1)  # still the greeting: not an answer
    assert first == []
    first, gap = turns.audio(2, 1.5, 0.1)
    assert first == [pytest.approx(500.0)]
    assert gap is None  # a new turn starts, no gap across turns
    assert turns.pending == []


def test_audio_gap_counts_only_lateness_beyond_the_frame() -> None:
    turns = TurnTracker()
    turns.audio(3, 0.0, 0.1)
    assert turns.audio(3, 0.05, 0.1)[1] == 0.0  # early (server lead): no stutter
    assert turns.audio(3, 0.30, 0.1)[1] == pytest.approx(150.0)  # 0.15 + 0.1 due, came at 0.3
    turns.interrupted()
    assert turns.audio(3, 5.0, 0.1)[1] is None


def test_reply_timeout_expires_once() -> None:
    turns = TurnTracker(timeout_s=10)
    turns.speech_ended(0.0)
    assert turns.expired(5.0) == []
    assert turns.expired(10.5) == [pytest.approx(10500.0)]
    assert turns.expired(20.0) == []


def test_raw_log_and_summary(tmp_path: Path) -> None:
    log = RawLog(tmp_path / "raw.jsonl")
    for v in (10.0, 20.0, 30.0):
        log.write(1, "first_audio", v)
    log.write(2, "first_audio", 10000.0, "no reply audio within 10 s")
    log.write(1, "audio_gap", 0.0)
    log.close()
    raw = pd.read_json(tmp_path / "raw.jsonl", lines=True)
    stats = pd.DataFrame(
        [
            {"Name": "first_audio", "Request Count": 4, "Failure Count": 1},
            {"Name": "audio_gap", "Request Count": 1000, "Failure Count": 0},
            {"Name": "Aggregated", "Request Count": 1004, "Failure Count": 1},
        ]
    )
    s = summarize(stats, raw, None)
    assert s["metrics"]["first_audio"]["n"] == 3  # the failure has no latency
    assert s["metrics"]["first_audio"]["p50"] == 20.0
    assert s["metrics"]["first_audio"]["users_with_samples"] == 1
    assert s["error_rate"] == 0.25  # per-frame audio_gap requests do not dilute it
    assert s["error_samples"] == ["no reply audio within 10 s"]
    assert check_thresholds(s, 0.02, 1000) == ["error rate 25.00% > 2.00%"]
    assert check_thresholds(s, 0.5, 15) == ["first_audio p95 29 ms > 15 ms"]
