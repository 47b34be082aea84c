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
