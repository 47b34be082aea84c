"""Piper (joe voice from its wheel): sentence chunks, 16 kHz audio, and a round trip via STT."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from sagelab.agents.local.errors import ModelLoadError
from sagelab.agents.local.stt import WhisperSTT, get_stt
from sagelab.agents.local.tts import (
    PiperTTS,
    SpeechChunk,
    approximate_alignment,
    get_tts,
    split_first_clause,
    split_sentences,
)
from sagelab.metrics.accuracy import score

TWO_SENTENCES = ("Please go forward ten meters.", "Then turn left at the red door.")


@pytest.fixture(scope="module")
def tts() -> PiperTTS:
    return get_tts()


@pytest.fixture(scope="module")
def stt() -> WhisperSTT:
    return get_stt()


@pytest.fixture(scope="module")
def chunks(tts: PiperTTS) -> list[SpeechChunk]:
    return list(tts.synthesize(" ".join(TWO_SENTENCES)))


def test_one_chunk_per_sentence_in_order(chunks: list[SpeechChunk]) -> None:
    assert [c.text for c in chunks] == list(TWO_SENTENCES)


def test_audio_is_16khz_pcm16_of_plausible_length(chunks: list[SpeechChunk]) -> None:
    for chunk in chunks:
        assert chunk.sample_rate == 16000
        assert chunk.pcm.dtype == np.int16 and chunk.pcm.ndim == 1
        # Conversational speech runs at roughly 10-20 characters a second.
        assert len(chunk.text) / 25 < chunk.duration_s < len(chunk.text) / 6
        rms = float(np.sqrt(np.mean(chunk.pcm.astype(np.float64) ** 2)))
        assert 500 < rms < 12000  # audible, not clipped flat


def test_round_trip_through_stt(chunks: list[SpeechChunk], stt: WhisperSTT) -> None:
    # Piper samples its noise, so each run speaks a little differently, and Whisper tiny slips
    # on short isolated sentences ("Please go forward" → "Place go for", CER 0.21): characters
    # decide, with a looser bound per sentence than for the whole reply. Unrelated speech or
    # noise scores far above both bounds.
    audio = np.concatenate([c.pcm for c in chunks])
    heard = stt.transcribe(audio).text
    assert score(" ".join(TWO_SENTENCES), heard).cer <= 0.2, heard
    for chunk in chunks:
        heard = stt.transcribe(chunk.pcm).text
        assert score(chunk.text, heard).cer <= 0.35, heard


def test_alignment_covers_every_character_in_order(chunks: list[SpeechChunk]) -> None:
    for chunk in chunks:
        assert chunk.alignment is not None
        assert "".join(ch for ch, _ in chunk.alignment) == chunk.text
        starts = [t for _, t in chunk.alignment]
        assert starts == sorted(starts)
        assert 0 <= starts[0] < 0.3
        assert starts[-1] < chunk.duration_s


def test_first_chunk_comes_before_the_rest_is_synthesised(tts: PiperTTS) -> None:
    text = "Yes. " + " ".join(
        ["This second sentence is a good deal longer than the first one."] * 3
    )
    t0 = time.perf_counter()
    stream = tts.synthesize(text)
    first = next(stream)
    first_s = time.perf_counter() - t0
    rest = list(stream)
    total_s = time.perf_counter() - t0
    assert first.text == "Yes."
    assert len(rest) == 3
    assert first_s < total_s / 3


def test_length_scale_slows_speech_down(tts: PiperTTS) -> None:
    slow = get_tts(length_scale=1.5)
    assert slow.voice is tts.voice  # same weights, another speed
    sentence = "The quick brown fox jumps over the lazy dog."
    normal_s = sum(c.duration_s for c in tts.synthesize(sentence))
    slow_s = sum(c.duration_s for c in slow.synthesize(sentence))
    assert slow_s > 1.25 * normal_s


def test_text_without_speech_yields_nothing(tts: PiperTTS) -> None:
    assert list(tts.synthesize("")) == []
    assert list(tts.synthesize("   ")) == []


def test_cache_returns_the_same_object(tts: PiperTTS) -> None:
    assert get_tts() is tts
    assert get_tts(tts.model_path, tts.config_path) is tts


def test_missing_model_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "voice.onnx"
    with pytest.raises(ModelLoadError, match=re.escape(str(missing))):
        PiperTTS(missing)
    missing.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match=re.escape(f"{missing}.json")):
        get_tts(missing)  # the config defaults to <model>.json, which is missing too


def test_corrupt_model_names_the_path(tmp_path: Path, tts: PiperTTS) -> None:
    model = tmp_path / "voice.onnx"
    model.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match=re.escape(str(model))):
        PiperTTS(model, tts.config_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there! How are you?", ["Hello there!", "How are you?"]),
        ("Dr. Smith is in. Mr. Jones is out.", ["Dr. Smith is in.", "Mr. Jones is out."]),
        ("It opens at 9 a.m. on Monday. Bye.", ["It opens at 9 a.m. on Monday.", "Bye."]),
        ('"Really?" she asked. Yes.', ['"Really?" she asked.', "Yes."]),
        ("It costs 3.50 dollars", ["It costs 3.50 dollars"]),
        ("Wait... What?", ["Wait...", "What?"]),
        ("", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_approximate_alignment_spreads_over_the_voiced_span() -> None:
    pcm = np.zeros(16000, dtype=np.int16)
    pcm[4000:12000] = (np.sin(np.arange(8000) * 0.1) * 8000).astype(np.int16)
    alignment = approximate_alignment("abcd", pcm)
    assert [ch for ch, _ in alignment] == list("abcd")
    assert [t for _, t in alignment] == pytest.approx([0.25, 0.375, 0.5, 0.625], abs=0.011)


LONG_REPLY = (
    "I found three flights to Lisbon tomorrow morning, and the cheapest one leaves at six "
    "forty with a short stop in Madrid. Shall I book it?"
)


@pytest.mark.fast
@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("Okay, sure.", ["Okay, sure."]),  # short: one piece
        (
            "I found three flights to Lisbon tomorrow morning, and the cheapest one leaves soon.",
            [
                "I found three flights to Lisbon tomorrow morning,",
                "and the cheapest one leaves soon.",
            ],
        ),
        (
            "Well, that depends on the weather, but most people take the coastal path.",
            ["Well, that depends on the weather,", "but most people take the coastal path."],
        ),
        (
            "The museum opens at nine and closes at five except on Mondays and holidays.",
            ["The museum opens at nine and closes at five except on Mondays and holidays."],
        ),
        (
            "Your table for four is booked at seven p.m. on Friday, ok.",
            ["Your table for four is booked at seven p.m. on Friday, ok."],
        ),
    ],
)
def test_split_first_clause(sentence: str, expected: list[str]) -> None:
    assert split_first_clause(sentence) == expected


@pytest.mark.model
def test_a_long_first_sentence_starts_with_its_first_clause(tts: PiperTTS) -> None:
    chunks = list(tts.synthesize(LONG_REPLY))
    assert [c.text for c in chunks] == [
        "I found three flights to Lisbon tomorrow morning,",
        "and the cheapest one leaves at six forty with a short stop in Madrid.",
        "Shall I book it?",
    ]
    assert chunks[0].duration_s < chunks[1].duration_s
    whole = list(get_tts(first_clause_chars=None).synthesize(LONG_REPLY))
    assert [c.text for c in whole] == split_sentences(LONG_REPLY)
    assert chunks[0].duration_s < 0.7 * whole[0].duration_s
