"""G.711 μ-law checked against FFmpeg's pcm_mulaw codec (through PyAV)."""

from __future__ import annotations

import av
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sagelab.audio import mulaw

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def ffmpeg_encode(samples: np.ndarray) -> np.ndarray:
    codec = av.CodecContext.create("pcm_mulaw", "w")
    codec.sample_rate = 8000
    codec.format = "s16"
    codec.layout = "mono"
    codec.open()
    frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="s16", layout="mono")
    frame.sample_rate = 8000
    frame.pts = 0
    packets = [*codec.encode(frame), *codec.encode(None)]
    return np.frombuffer(b"".join(bytes(p) for p in packets), dtype=np.uint8)


def ffmpeg_decode(data: bytes) -> np.ndarray:
    codec = av.CodecContext.create("pcm_mulaw", "r")
    codec.sample_rate = 8000
    codec.layout = "mono"
    frames = codec.decode(av.Packet(data))
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def test_decoding_matches_ffmpeg_for_every_code() -> None:
    ours = mulaw.decode(ALL_CODES)
    assert ours.dtype == np.int16
    assert np.array_equal(ours, ffmpeg_decode(ALL_CODES))


def assert_neighbouring_levels(x: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> None:
    """Where the encoders disagree, they chose the two levels either side of the input."""
    differ = ours != theirs
    level_ours = mulaw.decode(ours[differ].tobytes()).astype(np.int32)
    level_theirs = mulaw.decode(theirs[differ].tobytes()).astype(np.int32)
    samples = x[differ].astype(np.int32)
    assert np.all(np.minimum(level_ours, level_theirs) <= samples)
    assert np.all(samples <= np.maximum(level_ours, level_theirs))
    assert np.abs(ours[differ].astype(np.int32) - theirs[differ]).max() == 1


def test_encoding_matches_ffmpeg_except_on_decision_boundaries() -> None:
    ours = np.frombuffer(mulaw.encode(ALL_INT16), dtype=np.uint8)
    theirs = ffmpeg_encode(ALL_INT16)
    assert theirs.size == ours.size == 65536
    assert (ours != theirs).mean() < 0.02
    assert_neighbouring_levels(ALL_INT16, ours, theirs)


def snr_db(reference: np.ndarray, codes: np.ndarray) -> float:
    x = reference.astype(np.float64)
    noise = mulaw.decode(codes.tobytes()).astype(np.float64) - x
    return float(10 * np.log10(np.sum(x**2) / np.sum(noise**2)))


def test_encoding_real_speech_is_as_good_as_ffmpeg(goforward: np.ndarray) -> None:
    # FFmpeg floors negative samples to 14 bits before its table lookup, so quiet speech
    # meets its boundaries often (about 1 sample in 8 here); the levels still neighbour.
    ours = np.frombuffer(mulaw.encode(goforward), dtype=np.uint8)
    theirs = ffmpeg_encode(goforward)
    assert (ours == theirs).mean() > 0.8
    assert_neighbouring_levels(goforward, ours, theirs)
    assert snr_db(goforward, ours) > 35.0
    assert snr_db(goforward, ours) >= snr_db(goforward, theirs) - 0.1


def test_reference_points_of_g711() -> None:
    assert mulaw.encode(np.array([0, 32767, -32768, -1], dtype=np.int16)) == b"\xff\x80\x00\x7f"
    assert mulaw.decode(b"\xff\x80\x00\x7f").tolist() == [0, 32124, -32124, 0]


def test_every_code_survives_decode_then_encode() -> None:
    again = mulaw.encode(mulaw.decode(ALL_CODES))
    # 0x7F is "negative zero": it decodes to 0, which encodes as positive zero 0xFF.
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF
    assert again == bytes(expected)


def test_quantisation_error_is_within_half_a_step() -> None:
    # A step in segment e is 2**(e+3); relative to |x| + bias that is at most 1/16.
    x = ALL_INT16[np.abs(ALL_INT16.astype(np.int32)) <= 32124].astype(np.int32)
    error = np.abs(mulaw.decode(mulaw.encode(x.astype(np.int16))).astype(np.int32) - x)
    assert np.all(error <= (np.abs(x) + 0x84) / 32)


@given(arrays(np.int16, st.integers(0, 500)))
def test_one_byte_per_sample(x: np.ndarray) -> None:
    encoded = mulaw.encode(x)
    assert len(encoded) == x.size
    assert mulaw.decode(encoded).size == x.size
