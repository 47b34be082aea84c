"""Wire formats: parsing the protocol's names and converting at the edge."""

from __future__ import annotations

import numpy as np
import pytest
from audio_helpers import best_correlation
from hypothesis import given
from hypothesis import strategies as st

from sagelab.audio import (
    FORMAT_NAMES,
    AudioFormat,
    WireDecoder,
    WireEncoder,
    decode_to_pcm16,
    encode_pcm16,
    from_bytes,
    mulaw,
    pcm_bytes,
)

PROTOCOL_NAMES = [
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
    "ulaw_8000",
]


@pytest.mark.parametrize("name", PROTOCOL_NAMES)
def test_every_protocol_name_parses_and_round_trips(name: str) -> None:
    fmt = AudioFormat.parse(name)
    assert fmt.name == name == str(fmt)
    assert fmt.sample_rate == int(name.split("_")[1])
    assert fmt.encoding == name.split("_")[0]
    assert AudioFormat(fmt.encoding, fmt.sample_rate) == fmt
    assert set(FORMAT_NAMES) == set(PROTOCOL_NAMES)


@pytest.mark.parametrize(
    "name", ["", "pcm", "PCM_16000", "pcm_16000 ", "pcm_11025", "ulaw_16000", "mp3_44100"]
)
def test_other_names_are_rejected_with_the_valid_list(name: str) -> None:
    with pytest.raises(ValueError) as info:
        AudioFormat.parse(name)
    for valid in PROTOCOL_NAMES:
        assert valid in str(info.value)


@given(st.text(max_size=20).filter(lambda s: s not in PROTOCOL_NAMES))
def test_no_other_string_parses(name: str) -> None:
    with pytest.raises(ValueError, match="expected one of"):
        AudioFormat.parse(name)


def test_unsupported_combinations_cannot_be_constructed() -> None:
    with pytest.raises(ValueError, match="ulaw_16000"):
        AudioFormat("ulaw", 16000)
    with pytest.raises(ValueError):
        AudioFormat("pcm", 11025)


def test_sizes_and_durations() -> None:
    pcm16 = AudioFormat.parse("pcm_16000")
    ulaw = AudioFormat.parse("ulaw_8000")
    assert (pcm16.bytes_per_sample, ulaw.bytes_per_sample) == (2, 1)
    assert pcm16.bytes_for(250) == 8000  # the Python SDK's recommended input chunk
    assert ulaw.bytes_for(20) == 160  # one telephony frame
    assert AudioFormat.parse("pcm_44100").bytes_for(10) == 882
    assert pcm16.duration_s(8000) == 0.25
    assert ulaw.duration_s(8000) == 1.0
    with pytest.raises(ValueError, match="whole number"):
        pcm16.duration_s(8001)


def test_pcm_16000_is_the_raw_little_endian_samples(goforward: np.ndarray) -> None:
    fmt = AudioFormat.parse("pcm_16000")
    wire = encode_pcm16(goforward, fmt)
    assert wire == pcm_bytes(goforward)
    assert encode_pcm16(wire, fmt) == wire  # raw bytes are accepted as input too
    assert np.array_equal(decode_to_pcm16(wire, fmt), goforward)


@pytest.mark.parametrize("name", PROTOCOL_NAMES)
def test_round_trip_through_each_format_keeps_the_speech(name: str, goforward: np.ndarray) -> None:
    fmt = AudioFormat.parse(name)
    wire = encode_pcm16(goforward, fmt)
    seconds = goforward.size / 16000
    assert len(wire) == pytest.approx(fmt.bytes_for(seconds * 1000), abs=fmt.bytes_per_sample)
    back = decode_to_pcm16(wire, fmt)
    assert back.dtype == np.int16
    assert abs(back.size - goforward.size) <= 1
    # 8 kHz formats drop everything above 4 kHz; the rest are near-transparent.
    threshold = 0.95 if fmt.sample_rate == 8000 else 0.999
    assert best_correlation(goforward, back, max_lag=5) > threshold


@pytest.mark.parametrize("name", [n for n in PROTOCOL_NAMES if n.startswith("pcm")])
@given(data=st.binary(max_size=301).filter(lambda b: len(b) % 2 == 1))
def test_odd_pcm_byte_counts_raise_instead_of_truncating(name: str, data: bytes) -> None:
    fmt = AudioFormat.parse(name)
    with pytest.raises(ValueError, match=f"{name}.*even number of bytes"):
        decode_to_pcm16(data, fmt)
    with pytest.raises(ValueError, match="even number of bytes"):
        encode_pcm16(data, fmt)


@given(data=st.binary(max_size=301))
def test_any_bytes_are_valid_ulaw(data: bytes) -> None:
    assert decode_to_pcm16(data, AudioFormat.parse("ulaw_8000")).size == pytest.approx(
        2 * len(data), abs=1
    )


def test_float_arrays_are_refused(goforward: np.ndarray) -> None:
    with pytest.raises(TypeError, match="int16"):
        encode_pcm16(goforward.astype(np.float32), AudioFormat.parse("pcm_16000"))  # type: ignore[arg-type]


def wire_samples(wire: bytes, fmt: AudioFormat) -> np.ndarray:
    """The wire's samples at the wire's own rate, without resampling."""
    return mulaw.decode(wire) if fmt.encoding == "ulaw" else from_bytes(wire)


@pytest.mark.parametrize("name", ["pcm_8000", "pcm_24000", "pcm_44100", "ulaw_8000"])
def test_streaming_codecs_match_one_shot_conversion(name: str, goforward: np.ndarray) -> None:
    fmt = AudioFormat.parse(name)
    chunks = [goforward[i : i + 4000] for i in range(0, goforward.size, 4000)]
    encoder = WireEncoder(fmt)
    wire = b"".join(encoder.encode(c, last=i == len(chunks) - 1) for i, c in enumerate(chunks))
    one_shot = encode_pcm16(goforward, fmt)
    assert len(wire) == len(one_shot)
    assert best_correlation(wire_samples(one_shot, fmt), wire_samples(wire, fmt), 0) > 0.9999

    decoder = WireDecoder(fmt)
    step = fmt.bytes_for(100)
    pieces = [wire[i : i + step] for i in range(0, len(wire), step)]
    back = np.concatenate(
        [decoder.decode(p, last=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    )
    reference = decode_to_pcm16(wire, fmt)
    assert back.size == reference.size
    assert best_correlation(reference, back, max_lag=0) > 0.9999
