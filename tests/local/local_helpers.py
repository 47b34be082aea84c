"""Shared by the model tests: the speech set, live-like streams, and a fair WER.

WER normalisation (applied to reference and hypothesis alike): lowercase; titles spelled out
("Mr." → "mister", "Mrs." → "missus", "Dr." → "doctor"); digits to words ("10" → "ten",
"3.5" → "three point five", "1,200" → "one thousand two hundred"); hyphens become spaces;
every other punctuation mark is dropped except apostrophes inside words; whitespace collapses.
The references in data/speech are written as spoken, Whisper writes numbers as digits and
adds punctuation and casing, and none of that is a recognition error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np

from sagelab.audio import load_audio
from sagelab.audio.activity import energy_bounds, frame_dbfs
from sagelab.metrics.accuracy import normalize

SPEECH_DIR = Path(__file__).resolve().parents[2] / "data" / "speech"
RATE = 16000


@dataclass(frozen=True)
class Utterance:
    id: str
    pcm: np.ndarray
    text: str


def load_manifest() -> list[Utterance]:
    rows = [json.loads(line) for line in (SPEECH_DIR / "manifest.jsonl").read_text().splitlines()]
    return [Utterance(r["id"], load_audio(SPEECH_DIR / r["audio"]), r["text"]) for r in rows if r]


# -- text normalisation: the same as the benchmarks' (sagelab.metrics.accuracy) ------------


def wer(references: list[str], hypotheses: list[str]) -> float:
    return float(jiwer.wer([normalize(r) for r in references], [normalize(h) for h in hypotheses]))


# -- live-like streams ----------------------------------------------------------------------


def white_noise(n: int, dbfs: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    samples = rng.standard_normal(n) * 32768 * 10 ** (dbfs / 20)
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class Stream:
    id: str
    pcm: np.ndarray
    speech_start: int
    speech_end: int


def as_stream(utt: Utterance, seed: int, lead_s: float = 0.5, tail_s: float = 3.0) -> Stream:
    """The utterance as a microphone would send it, with time before and after.

    Before: white noise at the recording's own noise floor (at least -70 dBFS). After: the
    recording's own trailing room tone, a 10 ms fade, then digital silence, as from a client
    with noise suppression. (Splicing synthetic noise onto the end instead makes a seam that
    Silero sometimes scores near 0.5, which would measure the seam, not the end of speech.)
    """
    floor = max(float(np.percentile(frame_dbfs(utt.pcm), 10)), -70.0)
    lead = white_noise(int(lead_s * RATE), floor, seed)
    body = utt.pcm.astype(np.float64)
    body[-160:] *= np.linspace(1.0, 0.0, 160)
    tail = np.zeros(int(tail_s * RATE), dtype=np.int16)
    start, end = energy_bounds(utt.pcm)
    pcm = np.concatenate([lead, np.rint(body).astype(np.int16), tail])
    return Stream(utt.id, pcm, lead.size + start, lead.size + end)


def feed_in_chunks(detector: object, pcm: np.ndarray, chunk: int = 320) -> list[tuple[object, int]]:
    """Feed like a live client; each event comes with the samples fed when it was emitted."""
    events: list[tuple[object, int]] = []
    for offset in range(0, pcm.size, chunk):
        fed = min(offset + chunk, pcm.size)
        events.extend((e, fed) for e in detector.feed(pcm[offset:fed]))  # type: ignore[attr-defined]
    return events
