"""Reading audio files into 16 kHz PCM16 and writing PCM16 out as WAV.

Reading accepts whatever users and browsers produce: WAV and FLAC go through soundfile
(libsndfile, exact and fast), everything else (MP3, WebM, Ogg, M4A...) through PyAV, i.e. the
FFmpeg decoders. Either way the result is mixed down to mono and resampled, so callers never
branch on the file type.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import soundfile as sf

from .pcm import PCM16, SAMPLE_RATE, ensure_pcm16, to_int16
from .resample import resample

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview

# The formats libsndfile reads exactly; recognised by content so that bytes and files with a
# misleading extension take the same route.
_SOUNDFILE_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC")


class AudioDecodeError(ValueError):
    """Audio that no decoder could read; the message names the source and the reason."""


def _describe(source: AudioSource) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes in memory>"
    return os.fspath(source)


def _open_source(source: AudioSource) -> str | io.BytesIO:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source))
    path = os.fspath(source)
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    return path


def _head(opened: str | io.BytesIO) -> bytes:
    if isinstance(opened, io.BytesIO):
        return opened.getvalue()[:4]
    with open(opened, "rb") as f:
        return f.read(4)


def _rewind(opened: str | io.BytesIO) -> str | io.BytesIO:
    if isinstance(opened, io.BytesIO):
        opened.seek(0)
    return opened


def _read_soundfile(opened: str | io.BytesIO) -> tuple[npt.NDArray[np.float32], int]:
    data, rate = sf.read(opened, dtype="float32", always_2d=True)
    return data.mean(axis=1, dtype=np.float32), int(rate)


def _read_pyav(opened: str | io.BytesIO) -> tuple[npt.NDArray[np.float32], int]:
    with av.open(opened, "r") as container:
        if not container.streams.audio:
            raise AudioDecodeError("the file has no audio stream")
        stream = container.streams.audio[0]
        # Planar float keeps channels apart so the mixdown is a plain average; FFmpeg's own
        # downmix adds channels at -3 dB and can push a stereo signal past full scale.
        to_planar = av.AudioResampler(format="fltp")
        parts: list[npt.NDArray[np.float32]] = []
        rate = stream.codec_context.sample_rate
        for frame in container.decode(stream):
            rate = frame.sample_rate
            for planar in to_planar.resample(frame):
                parts.append(planar.to_ndarray().mean(axis=0, dtype=np.float32))
    if not parts:
        return np.zeros(0, dtype=np.float32), rate or SAMPLE_RATE
    return np.concatenate(parts), rate


def load_audio(source: AudioSource, rate: int = SAMPLE_RATE) -> PCM16:
    """Decode a file path or in-memory file to mono PCM16 at ``rate``.

    Raises FileNotFoundError for a missing path and :class:`AudioDecodeError` (a ValueError)
    naming the source when the content cannot be decoded.
    """
    opened = _open_source(source)
    errors: list[str] = []
    samples: npt.NDArray[np.float32] | None = None
    native_rate = rate
    if _head(opened).startswith(_SOUNDFILE_MAGIC):
        try:
            samples, native_rate = _read_soundfile(_rewind(opened))
        except (sf.LibsndfileError, RuntimeError) as exc:
            # e.g. a WAV holding a codec libsndfile lacks; FFmpeg may still read it.
            errors.append(f"soundfile: {exc}")
    if samples is None:
        try:
            samples, native_rate = _read_pyav(_rewind(opened))
        except (av.FFmpegError, AudioDecodeError) as exc:
            errors.append(f"PyAV: {exc}")
    if samples is None:
        raise AudioDecodeError(f"cannot decode audio from {_describe(source)}: {'; '.join(errors)}")
    return resample(to_int16(samples), native_rate, rate)


def wav_bytes(pcm: PCM16, rate: int = SAMPLE_RATE) -> bytes:
    """A complete mono 16-bit WAV file in memory.

    The relay protocol sends agent audio as chunks the browser decodes one at a time with
    ``decodeAudioData``, which needs a self-contained file with a correct header, not raw PCM.
    """
    buffer = io.BytesIO()
    sf.write(buffer, ensure_pcm16(pcm, "pcm"), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def save_wav(path: str | os.PathLike[str], pcm: PCM16, rate: int = SAMPLE_RATE) -> None:
    """Write mono 16-bit WAV, the format every tool (and :func:`load_audio`) reads."""
    Path(path).write_bytes(wav_bytes(pcm, rate))
