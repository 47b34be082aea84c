"""Browser WebM/Opus: MediaRecorder-style chunks and the incremental decoder."""

from __future__ import annotations

import asyncio
import gc
import io
import itertools
import threading
import time
from collections.abc import Callable

import av
import numpy as np
import pytest
from audio_helpers import best_correlation, read_speech
from hypothesis import given, settings
from hypothesis import strategies as st

from sagelab.audio import (
    IncrementalWebmDecoder,
    WebmDecodeError,
    encode_webm_opus,
    split_at_clusters,
)

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


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


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


@pytest.mark.parametrize(
    "name", ["cards_003.wav", "librivox_sense_and_sensibility_01_austen_64kb-0870.wav"]
)
def test_decodes_other_speakers(name: str) -> None:
    speech = read_speech(name)
    pcm = decode_all(IncrementalWebmDecoder(), encode_webm_opus(speech))
    assert abs(pcm.size - speech.size) / 16000 < 0.06
    assert best_correlation(speech, pcm) > 0.8


def test_audio_comes_out_while_the_stream_is_still_open(
    chunks: list[bytes], goforward: np.ndarray
) -> None:
    decoder = IncrementalWebmDecoder()
    half = len(chunks) // 2
    for chunk in chunks[:half]:
        decoder.feed(chunk)
    got: list[np.ndarray] = []

    def half_decoded() -> bool:
        # Half the clusters carry about half the audio; it must arrive without close().
        got.append(decoder.read())
        return sum(g.size for g in got) >= 0.45 * goforward.size

    assert wait_for(half_decoded)
    assert decoder.running
    for chunk in chunks[half:]:
        decoder.feed(chunk)
    decoder.close()
    got.append(decoder.read())
    assert not decoder.running
    assert abs(sum(g.size for g in got) - goforward.size) / 16000 < 0.06


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
    assert len(threads) == 1 and threads.pop().startswith("webm-decoder")


def test_a_failing_callback_stops_the_decoder(chunks: list[bytes]) -> None:
    def on_audio(pcm: np.ndarray) -> None:
        raise KeyError("consumer gone")

    decoder = IncrementalWebmDecoder(on_audio=on_audio)
    decoder.feed(chunks[0])
    assert wait_for(lambda: not decoder.running)
    with pytest.raises(WebmDecodeError, match="on_audio callback raised KeyError"):
        decoder.close()


# --- errors, shutdown and bounded memory -------------------------------------------------


def test_garbage_fails_with_a_clear_error_and_the_thread_ends() -> None:
    decoder = IncrementalWebmDecoder()
    decoder.feed(np.random.default_rng(7).bytes(4000))
    assert wait_for(lambda: not decoder.running)
    with pytest.raises(WebmDecodeError, match=r"invalid WebM/Opus input.*Invalid data"):
        decoder.read()
    with pytest.raises(WebmDecodeError):
        decoder.feed(b"more")
    with pytest.raises(WebmDecodeError):
        decoder.close()
    assert isinstance(decoder.error, WebmDecodeError) and isinstance(decoder.error, ValueError)


def test_a_header_without_audio_is_reported_at_close(chunks: list[bytes]) -> None:
    header = chunks[0][: chunks[0].index(CLUSTER_ID)]
    decoder = IncrementalWebmDecoder()
    decoder.feed(header)
    time.sleep(0.05)
    assert decoder.running  # waiting for clusters, not failing
    with pytest.raises(WebmDecodeError, match="before any audio"):
        decoder.close()
    assert not decoder.running


def test_close_without_input_is_quiet() -> None:
    decoder = IncrementalWebmDecoder()
    decoder.close()
    assert decoder.read().size == 0 and not decoder.running
    with pytest.raises(RuntimeError, match="closed"):
        decoder.feed(b"x")


def test_abort_ends_a_waiting_thread_promptly(chunks: list[bytes]) -> None:
    decoder = IncrementalWebmDecoder()
    decoder.feed(chunks[0])
    assert wait_for(lambda: decoder.read().size > 0)
    started = time.monotonic()
    decoder.abort()
    assert not decoder.running and time.monotonic() - started < 1.0
    assert decoder.error is None


def test_context_manager_closes(chunks: list[bytes]) -> None:
    with IncrementalWebmDecoder() as decoder:
        for chunk in chunks:
            decoder.feed(chunk)
    assert not decoder.running and decoder.read().size > 0


def test_a_dropped_decoder_does_not_leak_its_thread(chunks: list[bytes]) -> None:
    before = set(threading.enumerate())
    decoder = IncrementalWebmDecoder()
    decoder.feed(chunks[0])
    deadline = time.monotonic() + 5.0
    while decoder.read().size == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    (thread,) = set(threading.enumerate()) - before
    assert thread.is_alive()  # blocked, waiting for more input
    del decoder
    gc.collect()
    thread.join(2.0)
    assert not thread.is_alive()


def test_an_unread_decoder_refuses_input_instead_of_growing(chunks: list[bytes]) -> None:
    # Nobody reads: the thread stops at 0.2 s of audio, then input backs up to the limit.
    decoder = IncrementalWebmDecoder(max_pending_bytes=4096, max_buffered_s=0.2)
    with pytest.raises(WebmDecodeError, match="backlog exceeded 4096 bytes"):
        for chunk in chunks:
            decoder.feed(chunk)
            time.sleep(0.01)
    assert wait_for(lambda: not decoder.running)
    assert decoder.bytes_fed < len(b"".join(chunks)) / 2
    # What was decoded before the failure is still there, and no more than the limit
    # plus the 20 ms frame that crossed it.
    buffered = decoder.read()
    assert 0.2 * 16000 <= buffered.size <= 0.22 * 16000
    with pytest.raises(WebmDecodeError, match="backlog"):
        decoder.read()


async def test_fifty_concurrent_sessions_on_one_event_loop(goforward: np.ndarray) -> None:
    chunks = encode_webm_opus(goforward[:16000])
    decoders = [IncrementalWebmDecoder() for _ in range(50)]
    for chunk in chunks:  # every session sends its next chunk, as 50 browsers would
        for decoder in decoders:
            decoder.feed(chunk)
        await asyncio.sleep(0.01)
    await asyncio.gather(*(d.aclose() for d in decoders))
    sizes = {d.read().size for d in decoders}
    assert len(sizes) == 1 and abs(sizes.pop() - 16000) < 0.06 * 16000
    assert not any(d.running for d in decoders)
