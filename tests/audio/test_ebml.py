"""The push WebM demuxer, on streams built element by element.

FFmpeg's muxer writes one shape of WebM (SimpleBlocks, no lacing, mono, track 1). Browsers and
other muxers write others, so these streams are assembled by hand from the Opus packets of a
real recording: lacing of every kind, BlockGroups, other tracks, stereo, known and unknown
sizes. Each must decode to what FFmpeg's own stream of the same packets decodes to.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import struct

import av
import numpy as np
import pytest
from audio_helpers import best_correlation
from hypothesis import given, settings
from hypothesis import strategies as st

from sagelab.audio import IncrementalWebmDecoder, WebmDecodeError, encode_webm_opus
from sagelab.audio.ebml import (
    AUDIO,
    BLOCK,
    BLOCK_GROUP,
    CHANNELS,
    CLUSTER,
    CODEC_ID,
    CODEC_PRIVATE,
    CUES,
    DISCARD_PADDING,
    DOC_TYPE,
    EBML_HEADER,
    SAMPLING_FREQUENCY,
    SEGMENT,
    SIMPLE_BLOCK,
    TRACK_ENTRY,
    TRACK_NUMBER,
    TRACK_TYPE,
    TRACKS,
    VOID,
    AudioBlock,
    WebmDemuxer,
    WebmFormatError,
    parse_block,
)

UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"
TIMECODE = 0xE7
XIPH, FIXED, EBML = 1, 2, 3
# A SimpleBlock that claims 100 bytes and holds 4.
OVERRUN = SIMPLE_BLOCK.to_bytes(1, "big") + b"\x01" + (100).to_bytes(7, "big") + b"\x81\x00\x00\x80"


def el(element_id: int, payload: bytes = b"", *, unknown: bool = False) -> bytes:
    """An EBML element; sizes are written in the 8-byte form, as live muxers often do."""
    size = UNKNOWN_SIZE if unknown else b"\x01" + len(payload).to_bytes(7, "big")
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + size + payload


def uint(element_id: int, value: int) -> bytes:
    return el(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def block_payload(track: int, frames: list[bytes], lacing: int | None = None) -> bytes:
    """A (Simple)Block body: track, timecode 0, keyframe flag, frames laced as asked."""
    head = bytes([0x80 | track]) + b"\x00\x00"
    if lacing is None:
        assert len(frames) == 1
        return head + b"\x80" + frames[0]
    out = head + bytes([0x80 | lacing << 1, len(frames) - 1])
    if lacing == XIPH:
        for frame in frames[:-1]:
            out += b"\xff" * (len(frame) // 255) + bytes([len(frame) % 255])
    elif lacing == EBML:
        out += (0x4000 | len(frames[0])).to_bytes(2, "big")
        for prev, frame in itertools.pairwise(frames[:-1]):
            out += (0x4000 | (len(frame) - len(prev) + 8191)).to_bytes(2, "big")
    return out + b"".join(frames)


def track_entry(number: int, track_type: int, codec: str, private: bytes, channels: int) -> bytes:
    audio = el(SAMPLING_FREQUENCY, struct.pack(">d", 48000.0)) + uint(CHANNELS, channels)
    return el(
        TRACK_ENTRY,
        uint(TRACK_NUMBER, number)
        + uint(TRACK_TYPE, track_type)
        + el(CODEC_ID, codec.encode())
        + el(CODEC_PRIVATE, private)
        + (el(AUDIO, audio) if track_type == 2 else b""),
    )


def header(*entries: bytes) -> bytes:
    """EBML header, a Segment of unknown size (as a recorder writes it) and its Tracks."""
    ebml = el(EBML_HEADER, el(DOC_TYPE, b"webm"))
    return ebml + SEGMENT.to_bytes(4, "big") + UNKNOWN_SIZE + el(TRACKS, b"".join(entries))


def opus_packets(pcm: np.ndarray, channels: int = 1) -> tuple[list[bytes], bytes, int]:
    """The Opus packets, OpusHead and DiscardPadding (ns) of FFmpeg's encoding of ``pcm``."""
    if channels == 1:
        data = b"".join(encode_webm_opus(pcm))
    else:
        sink = io.BytesIO()
        with av.open(sink, "w", format="webm") as container:
            stream = container.add_stream("libopus", rate=48000, layout="stereo")
            up = np.repeat(pcm, 3)
            left, right = up, (up // 2).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(
                np.stack([left, right]).T.reshape(1, -1).copy(), format="s16", layout="stereo"
            )
            frame.sample_rate, frame.pts = 48000, 0
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
        data = sink.getvalue()
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.audio[0]
        packets = [bytes(p) for p in container.demux(stream) if p.size]
        private = bytes(stream.codec_context.extradata)
    # FFmpeg ends the stream with a BlockGroup whose DiscardPadding trims the encoder's
    # padding; the demuxer of this module must find the same value.
    return packets, private, WebmDemuxer().feed(data)[-1].discard_padding_ns


def decode(stream: bytes, piece: int | None = None) -> np.ndarray:
    decoder = IncrementalWebmDecoder()
    pieces = (
        [stream] if piece is None else [stream[i : i + piece] for i in range(0, len(stream), piece)]
    )
    out = [decoder.decode(p) for p in pieces]
    return np.concatenate([*out, decoder.finish()])


@pytest.fixture(scope="module")
def opus(goforward: np.ndarray) -> tuple[list[bytes], bytes, int]:
    return opus_packets(goforward)


@pytest.fixture(scope="module")
def reference(goforward: np.ndarray) -> np.ndarray:
    """FFmpeg's muxing of the same packets, decoded: what every hand-built stream must give."""
    return decode(b"".join(encode_webm_opus(goforward)))


def clusters(packets: list[bytes], make_block, *, per_cluster: int = 5, unknown: bool) -> bytes:
    out = b""
    for i in range(0, len(packets), per_cluster):
        body = uint(TIMECODE, i * 20) + b"".join(make_block(packets[i : i + per_cluster]))
        out += CLUSTER.to_bytes(4, "big") + UNKNOWN_SIZE + body if unknown else el(CLUSTER, body)
    return out


def last_in_group(frames: list[bytes], is_last: bool, padding_ns: int, track: int = 1) -> bytes:
    if not is_last:
        return el(SIMPLE_BLOCK, block_payload(track, frames[:1]))
    return el(
        BLOCK_GROUP,
        el(BLOCK, block_payload(track, frames[:1]))
        + el(DISCARD_PADDING, padding_ns.to_bytes(4, "big")),
    )


@pytest.mark.parametrize("unknown", [False, True], ids=["known-size", "unknown-size"])
@pytest.mark.parametrize("lacing", [XIPH, EBML], ids=["xiph", "ebml"])
def test_laced_blocks_decode_like_ffmpegs_stream(
    opus: tuple[list[bytes], bytes, int], reference: np.ndarray, lacing: int, unknown: bool
) -> None:
    packets, private, padding = opus
    body, last = packets[:-1], packets[-1]

    def laced(group: list[bytes]) -> list[bytes]:
        return [el(SIMPLE_BLOCK, block_payload(1, group, lacing))]

    stream = (
        header(track_entry(1, 2, "A_OPUS", private, 1))
        + clusters(body, laced, per_cluster=7, unknown=unknown)
        + el(CLUSTER, uint(TIMECODE, 0) + last_in_group([last], True, padding))
    )
    assert np.array_equal(decode(stream), reference)
    assert np.array_equal(decode(stream, piece=97), reference)


def test_fixed_lacing_splits_equal_frames() -> None:
    frames = [bytes([i]) * 40 for i in range(4)]
    assert parse_block(block_payload(3, frames, FIXED)) == (3, tuple(frames))
    with pytest.raises(WebmFormatError, match="cannot be 4 frames"):
        parse_block(block_payload(3, frames, FIXED) + b"x")


def test_other_tracks_are_ignored_and_block_groups_read(
    opus: tuple[list[bytes], bytes, int], reference: np.ndarray
) -> None:
    packets, private, padding = opus
    video = track_entry(1, 1, "V_VP8", b"", 0)

    def mixed(group: list[bytes]) -> list[bytes]:
        out = [el(SIMPLE_BLOCK, block_payload(1, [b"\x00" * 30]))]  # a "video" frame
        out += [el(BLOCK_GROUP, el(BLOCK, block_payload(2, [p]))) for p in group]
        return out

    stream = (
        header(video, track_entry(2, 2, "A_OPUS", private, 1))
        + el(VOID, b"\x00" * 300)
        + clusters(packets[:-1], mixed, unknown=True)
        + el(CLUSTER, last_in_group(packets[-1:], True, padding, track=2))
        + el(CUES, b"\x00" * 64)
    )
    assert np.array_equal(decode(stream, piece=61), reference)


def test_stereo_is_mixed_down_to_mono(goforward: np.ndarray, reference: np.ndarray) -> None:
    packets, private, _ = opus_packets(goforward, channels=2)
    stream = header(track_entry(1, 2, "A_OPUS", private, 2)) + clusters(
        packets, lambda g: [el(SIMPLE_BLOCK, block_payload(1, [p])) for p in g], unknown=True
    )
    pcm = decode(stream)
    # Left is the speech and right half of it, so the mix is three quarters of the speech.
    assert abs(pcm.size - goforward.size) < 0.03 * 16000
    assert best_correlation(goforward, pcm) > 0.8
    level = np.sqrt(np.mean(pcm.astype(float) ** 2) / np.mean(reference.astype(float) ** 2))
    assert 0.65 < level < 0.85


# --- errors ---------------------------------------------------------------------------------


def test_a_stream_without_an_audio_track_is_refused() -> None:
    stream = header(track_entry(1, 1, "V_VP8", b"", 0))
    with pytest.raises(WebmDecodeError, match="no audio track"):
        decode(stream)


def test_a_codec_other_than_opus_says_how_to_record(opus: tuple[list[bytes], bytes, int]) -> None:
    packets, _, _ = opus
    stream = header(track_entry(1, 2, "A_VORBIS", b"\x02", 1)) + el(
        CLUSTER, el(SIMPLE_BLOCK, block_payload(1, packets[:1]))
    )
    with pytest.raises(WebmDecodeError, match=r"'A_VORBIS', not Opus.*codecs=opus"):
        decode(stream)


def test_audio_before_the_tracks_is_corrupt(opus: tuple[list[bytes], bytes, int]) -> None:
    stream = (
        el(EBML_HEADER, el(DOC_TYPE, b"webm"))
        + SEGMENT.to_bytes(4, "big")
        + UNKNOWN_SIZE
        + el(CLUSTER, el(SIMPLE_BLOCK, block_payload(1, opus[0][:1])))
    )
    with pytest.raises(WebmDecodeError, match="before the Tracks"):
        decode(stream)


def test_a_second_header_means_a_second_recording(goforward: np.ndarray) -> None:
    one = b"".join(encode_webm_opus(goforward[:8000]))
    decoder = IncrementalWebmDecoder()
    assert decoder.decode(one).size > 0
    with pytest.raises(WebmDecodeError, match=r"second WebM header.*new connection"):
        decoder.decode(one)


def test_an_oversized_element_is_refused_before_it_is_buffered() -> None:
    demuxer = WebmDemuxer(max_element_bytes=1000)
    start = header(track_entry(1, 2, "A_OPUS", b"OpusHead", 1))
    demuxer.feed(start + CLUSTER.to_bytes(4, "big") + UNKNOWN_SIZE)
    with pytest.raises(WebmFormatError, match="2000 bytes, over the limit of 1000"):
        demuxer.feed(el(SIMPLE_BLOCK, b"\x81\x00\x00\x80" + b"\x00" * 1996)[:20])


def test_skipped_elements_are_not_buffered() -> None:
    demuxer = WebmDemuxer(max_element_bytes=1000)
    demuxer.feed(header(track_entry(1, 2, "A_OPUS", b"OpusHead", 1)))
    void = el(VOID, b"\x00" * 100_000)
    for i in range(0, len(void), 4096):
        assert demuxer.feed(void[i : i + 4096]) == []
        assert demuxer.pending_bytes < 16
    assert demuxer.position == len(header(track_entry(1, 2, "A_OPUS", b"OpusHead", 1))) + len(void)


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"RIFF\x00\x00\x00\x00WAVE", "must start with an EBML header"),
        (el(EBML_HEADER, el(DOC_TYPE, b"mp4")), "DocType is 'mp4'"),
        (el(EBML_HEADER, el(DOC_TYPE, b"webm")) + el(CLUSTER, b""), "outside the Segment"),
        (
            el(EBML_HEADER) + el(SEGMENT, el(TRACKS, b"\x00" * 8)),
            "invalid EBML variable-length integer",
        ),
        (el(EBML_HEADER) + el(SEGMENT, el(CLUSTER, OVERRUN)), "overruns its parent"),
        (el(EBML_HEADER) + el(SEGMENT, el(TRACKS, unknown=True)), "unknown size"),
    ],
    ids=["wav", "doctype", "no-segment", "bad-vint", "overrun", "unknown-tracks"],
)
def test_malformed_streams_fail_with_the_reason(stream: bytes, message: str) -> None:
    with pytest.raises(WebmFormatError, match=message):
        WebmDemuxer().feed(stream)


def test_blocks_of_the_audio_track_come_out_as_they_complete(
    opus: tuple[list[bytes], bytes, int],
) -> None:
    packets, private, _ = opus
    start = (
        header(track_entry(1, 2, "A_OPUS", private, 1)) + CLUSTER.to_bytes(4, "big") + UNKNOWN_SIZE
    )
    demuxer = WebmDemuxer()
    assert demuxer.feed(start) == []
    assert demuxer.track is not None and demuxer.track.codec_private == private
    block = el(SIMPLE_BLOCK, block_payload(1, packets[:1]))
    assert demuxer.feed(block[:-1]) == []
    assert demuxer.feed(block[-1:]) == [AudioBlock((packets[0],))]


@settings(max_examples=60, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255), st.integers(0, 2)),
        min_size=1,
        max_size=12,
    ),
    piece=st.integers(1, 3000),
)
def test_damaged_streams_fail_only_with_decode_errors(
    goforward: np.ndarray, edits: list[tuple[float, int, int]], piece: int
) -> None:
    """A hostile or broken client gets a WebmDecodeError (the route turns it into a close
    that says why), never another exception that would look like a server bug."""
    stream = bytearray(b"".join(encode_webm_opus(goforward[:16000])))
    for where, value, kind in edits:
        at = int(where * len(stream))
        if kind == 0:
            stream[at] = value
        elif kind == 1:
            del stream[at : at + value % 40 + 1]
        else:
            stream[at:at] = bytes([value]) * (value % 20 + 1)
    with contextlib.suppress(WebmDecodeError):
        decode(bytes(stream), piece)
