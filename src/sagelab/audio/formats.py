"""Wire audio formats of the ConvAI protocol and conversion at that edge.

Agents announce ``user_input_audio_format`` and ``agent_output_audio_format`` as names like
``pcm_16000`` or ``ulaw_8000`` (protocol §6). Everything inside sagelab is 16 kHz PCM16, so a
format is needed exactly twice: decoding what arrives and encoding what leaves. The list of
names is closed on purpose: a client that announces ``pcm_11025`` gets a clear error instead
of audio played at the wrong speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import mulaw
from .pcm import PCM16, SAMPLE_RATE, ensure_pcm16, from_bytes, pcm_bytes
from .resample import StreamResampler, resample

Encoding = Literal["pcm", "ulaw"]

_VALID: dict[str, tuple[Encoding, int]] = {
    "pcm_8000": ("pcm", 8000),
    "pcm_16000": ("pcm", 16000),
    "pcm_22050": ("pcm", 22050),
    "pcm_24000": ("pcm", 24000),
    "pcm_44100": ("pcm", 44100),
    "pcm_48000": ("pcm", 48000),
    "ulaw_8000": ("ulaw", 8000),
}
FORMAT_NAMES: tuple[str, ...] = tuple(_VALID)
"""Every format name the protocol defines, in the order the documentation lists them."""


def _unknown(what: str) -> ValueError:
    return ValueError(f"unknown audio format {what}; expected one of: {', '.join(FORMAT_NAMES)}")


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One of the protocol's audio formats: mono, 16-bit little-endian PCM or 8-bit μ-law."""

    encoding: Encoding
    sample_rate: int

    def __post_init__(self) -> None:
        if (self.encoding, self.sample_rate) not in _VALID.values():
            raise _unknown(f"{self.encoding}_{self.sample_rate}")

    @classmethod
    def parse(cls, name: str) -> AudioFormat:
        """Parse a protocol name such as ``"pcm_16000"``; anything else is a ValueError."""
        try:
            encoding, rate = _VALID[name]
        except (KeyError, TypeError):
            raise _unknown(repr(name)) from None
        return cls(encoding, rate)

    @property
    def name(self) -> str:
        """The protocol name, e.g. ``"ulaw_8000"``."""
        return f"{self.encoding}_{self.sample_rate}"

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm" else 1

    def duration_s(self, nbytes: int) -> float:
        """Seconds of audio in ``nbytes`` of this format."""
        if nbytes < 0 or nbytes % self.bytes_per_sample:
            raise ValueError(f"{nbytes} bytes is not a whole number of {self.name} samples")
        return nbytes / (self.bytes_per_sample * self.sample_rate)

    def bytes_for(self, ms: float) -> int:
        """Bytes in ``ms`` milliseconds of this format, rounded to the nearest whole sample."""
        if ms < 0:
            raise ValueError(f"duration must not be negative, got {ms} ms")
        return round(self.sample_rate * ms / 1000) * self.bytes_per_sample

    def __str__(self) -> str:
        return self.name


PCM_16000 = AudioFormat("pcm", 16000)
"""The internal format; the ConvAI default in both directions."""


def _wire_bytes(pcm: PCM16, fmt: AudioFormat) -> bytes:
    return mulaw.encode(pcm) if fmt.encoding == "ulaw" else pcm_bytes(pcm)


def _wire_samples(data: bytes | bytearray | memoryview, fmt: AudioFormat) -> PCM16:
    if fmt.encoding == "ulaw":
        return mulaw.decode(data)
    try:
        return from_bytes(data)
    except ValueError as exc:
        raise ValueError(f"{fmt.name}: {exc}") from None


def _as_pcm16(pcm16k: PCM16 | bytes | bytearray | memoryview) -> PCM16:
    if isinstance(pcm16k, bytes | bytearray | memoryview):
        return from_bytes(pcm16k)
    return ensure_pcm16(pcm16k)


def encode_pcm16(pcm16k: PCM16 | bytes | bytearray | memoryview, fmt: AudioFormat) -> bytes:
    """Turn internal 16 kHz PCM16 (array or raw bytes) into wire bytes in ``fmt``.

    One-shot: each call is resampled on its own. That is exact for ``pcm_16000`` and fine for
    whole utterances; for a stream of small chunks in another format use :class:`WireEncoder`.
    """
    return _wire_bytes(resample(_as_pcm16(pcm16k), SAMPLE_RATE, fmt.sample_rate), fmt)


def decode_to_pcm16(data: bytes | bytearray | memoryview, fmt: AudioFormat) -> PCM16:
    """Turn wire bytes in ``fmt`` into internal 16 kHz PCM16; ValueError if they cannot be."""
    return resample(_wire_samples(data, fmt), fmt.sample_rate, SAMPLE_RATE)


class WireEncoder:
    """:func:`encode_pcm16` for a chunked stream: one resampler spans chunk boundaries."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._resampler = StreamResampler(SAMPLE_RATE, fmt.sample_rate)

    def encode(self, pcm16k: PCM16 | bytes | bytearray | memoryview, last: bool = False) -> bytes:
        """Encode the next chunk; ``last=True`` also flushes the resampler's held-back tail."""
        return _wire_bytes(self._resampler.process(_as_pcm16(pcm16k), last=last), self.format)


class WireDecoder:
    """:func:`decode_to_pcm16` for a chunked stream: one resampler spans chunk boundaries."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._resampler = StreamResampler(fmt.sample_rate, SAMPLE_RATE)

    def decode(self, data: bytes | bytearray | memoryview, last: bool = False) -> PCM16:
        """Decode the next chunk; ``last=True`` also flushes the resampler's held-back tail."""
        return self._resampler.process(_wire_samples(data, self.format), last=last)
