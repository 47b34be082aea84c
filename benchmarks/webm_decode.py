"""What decoding a browser's WebM/Opus stream costs the relay server, per stream and per chunk.

The relay route decodes every session's ``MediaRecorder`` stream on its event loop, one 100 ms
timeslice at a time (``IncrementalWebmDecoder.decode``), so this cost is paid by every relay
session and delays every other session while it runs. It is measured on a real recording
(the bundled ``speech/goforward.wav``, speech and silence, as the load test's users send it)
as CPU time per second of audio, split into the stages: the push demuxer
(``sagelab.audio.ebml``), FFmpeg's Opus decoder, and soxr to 16 kHz. The bar is 0.5 % of a
core per real-time stream (the relay capacity goal is 50 sessions on 2 cores, with the rest of
each session's work to pay for); the exit status is 1 when it is missed.

    .venv/bin/python benchmarks/webm_decode.py [--seconds 60] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import av
import numpy as np

from sagelab.audio import IncrementalWebmDecoder, encode_webm_opus, load_audio
from sagelab.audio.ebml import WebmDemuxer
from sagelab.bundled import asset

BAR_PERCENT_OF_A_CORE = 0.5
SPEECH = asset("speech", "goforward.wav")


def stream(seconds: float) -> tuple[list[bytes], float]:
    """MediaRecorder-style chunks of speech, then 2.5 s of silence, repeated."""
    speech = load_audio(SPEECH)
    cycle = np.concatenate([speech, np.zeros(40_000, dtype=np.int16)])
    pcm = np.tile(cycle, max(1, round(seconds * 16_000 / cycle.size)))
    return encode_webm_opus(pcm), pcm.size / 16_000


def best_cpu(work, repeats: int) -> float:
    """Least CPU seconds of ``repeats`` runs: the cost without the machine's other load."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        work()
        best = min(best, time.process_time() - t0)
    return best


def main(seconds: float, repeats: int) -> int:
    chunks, audio_s = stream(seconds)

    def demux() -> None:
        demuxer = WebmDemuxer()
        for chunk in chunks:
            demuxer.feed(chunk)

    demuxer = WebmDemuxer()
    packets = [f for block in demuxer.feed(b"".join(chunks)) for f in block.frames]
    track = demuxer.track
    assert track is not None

    def opus() -> None:
        codec = av.CodecContext.create("opus", "r")
        codec.extradata = track.codec_private
        for packet in packets:
            codec.decode(av.Packet(packet))

    def full() -> None:
        decoder = IncrementalWebmDecoder()
        for chunk in chunks:
            decoder.decode(chunk)
        decoder.finish()

    stages = {"demux": demux, "demux + Opus": lambda: (demux(), opus()), "whole decoder": full}
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{audio_s:.0f} s of audio in {len(chunks)} chunks; best of {repeats} runs")
    percent = 0.0
    for name, work in stages.items():
        cpu = best_cpu(work, repeats)
        percent = cpu / audio_s * 100
        per_chunk_ms = cpu / len(chunks) * 1000
        print(f"  {name:14s} {percent:6.3f} % of a core per stream, {per_chunk_ms:.3f} ms/chunk")
    sessions = 50
    print(f"  {sessions} relay sessions: {percent * sessions:.1f} % of a core for decoding")
    if percent > BAR_PERCENT_OF_A_CORE:
        print(f"FAIL: {percent:.3f} % > {BAR_PERCENT_OF_A_CORE} % of a core per stream")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per stream")
    parser.add_argument("--repeats", type=int, default=5, help="runs; the cheapest counts")
    args = parser.parse_args()
    sys.exit(main(args.seconds, args.repeats))
