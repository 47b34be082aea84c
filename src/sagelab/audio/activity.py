"""Where speech starts and ends inside a recording, by energy.

"End of user speech in the audio actually sent" is the start point of voice-to-voice latency.
Recordings carry leading and trailing room tone, so the end of the file is not the end of
speech; this finds the last frame louder than a threshold instead. It is meant for clean
reference recordings (benchmarks, scenarios), not as a VAD for live noisy audio.
"""

from __future__ import annotations

import numpy as np

from .pcm import PCM16, SAMPLE_RATE


def speech_bounds(
    pcm: PCM16, *, threshold_dbfs: float = -40.0, frame_ms: int = 10, rate: int = SAMPLE_RATE
) -> tuple[int, int] | None:
    """``(first, last + 1)`` sample of the frames louder than ``threshold_dbfs``; None if none."""
    frame = max(1, rate * frame_ms // 1000)
    n = pcm.size // frame
    if n == 0:
        return None
    frames = pcm[: n * frame].astype(np.float32).reshape(n, frame)
    loud = np.flatnonzero(
        (frames * frames).mean(axis=1) > (32768.0**2) * 10 ** (threshold_dbfs / 10)
    )
    if loud.size == 0:
        return None
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


def frame_dbfs(pcm: PCM16, frame: int = 160) -> np.ndarray:
    """Level of each whole ``frame``-sample frame (10 ms at 16 kHz), in dBFS."""
    frames = pcm[: pcm.size // frame * frame].reshape(-1, frame).astype(np.float64)
    return np.asarray(10 * np.log10((frames**2).mean(axis=1) / 32768**2 + 1e-12))


def loud_frames(pcm: PCM16) -> np.ndarray:
    """10 ms frames above max(noise floor + 15 dB, peak - 35 dB), the floor being the 10th
    percentile: relative to the recording, so room tone and breaths stay out whatever the
    recording level (a fixed threshold such as ``speech_bounds``' -40 dBFS keeps them)."""
    db = frame_dbfs(pcm)
    return np.asarray(db > max(float(np.percentile(db, 10)) + 15, float(db.max()) - 35))


def energy_bounds(pcm: PCM16) -> tuple[int, int]:
    """Reference start and end of speech in a clean recording: the first to the last run of
    three loud 10 ms frames (``loud_frames``), so single clicks do not count.

    Tighter than ``speech_bounds`` on real recordings: a LibriVox sentence trimmed with it
    keeps 0.2-0.3 s of room tone and breath at its ends, which a VAD hears as pause, so two
    sentences joined with 250 ms of silence looked like a 540 ms pause. Soft final fricatives
    can still move the end by ~0.2 s. Raises ``ValueError`` when nothing is loud.
    """
    loud = loud_frames(pcm).astype(int)
    runs = np.flatnonzero(np.convolve(loud, np.ones(3, dtype=int), "valid") == 3)
    if runs.size == 0:
        raise ValueError("no speech found by energy")
    return int(runs[0] * 160), int((runs[-1] + 3) * 160)
