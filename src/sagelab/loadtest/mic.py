"""What a load-test user says: silence, then a recording and silence again and again, as
ready-to-send wire messages.

Messages are built once per locust process and shared by every user, so a user's send loop
does no audio work at all: 50 users re-encoding the same Opus stream would measure the load
generator, not the server.

Two shapes, one per protocol:

* ConvAI (:meth:`MicLoop.convai`): a cycle of raw PCM16 chunks that repeats forever; each chunk
  stands alone, so the same cycle can be sent again and again.
* Relay (:meth:`MicLoop.relay`): ``cycles`` cycles encoded as *one* WebM/Opus stream, chunked at
  its clusters, as a browser's ``MediaRecorder`` sends it. A WebM stream cannot be looped (its
  header comes once and cluster timestamps must keep increasing), so a relay session ends after
  the last chunk and the user starts a new one.

``lead_ms`` of silence come first, once per session: a polite user lets the agent's greeting
finish before asking anything (a user who talks over every greeting measures barge-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sagelab.audio import (
    SAMPLE_RATE,
    encode_webm_opus,
    load_audio,
    pcm_bytes,
    silence,
    speech_bounds,
)
from sagelab.audio.io import AudioSource
from sagelab.protocol import convai, relay


@dataclass(frozen=True)
class MicLoop:
    """Chunk ``k`` of a session (:meth:`message`) holds the audio of ``[k, k + 1) * chunk_s``;
    a real microphone delivers it once it has been recorded, so it is sent at the *end* of that
    interval. ``speech_end_tail_s`` is how much of the speech-end chunk comes after the last
    loud sample: the user stopped talking that long before the chunk could be sent; likewise
    ``speech_start_lead_s`` is how long the user had been talking when the speech-start chunk
    was sent.
    """

    messages: tuple[str, ...]  # ConvAI: one cycle; relay: the whole session, lead included
    chunk_s: float
    cycle_chunks: int
    speech_start_chunk: int  # within a cycle
    speech_end_chunk: int
    speech_end_tail_s: float
    speech_start_lead_s: float
    repeats: bool
    lead_chunks: int = 0
    lead_message: str | None = None  # ConvAI: one chunk of silence, sent lead_chunks times

    def message(self, k: int) -> str | None:
        """The wire message for chunk ``k`` of a session; None once a relay session is over."""
        if not self.repeats:
            return self.messages[k] if k < len(self.messages) else None
        j = k - self.lead_chunks
        if j < 0:
            assert self.lead_message is not None
            return self.lead_message
        return self.messages[j % len(self.messages)]

    def speech_ends_at(self, k: int) -> bool:
        """Whether chunk ``k`` (counted from the start of the session) carries a speech end."""
        j = k - self.lead_chunks
        return j >= 0 and j % self.cycle_chunks == self.speech_end_chunk

    def speech_starts_at(self, k: int) -> bool:
        j = k - self.lead_chunks
        return j >= 0 and j % self.cycle_chunks == self.speech_start_chunk

    @property
    def cycle_s(self) -> float:
        return self.cycle_chunks * self.chunk_s

    @classmethod
    def convai(
        cls, path: AudioSource, *, gap_ms: int = 2500, chunk_ms: int = 100, lead_ms: int = 0
    ) -> MicLoop:
        cycle, chunk, bounds = _cycle(path, gap_ms, chunk_ms)

        def encode(pcm: np.ndarray) -> str:
            return convai.encode_client(convai.UserAudioChunk(audio=pcm_bytes(pcm)))

        messages = tuple(encode(cycle[i : i + chunk]) for i in range(0, cycle.size, chunk))
        lead = -(-lead_ms * SAMPLE_RATE // 1000 // chunk)  # whole chunks, rounded up
        return cls._make(
            messages,
            chunk,
            len(messages),
            bounds,
            repeats=True,
            lead_chunks=lead,
            lead_message=encode(np.zeros(chunk, dtype=np.int16)),
        )

    @classmethod
    def relay(
        cls,
        path: AudioSource,
        *,
        gap_ms: int = 2500,
        chunk_ms: int = 100,
        cycles: int = 12,
        lead_ms: int = 0,
    ) -> MicLoop:
        """``cycles`` cycles as one ``audio/webm;codecs=opus`` stream in ``chunk_ms`` timeslices."""
        if cycles < 1:
            raise ValueError(f"a relay session needs at least one cycle, got cycles={cycles}")
        cycle, chunk, bounds = _cycle(path, gap_ms, chunk_ms)
        cycle_chunks = cycle.size // chunk
        lead = -(-lead_ms * SAMPLE_RATE // 1000 // chunk)
        pcm = np.concatenate([np.zeros(lead * chunk, dtype=np.int16), np.tile(cycle, cycles)])
        parts = encode_webm_opus(pcm, timeslice_ms=chunk_ms)
        # One cluster per timeslice keeps chunk k's audio where the PCM schedule has it; the
        # encoder's flush may add one short cluster at the very end, which is sent last.
        if len(parts) < pcm.size // chunk:
            raise RuntimeError(
                f"WebM encoder produced {len(parts)} clusters for {pcm.size // chunk} "
                f"timeslices of {chunk_ms} ms; expected one cluster per timeslice"
            )
        messages = tuple(relay.encode_client(relay.RelayAudio(data=part)) for part in parts)
        # The lead is part of the one stream: its chunks are the stream's first messages.
        return cls._make(messages, chunk, cycle_chunks, bounds, repeats=False, lead_chunks=lead)

    @classmethod
    def _make(
        cls,
        messages: tuple[str, ...],
        chunk: int,
        cycle_chunks: int,
        bounds: tuple[int, int],
        *,
        repeats: bool,
        lead_chunks: int = 0,
        lead_message: str | None = None,
    ) -> MicLoop:
        start, end = bounds
        start_chunk = start // chunk
        end_chunk = max(0, end - 1) // chunk
        return cls(
            messages=messages,
            chunk_s=chunk / SAMPLE_RATE,
            cycle_chunks=cycle_chunks,
            speech_start_chunk=start_chunk,
            speech_end_chunk=end_chunk,
            speech_end_tail_s=((end_chunk + 1) * chunk - end) / SAMPLE_RATE,
            speech_start_lead_s=((start_chunk + 1) * chunk - start) / SAMPLE_RATE,
            repeats=repeats,
            lead_chunks=lead_chunks,
            lead_message=lead_message,
        )


def _cycle(
    path: AudioSource, gap_ms: int, chunk_ms: int
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """The recording plus ``gap_ms`` of silence, padded to whole chunks; speech bounds in it."""
    if gap_ms < 0 or chunk_ms <= 0:
        raise ValueError(f"need gap_ms >= 0 and chunk_ms > 0, got {gap_ms} and {chunk_ms}")
    speech = load_audio(path)
    if speech.size == 0:
        what = path if isinstance(path, str | Path) else "the recording"
        raise ValueError(f"{what} holds no audio; give a recording of speech")
    # A recording's leading and trailing room tone is not speech.
    bounds = speech_bounds(speech) or (0, speech.size)
    chunk = SAMPLE_RATE * chunk_ms // 1000
    cycle = np.concatenate([speech, silence(gap_ms)])
    cycle = np.concatenate([cycle, np.zeros((-cycle.size) % chunk, dtype=np.int16)])
    return cycle, chunk, bounds
