"""Loading any audio file into 16 kHz PCM16 and writing WAV."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from audio_helpers import best_correlation
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sagelab.audio import (
    AudioDecodeError,
    encode_webm_opus,
    load_audio,
    resample,
    rms_dbfs,
    save_wav,
    wav_bytes,
)


def encode_with_pyav(pcm: np.ndarray, container_format: str, codec: str, rate: int) -> bytes:
    """A compressed file as another program would write it, made with FFmpeg's encoders."""
    out = io.BytesIO()
    with av.open(out, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        samples = resample(pcm, 16000, rate)
        frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def test_a_16k_mono_wav_loads_exactly(goforward: np.ndarray, goforward_path: Path) -> None:
    pcm = load_audio(goforward_path)
    assert pcm.dtype == np.int16 and np.array_equal(pcm, goforward)
    assert np.array_equal(load_audio(str(goforward_path)), goforward)
    assert np.array_equal(load_audio(goforward_path.read_bytes()), goforward)


def test_load_resamples_to_the_requested_rate(goforward_path: Path) -> None:
    pcm = load_audio(goforward_path, rate=8000)
    assert abs(pcm.size - 44580 / 2) <= 1


def test_stereo_is_averaged_not_summed(goforward: np.ndarray, tmp_path: Path) -> None:
    # Both channels carry the same speech; a correct mixdown returns it at the same level.
    path = tmp_path / "stereo_44k.wav"
    at_44k = resample(goforward, 16000, 44100)
    sf.write(path, np.stack([at_44k, at_44k], axis=1), 44100, subtype="PCM_16")
    pcm = load_audio(path)
    assert abs(pcm.size - goforward.size) <= 1
    assert rms_dbfs(pcm) == pytest.approx(rms_dbfs(goforward), abs=0.1)
    assert best_correlation(goforward, pcm, max_lag=5) > 0.999


def test_flac_loads_exactly(goforward: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "speech.flac"
    sf.write(path, goforward, 16000, format="FLAC")
    assert np.array_equal(load_audio(path), goforward)


@pytest.mark.parametrize(
    ("container_format", "codec", "rate"),
    [("mp3", "mp3", 44100), ("ogg", "libopus", 48000), ("ogg", "flac", 22050)],
)
def test_compressed_formats_decode_through_pyav(
    container_format: str, codec: str, rate: int, goforward: np.ndarray
) -> None:
    data = encode_with_pyav(goforward, container_format, codec, rate)
    pcm = load_audio(data)
    assert abs(pcm.size - goforward.size) / 16000 < 0.06
    assert best_correlation(goforward, pcm) > 0.9


def test_browser_webm_loads(goforward: np.ndarray) -> None:
    pcm = load_audio(b"".join(encode_webm_opus(goforward)))
    assert abs(pcm.size - goforward.size) / 16000 < 0.06
    assert best_correlation(goforward, pcm) > 0.9


def test_undecodable_bytes_raise_a_clear_error() -> None:
    junk = np.random.default_rng(3).bytes(4096)
    with pytest.raises(AudioDecodeError, match=r"cannot decode audio from <4096 bytes in memory>"):
        load_audio(junk)


def test_undecodable_files_are_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp3"
    path.write_text("this is not audio at all\n" * 100)
    with pytest.raises(AudioDecodeError, match=r"notes\.mp3"):
        load_audio(path)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(wav_bytes(np.zeros(100, dtype=np.int16))[:30])
    with pytest.raises(AudioDecodeError, match=r"truncated\.wav"):
        load_audio(truncated)
    assert isinstance(AudioDecodeError("x"), ValueError)


def test_missing_files_raise_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.wav"):
        load_audio(tmp_path / "nowhere.wav")


def test_wav_bytes_is_a_complete_wav_file(goforward: np.ndarray) -> None:
    data = wav_bytes(goforward[:1600])
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    with wave.open(io.BytesIO(data)) as w:  # the standard library as an independent reader
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.array_equal(frames, goforward[:1600])


@settings(max_examples=30, deadline=None)
@given(pcm=arrays(np.int16, st.integers(0, 3000)), rate=st.sampled_from([8000, 16000, 24000]))
def test_wav_bytes_round_trips_any_length(pcm: np.ndarray, rate: int) -> None:
    data = wav_bytes(pcm, rate)
    with wave.open(io.BytesIO(data)) as w:
        assert w.getframerate() == rate and w.getnframes() == pcm.size
    assert np.array_equal(load_audio(data, rate=rate), pcm)


def test_save_wav_then_load(goforward: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    save_wav(path, goforward)
    assert np.array_equal(load_audio(path), goforward)
    save_wav(path, goforward[:800], rate=8000)
    assert sf.info(str(path)).samplerate == 8000
