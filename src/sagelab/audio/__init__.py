"""Audio at sagelab's edges: wire formats, files, browser WebM/Opus, resampling and pacing.

Inside sagelab audio is mono PCM16 at 16 kHz (:data:`PCM16`); this package is where it is
converted from and to everything else.
"""

from .activity import speech_bounds
from .chunking import RealtimeSchedule, iter_chunks
from .formats import (
    FORMAT_NAMES,
    PCM_16000,
    AudioFormat,
    WireDecoder,
    WireEncoder,
    decode_to_pcm16,
    encode_pcm16,
)
from .io import AudioDecodeError, load_audio, save_wav, wav_bytes
from .pcm import (
    PCM16,
    SAMPLE_RATE,
    SILENCE_DBFS,
    duration_s,
    ensure_pcm16,
    from_bytes,
    ms_to_samples,
    pcm_bytes,
    rms_dbfs,
    silence,
    to_float32,
    to_int16,
)
from .resample import StreamResampler, resample
from .webm import (
    IncrementalWebmDecoder,
    WebmDecodeError,
    WebmOpusStreamEncoder,
    encode_webm_opus,
    split_at_clusters,
)

__all__ = [
    "FORMAT_NAMES",
    "PCM16",
    "PCM_16000",
    "SAMPLE_RATE",
    "SILENCE_DBFS",
    "AudioDecodeError",
    "AudioFormat",
    "IncrementalWebmDecoder",
    "RealtimeSchedule",
    "StreamResampler",
    "WebmDecodeError",
    "WebmOpusStreamEncoder",
    "WireDecoder",
    "WireEncoder",
    "decode_to_pcm16",
    "duration_s",
    "encode_pcm16",
    "encode_webm_opus",
    "ensure_pcm16",
    "from_bytes",
    "iter_chunks",
    "load_audio",
    "ms_to_samples",
    "pcm_bytes",
    "resample",
    "rms_dbfs",
    "save_wav",
    "silence",
    "speech_bounds",
    "split_at_clusters",
    "to_float32",
    "to_int16",
    "wav_bytes",
]
