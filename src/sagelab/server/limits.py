"""Per-session input limits, and bounds on everything a client makes the server hold.

A client may send faster than real time for a moment (a buffered microphone, a file sent ahead),
but not for long: anything beyond a short burst is refused with an error and a close, never
buffered, because buffering a flood is how a server runs out of memory. Token buckets give
exactly that: a sustained rate plus a burst allowance, O(1) memory per session. Three budgets
apply: messages per second, bytes per second across every frame type (counted after
permessage-deflate has inflated them, so compression does not make a flood cheap to send but
expensive to hold), and audio bytes per second.

What a session keeps between messages is bounded too, by the helpers at the end: the
initiation frame and ``dynamic_variables``; ``contextual_update`` notes and the conversation
history are bounded by the agent that keeps them (``sagelab.conversation.history``). Each
bound is far above what a real client sends (a spoken turn is a few hundred characters) and
each is applied where the data arrives, so nothing unbounded is ever held.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sagelab.audio import AudioFormat

# What an agent remembers is bounded where it stores it (``sagelab.conversation.history``); the
# names stay importable from here, where the server's other bounds are.
from sagelab.conversation.history import (  # noqa: F401
    MAX_HISTORY_MESSAGES,
    MAX_MESSAGE_CHARS,
    MAX_NOTE_CHARS,
    MAX_NOTES,
    keep_note,
    trim_history,
)

# A browser's MediaRecorder sends Opus at 32-128 kbit/s; the relay's nominal audio byte rate is
# the top of that range, so a limit of twice the nominal rate never refuses a real browser.
WEBM_OPUS_BYTES_PER_S = 16_000
#: Samples per second of the audio the server works on (16 kHz mono).
DECODED_SAMPLES_PER_S = 16_000
#: Default byte budget per second across all frames: twice real-time 48 kHz PCM in base64 JSON.
DEFAULT_BYTES_PER_S = 512 * 1024

#: The first message carries settings, not audio: 64 KiB holds any real one many times over.
MAX_INITIATION_BYTES = 64 * 1024
MAX_DYNAMIC_VARIABLES = 64
MAX_DYNAMIC_VARIABLE_NAME = 128
MAX_DYNAMIC_VARIABLE_CHARS = 4096  # one value as text
MAX_DYNAMIC_VARIABLES_CHARS = 32 * 1024  # all values together


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
        bytes_per_s: float = DEFAULT_BYTES_PER_S,
        now: float | None = None,
    ) -> None:
        self.audio_bytes_per_s = audio_bytes_per_s
        self.bytes_per_s = bytes_per_s
        self.nominal_audio_bytes_per_s = nominal_audio_bytes_per_s
        self.messages_per_s = messages_per_s
        self._audio = TokenBucket(audio_bytes_per_s, audio_bytes_per_s * audio_burst_s, now)
        # Compressed audio is also limited by what it decodes to: a few bytes of Opus can
        # stand for 120 ms, so a byte budget alone would let tiny packets flood the decoder.
        self._decoded_rate = 2 * DECODED_SAMPLES_PER_S
        self._decoded = TokenBucket(self._decoded_rate, self._decoded_rate * audio_burst_s, now)
        # Two seconds of messages at once: a client catching up after a pause is not a flood.
        self._messages = TokenBucket(messages_per_s, max(1.0, messages_per_s * 2), now)
        self._bytes = TokenBucket(bytes_per_s, bytes_per_s * audio_burst_s, now)

    def message(self, now: float | None = None, nbytes: int = 0) -> LimitExceeded | None:
        """One frame of ``nbytes`` (as received, after decompression), of any type."""
        if not self._messages.take(1, now):
            return LimitExceeded(
                "message_rate_exceeded",
                f"more than {self.messages_per_s:g} messages per second; "
                "send audio in chunks of 50-250 ms and do not repeat control messages in a loop",
            )
        if nbytes and not self._bytes.take(nbytes, now):
            return LimitExceeded(
                "byte_rate_exceeded",
                f"messages arrive faster than {self.bytes_per_s:g} bytes/s (bursts up to "
                f"{self._bytes.burst:g} bytes); send audio in real time and keep text, "
                "contextual updates and activity signals small",
            )
        return None

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
    max_bytes_per_s: int | None = None,
    now: float | None = None,
) -> InputLimiter:
    """The limiter for one session; the audio limit defaults to twice real time.

    ``now`` is the clock later checks pass (the event loop's); default ``time.monotonic()``.
    """
    nominal = nominal_audio_rate(input_format)
    audio = float(max_audio_bytes_per_s or 2 * nominal)
    return InputLimiter(
        audio_bytes_per_s=audio,
        audio_burst_s=audio_burst_s,
        messages_per_s=max_messages_per_s,
        nominal_audio_bytes_per_s=nominal,
        # Never below what the audio limit needs once base64 and JSON wrap it.
        bytes_per_s=float(max(max_bytes_per_s or DEFAULT_BYTES_PER_S, audio * 3 // 2)),
        now=now,
    )


# -- what a session holds --------------------------------------------------------------------


class _Limits(Protocol):
    max_frame_bytes: int
    initiation_timeout_s: float
    anonymous_initiation_timeout_s: float


def initiation_too_large(nbytes: int, config: _Limits) -> LimitExceeded | None:
    """The first message is checked like every later one, against a tighter bound."""
    limit = min(config.max_frame_bytes, MAX_INITIATION_BYTES)
    if nbytes <= limit:
        return None
    return LimitExceeded(
        "message_too_large",
        f"conversation_initiation_client_data of {nbytes} bytes exceeds the limit of {limit} "
        "bytes; send large context later as contextual_update messages",
    )


def initiation_timeout_s(config: _Limits, anonymous: bool) -> float:
    """How long a connection may hold a session slot before its first message: short for a
    client that presented no credential, since anyone can open connections."""
    if anonymous:
        return min(config.anonymous_initiation_timeout_s, config.initiation_timeout_s)
    return config.initiation_timeout_s


def dynamic_variables_refused(variables: Mapping[str, Any] | None) -> LimitExceeded | None:
    """Why a session's ``dynamic_variables`` are too many or too large, or None.

    They are stored with the conversation and substituted into prompts, so an unbounded set
    lets an anonymous client fill the store at the cost of one compressed frame.
    """
    if not variables:
        return None
    if len(variables) > MAX_DYNAMIC_VARIABLES:
        return LimitExceeded(
            "dynamic_variables_too_large",
            f"{len(variables)} dynamic_variables; at most {MAX_DYNAMIC_VARIABLES} are accepted",
        )
    total = 0
    for name, value in variables.items():
        if len(name) > MAX_DYNAMIC_VARIABLE_NAME:
            return LimitExceeded(
                "dynamic_variables_too_large",
                f"dynamic variable names are limited to {MAX_DYNAMIC_VARIABLE_NAME} characters",
            )
        size = len(value) if isinstance(value, str) else len(str(value))
        if size > MAX_DYNAMIC_VARIABLE_CHARS:
            return LimitExceeded(
                "dynamic_variables_too_large",
                f"dynamic variable {name[:40]!r} has {size} characters; each value is limited "
                f"to {MAX_DYNAMIC_VARIABLE_CHARS}",
            )
        total += size
    if total > MAX_DYNAMIC_VARIABLES_CHARS:
        return LimitExceeded(
            "dynamic_variables_too_large",
            f"dynamic_variables hold {total} characters together; the limit is "
            f"{MAX_DYNAMIC_VARIABLES_CHARS}",
        )
    return None
