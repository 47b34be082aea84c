"""Per-session input limits: audio bytes per second and messages per second.

A client may send faster than real time for a moment (a buffered microphone, a file sent ahead),
but not for long: anything beyond a short burst is refused with an error and a close, never
buffered, because buffering a flood is how a server runs out of memory. Token buckets give
exactly that: a sustained rate plus a burst allowance, O(1) memory per session.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sagelab.audio import AudioFormat

# A browser's MediaRecorder sends Opus at 32-128 kbit/s; the relay's nominal audio byte rate is
# the top of that range, so a limit of twice the nominal rate never refuses a real browser.
WEBM_OPUS_BYTES_PER_S = 16_000
#: Samples per second of the audio the server works on (16 kHz mono).
DECODED_SAMPLES_PER_S = 16_000


class TokenBucket:
    """``rate`` units per second on average, up to ``burst`` units at once."""

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        if not (math.isfinite(rate) and rate > 0 and math.isfinite(burst) and burst > 0):
            raise ValueError(f"rate and burst must be positive, got {rate!r}, {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._t = time.monotonic() if now is None else now

    def take(self, amount: float, now: float | None = None) -> bool:
        """Spend ``amount`` if the bucket holds it; a refused take spends nothing."""
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._t) * self.rate)
        self._t = now
        if amount > self._tokens:
            return False
        self._tokens -= amount
        return True


@dataclass(frozen=True)
class LimitExceeded:
    """Why a frame was refused: the ``error`` event's type and a message saying how to fix it."""

    error_type: str
    message: str


class InputLimiter:
    """Checks every frame a session receives against its audio and message budgets."""

    def __init__(
        self,
        *,
        audio_bytes_per_s: float,
        audio_burst_s: float,
        messages_per_s: float,
        nominal_audio_bytes_per_s: float,
        now: float | None = None,
    ) -> None:
        self.audio_bytes_per_s = audio_bytes_per_s
        self.nominal_audio_bytes_per_s = nominal_audio_bytes_per_s
        self.messages_per_s = messages_per_s
        self._audio = TokenBucket(audio_bytes_per_s, audio_bytes_per_s * audio_burst_s, now)
        # Compressed audio is also limited by what it decodes to: a few bytes of Opus can
        # stand for 120 ms, so a byte budget alone would let tiny packets flood the decoder.
        self._decoded_rate = 2 * DECODED_SAMPLES_PER_S
        self._decoded = TokenBucket(self._decoded_rate, self._decoded_rate * audio_burst_s, now)
        # Two seconds of messages at once: a client catching up after a pause is not a flood.
        self._messages = TokenBucket(messages_per_s, max(1.0, messages_per_s * 2), now)

    def message(self, now: float | None = None) -> LimitExceeded | None:
        if self._messages.take(1, now):
            return None
        return LimitExceeded(
            "message_rate_exceeded",
            f"more than {self.messages_per_s:g} messages per second; "
            "send audio in chunks of 50-250 ms and do not repeat control messages in a loop",
        )

    def audio(self, nbytes: int, now: float | None = None) -> LimitExceeded | None:
        if self._audio.take(nbytes, now):
            return None
        return LimitExceeded(
            "audio_rate_exceeded",
            f"audio arrives faster than {self.audio_bytes_per_s:g} bytes/s "
            f"(real time is {self.nominal_audio_bytes_per_s:g} bytes/s, "
            f"bursts up to {self._audio.burst:g} bytes); stream the microphone in real time "
            "instead of sending recordings at once",
        )

    def decoded_audio(self, samples: int, now: float | None = None) -> LimitExceeded | None:
        """Decoded 16 kHz samples of compressed input (the relay's WebM/Opus)."""
        if self._decoded.take(samples, now):
            return None
        return LimitExceeded(
            "audio_rate_exceeded",
            f"the audio sent decodes to more than {self._decoded_rate / DECODED_SAMPLES_PER_S:g}"
            " times real time; stream the microphone as it records (MediaRecorder timeslices)",
        )


def nominal_audio_rate(input_format: str | None) -> float:
    """Real-time bytes per second of a ConvAI input format; None: the relay's WebM/Opus."""
    if input_format is None:
        return float(WEBM_OPUS_BYTES_PER_S)
    fmt = AudioFormat.parse(input_format)
    return float(fmt.sample_rate * fmt.bytes_per_sample)


def for_session(
    max_audio_bytes_per_s: int | None,
    audio_burst_s: float,
    max_messages_per_s: float,
    input_format: str | None,
) -> InputLimiter:
    """The limiter for one session; the audio limit defaults to twice real time."""
    nominal = nominal_audio_rate(input_format)
    return InputLimiter(
        audio_bytes_per_s=float(max_audio_bytes_per_s or 2 * nominal),
        audio_burst_s=audio_burst_s,
        messages_per_s=max_messages_per_s,
        nominal_audio_bytes_per_s=nominal,
    )
