"""Browser WebM/Opus: MediaRecorder-style chunks and the incremental decoder."""

from __future__ import annotations

import asyncio
import io
import itertools
import threading

import av
import numpy as np
import pytest
import soxr
from audio_helpers import best_correlation, read_speech
from hypothesis import given, settings
from hypothesis import strategies as st

from sagelab.audio import (
    IncrementalWebmDecoder,
    WebmDecodeError,
    encode_webm_opus,
    split_at_clusters,
    to_int16,
)
from sagelab.audio.ebml import WebmDemuxer

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
CLUSTER_ID = b"\x1f\x43\xb6\x75"


@pytest.fixture(scope="module")
def chunks(goforward: np.ndarray) -> list[bytes]:
    return encode_webm_opus(goforward)


def decode_all(decoder: IncrementalWebmDecoder, pieces: list[bytes]) -> np.ndarray:
    out = []
    for piece in pieces:
        decoder.feed(piece)
        out.append(decoder.read())
    decoder.close()
    out.append(decoder.read())
    return np.concatenate(out)


# --- encoding like MediaRecorder ---------------------------------------------------------


def test_chunks_look_like_a_media_recorder_stream(chunks: list[bytes]) -> None:
    first, rest = chunks[0], chunks[1:]
    assert first.startswith(EBML_MAGIC)
    assert b"webm" in first[:64] and b"A_OPUS" in first
    assert CLUSTER_ID in first  # the first chunk already carries audio
    assert all(c.startswith(CLUSTER_ID) for c in rest)
    # 2.79 s in 100 ms timeslices.
    assert 25 <= len(chunks) <= 32


def test_timeslice_sets_the_chunk_duration(goforward: np.ndarray) -> None:
    assert 10 <= len(encode_webm_opus(goforward, timeslice_ms=250)) <= 13


def test_bitrate_is_passed_to_the_encoder(goforward: np.ndarray) -> None:
    low = sum(map(len, encode_webm_opus(goforward, bitrate=12000)))
    high = sum(map(len, encode_webm_opus(goforward, bitrate=64000)))
    assert low < high / 2


def test_joined_chunks_are_a_valid_file_for_ffmpeg(
    chunks: list[bytes], goforward: np.ndarray
) -> None:
    with av.open(io.BytesIO(b"".join(chunks)), "r") as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        assert (stream.codec_context.sample_rate, stream.codec_context.channels) == (48000, 1)
        samples = sum(int(frame.samples) for frame in container.decode(stream))
    assert abs(samples / 48000 - goforward.size / 16000) < 0.06


def test_split_at_clusters_is_lossless(chunks: list[bytes]) -> None:
    whole = b"".join(chunks)
    assert split_at_clusters(whole) == chunks
    with pytest.raises(ValueError, match="EBML"):
        split_at_clusters(b"\x00" * 64)


def test_invalid_arguments(goforward: np.ndarray) -> None:
    with pytest.raises(ValueError, match="timeslice_ms"):
        encode_webm_opus(goforward, timeslice_ms=0)
    with pytest.raises(TypeError, match="int16"):
        encode_webm_opus(goforward.astype(np.float32))  # type: ignore[arg-type]


# --- incremental decoding ----------------------------------------------------------------


def test_decodes_speech_chunk_by_chunk(chunks: list[bytes], goforward: np.ndarray) -> None:
    pcm = decode_all(IncrementalWebmDecoder(), chunks)
    assert pcm.dtype == np.int16
    assert abs(pcm.size - goforward.size) / 16000 < 0.06
    assert best_correlation(goforward, pcm) > 0.8


def test_matches_ffmpeg_decoding_the_whole_file(chunks: list[bytes]) -> None:
    """Same packets, same Opus decoder: only where the resampler is cut may differ."""
    with av.open(io.BytesIO(b"".join(chunks)), "r") as container:
        stream = container.streams.audio[0]
        full = np.concatenate([f.to_ndarray()[0] for f in container.decode(stream)])
    expected = to_int16(soxr.resample(full, 48000, 16000, quality="HQ"))
    pcm = decode_all(IncrementalWebmDecoder(), chunks)
    assert pcm.size == expected.size  # pre-skip and end padding trimmed as FFmpeg does
    assert np.abs(pcm.astype(np.int32) - expected).max() <= 2


@pytest.mark.parametrize(
    "name", ["cards_003.wav", "librivox_sense_and_sensibility_01_austen_64kb-0870.wav"]
)
def test_decodes_other_speakers(name: str) -> None:
    speech = read_speech(name)
    pcm = decode_all(IncrementalWebmDecoder(), encode_webm_opus(speech))
    assert abs(pcm.size - speech.size) / 16000 < 0.06
    assert best_correlation(speech, pcm) > 0.8


def test_each_chunk_is_decoded_when_it_arrives(chunks: list[bytes], goforward: np.ndarray) -> None:
    """No look-ahead beyond the resampler's: the audio of a timeslice comes out of the call
    that delivers it, less what soxr holds back for its filter (at most ~37 ms, 20 ms on
    average, as before the decoder went thread-free), so a turn's end is seen at once."""
    decoder = IncrementalWebmDecoder()
    demuxer = WebmDemuxer()
    total = frames = 0
    for chunk in chunks:
        total += decoder.decode(chunk).size
        frames += sum(len(block.frames) for block in demuxer.feed(chunk))
        sent = min(goforward.size, frames * 320 - 104)  # 20 ms frames, less Opus pre-skip
        assert sent - 640 <= total <= sent
    assert decoder.finish().size + total == goforward.size


def with_unknown_cluster_size(chunk: bytes) -> bytes:
    """Mark the chunk's cluster size "unknown", as live muxers (browsers' too) may write it."""
    at = chunk.index(CLUSTER_ID) + len(CLUSTER_ID)
    length = 9 - chunk[at].bit_length()
    marker = 0x80 >> (length - 1)
    return (
        chunk[:at] + bytes([marker | (marker - 1)]) + b"\xff" * (length - 1) + chunk[at + length :]
    )


def test_clusters_of_unknown_size_decode_the_same(chunks: list[bytes]) -> None:
    live = [with_unknown_cluster_size(c) for c in chunks]
    assert live != chunks
    reference = decode_all(IncrementalWebmDecoder(), chunks)
    assert np.array_equal(decode_all(IncrementalWebmDecoder(), live), reference)


@settings(max_examples=8, deadline=None)
@given(cuts=st.lists(st.integers(1, 30000), min_size=1, max_size=40))
def test_arbitrary_byte_splits_decode_identically(chunks: list[bytes], cuts: list[int]) -> None:
    whole = b"".join(chunks)
    points = sorted({0, len(whole), *(c % len(whole) for c in cuts)})
    pieces = [whole[a:b] for a, b in itertools.pairwise(points)]
    reference = decode_all(IncrementalWebmDecoder(), chunks)
    assert np.array_equal(decode_all(IncrementalWebmDecoder(), pieces), reference)


def test_callback_receives_the_audio_instead_of_read(chunks: list[bytes]) -> None:
    received: list[np.ndarray] = []
    threads: set[str] = set()

    def on_audio(pcm: np.ndarray) -> None:
        threads.add(threading.current_thread().name)
        received.append(pcm)

    decoder = IncrementalWebmDecoder(on_audio=on_audio)
    assert decode_all(decoder, chunks).size == 0
    reference = decode_all(IncrementalWebmDecoder(), chunks)
    assert np.array_equal(np.concatenate(received), reference)
    assert threads == {threading.current_thread().name}  # the caller's, no decoder thread


def test_a_failing_callback_stops_the_decoder(chunks: list[bytes]) -> None:
    def on_audio(pcm: np.ndarray) -> None:
        raise KeyError("consumer gone")

    decoder = IncrementalWebmDecoder(on_audio=on_audio)
    with pytest.raises(WebmDecodeError, match="on_audio callback raised KeyError"):
        decoder.feed(chunks[0])
    with pytest.raises(WebmDecodeError, match="on_audio callback"):
        decoder.feed(chunks[1])
    with pytest.raises(WebmDecodeError, match="on_audio callback"):
        decoder.close()


# --- errors, shutdown and bounded memory -------------------------------------------------


def test_garbage_fails_with_a_clear_error_every_time() -> None:
    decoder = IncrementalWebmDecoder()
    with pytest.raises(WebmDecodeError, match=r"invalid WebM/Opus input.*EBML header"):
        decoder.feed(np.random.default_rng(7).bytes(4000))
    with pytest.raises(WebmDecodeError):
        decoder.read()
    with pytest.raises(WebmDecodeError):
        decoder.feed(b"more")
    with pytest.raises(WebmDecodeError):
        decoder.close()
    assert isinstance(decoder.error, WebmDecodeError) and isinstance(decoder.error, ValueError)


def test_corrupt_opus_data_names_the_stream_position(chunks: list[bytes]) -> None:
    first = bytearray(chunks[0])
    # Keep the container intact, break the codec: the first Opus packet's TOC byte claims a
    # frame count code of 3 with an impossible count.
    at = first.index(CLUSTER_ID)
    block = first.index(b"\xa3", at)
    payload = block + 1 + (9 - first[block + 1].bit_length()) + 4
    first[payload : payload + 2] = b"\xfb\x00"
    decoder = IncrementalWebmDecoder()
    with pytest.raises(WebmDecodeError, match=r"invalid Opus data after \d+ bytes of WebM"):
        decoder.decode(bytes(first))


def test_a_header_without_audio_is_reported_at_close(chunks: list[bytes]) -> None:
    header = chunks[0][: chunks[0].index(CLUSTER_ID)]
    decoder = IncrementalWebmDecoder()
    decoder.feed(header)  # waiting for clusters, not failing
    assert decoder.read().size == 0 and decoder.error is None
    with pytest.raises(WebmDecodeError, match=r"before any audio.*a header without audio"):
        decoder.close()


def test_a_stream_cut_inside_a_block_keeps_what_came_before(chunks: list[bytes]) -> None:
    whole = b"".join(chunks)
    reference = decode_all(IncrementalWebmDecoder(), chunks)
    cut = decode_all(IncrementalWebmDecoder(), [whole[: len(whole) // 2 + 7]])
    assert 0.4 * reference.size < cut.size < 0.6 * reference.size
    assert best_correlation(reference[: cut.size - 200], cut[: cut.size - 200], 40) > 0.99


def test_close_without_input_is_quiet() -> None:
    decoder = IncrementalWebmDecoder()
    decoder.close()
    assert decoder.read().size == 0 and decoder.closed
    with pytest.raises(RuntimeError, match="closed"):
        decoder.feed(b"x")


def test_abort_drops_everything_without_an_error(chunks: list[bytes]) -> None:
    decoder = IncrementalWebmDecoder()
    decoder.feed(chunks[0])
    decoder.abort()
    assert decoder.read().size == 0 and decoder.error is None
    decoder.close()  # closing after an abort is allowed and quiet
    with pytest.raises(RuntimeError, match="closed"):
        decoder.feed(chunks[1])


def test_context_manager_closes(chunks: list[bytes]) -> None:
    with IncrementalWebmDecoder() as decoder:
        for chunk in chunks:
            decoder.feed(chunk)
    assert decoder.closed and decoder.read().size > 0


def test_an_unread_decoder_fails_instead_of_growing(chunks: list[bytes]) -> None:
    decoder = IncrementalWebmDecoder(max_buffered_s=0.2)
    with pytest.raises(WebmDecodeError, match=r"more than 0.2 s of decoded audio was not read"):
        for chunk in chunks:
            decoder.feed(chunk)
    assert decoder.bytes_fed < len(b"".join(chunks)) / 2
    # What was decoded before the failure is still there: the limit plus the one chunk (a
    # 100 ms timeslice) that crossed it, no more.
    buffered = decoder.read()
    assert 0.2 * 16000 < buffered.size <= 0.3 * 16000
    with pytest.raises(WebmDecodeError, match="not read"):
        decoder.read()


def test_pending_input_is_bounded_by_the_largest_element(chunks: list[bytes]) -> None:
    decoder = IncrementalWebmDecoder(max_pending_bytes=4096)
    decoder.feed(chunks[0])
    # A cluster announcing a 1 MB block: refused as soon as its size is read.
    cluster = CLUSTER_ID + b"\x01" + b"\xff" * 7
    block = b"\xa3\x01" + (1_000_000).to_bytes(7, "big") + b"\x81\x00\x00\x80"
    with pytest.raises(WebmDecodeError, match="1000000 bytes, over the limit of 4096"):
        decoder.feed(cluster + block)


async def test_fifty_concurrent_sessions_on_one_event_loop(goforward: np.ndarray) -> None:
    before = threading.active_count()
    chunks = encode_webm_opus(goforward[:16000])
    decoders = [IncrementalWebmDecoder() for _ in range(50)]
    sizes = [0] * 50
    for chunk in chunks:  # every session sends its next chunk, as 50 browsers would
        for i, decoder in enumerate(decoders):
            sizes[i] += decoder.decode(chunk).size
        await asyncio.sleep(0.01)
        assert threading.active_count() == before  # decoding starts no threads
    for i, decoder in enumerate(decoders):
        sizes[i] += decoder.finish().size
    assert len(set(sizes)) == 1 and abs(sizes[0] - 16000) < 0.06 * 16000


def test_a_chunk_holding_too_much_audio_is_refused_before_it_is_all_decoded(
    goforward: np.ndarray,
) -> None:
    """A few bytes of Opus can stand for 120 ms, so one frame could carry minutes of audio:
    the decoder refuses a chunk beyond ``max_chunk_s`` instead of decoding all of it."""
    whole = b"".join(encode_webm_opus(goforward))  # the whole recording as one frame
    assert goforward.size > 2 * 16000
    decoder = IncrementalWebmDecoder(max_chunk_s=1.0)
    with pytest.raises(WebmDecodeError, match=r"more than 1 s of audio.*timeslices"):
        decoder.decode(whole)
    with pytest.raises(WebmDecodeError):  # a broken stream stays broken
        decoder.decode(b"")
    # The same stream sent as it is recorded, chunk by chunk, is fine under the same limit.
    streamed = IncrementalWebmDecoder(max_chunk_s=1.0)
    pieces = encode_webm_opus(goforward, timeslice_ms=250)
    audio = np.concatenate([streamed.decode(p) for p in pieces] + [streamed.finish()])
    assert abs(audio.size - goforward.size) < 0.05 * 16000
