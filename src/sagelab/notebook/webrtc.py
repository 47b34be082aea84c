"""An adapter for ``ipywebrtc`` recordings: its ``AudioRecorder`` records a whole WebM/Opus blob
(no streaming) and sets it on ``recorder.audio.value`` when it stops. This decodes that blob to
16 kHz PCM16 (PyAV) and speaks it as one user turn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sagelab.audio import PCM16, AudioDecodeError, load_audio


def decode_recording(blob: bytes | bytearray | memoryview) -> PCM16:
    """The audio of an ``AudioRecorder`` blob (WebM/Opus, or whatever the browser chose)."""
    if not blob:
        raise AudioDecodeError("the recorder holds no audio yet: record something first")
    return load_audio(bytes(blob))


def send_recorder_audio(recorder: Any, target: Any, *, trailing_silence_ms: int = 1500) -> Any:
    """Send what ``recorder`` (an ``ipywebrtc.AudioRecorder``) holds as one user turn.

    ``target`` is a ``ConversationPanel`` or a ``SyncSession``; returns their ``SentAudio``.
    """
    pcm = decode_recording(recorder.audio.value)
    if hasattr(target, "send_recording"):
        return target.send_recording(pcm, trailing_silence_ms=trailing_silence_ms)
    return target.send_audio(pcm, trailing_silence_ms=trailing_silence_ms)


def attach_recorder(
    recorder: Any,
    target: Any,
    *,
    trailing_silence_ms: int = 1500,
    on_error: Callable[[Exception], None] | None = None,
) -> Callable[[], None]:
    """Send every new recording of ``recorder`` to ``target`` as soon as it stops.

    Returns a function that detaches the recorder again. The send runs without blocking the
    kernel (a panel's session lives on its own thread); decoding errors go to ``on_error``
    (default: raised in the kernel's log).
    """

    def on_value(change: dict[str, Any]) -> None:
        if not change["new"]:
            return
        try:
            pcm = decode_recording(change["new"])
            if hasattr(target, "send_recording"):
                target.send_recording(pcm, trailing_silence_ms=trailing_silence_ms, wait=False)
            else:
                target.send_audio(pcm, trailing_silence_ms=trailing_silence_ms)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(exc)

    recorder.audio.observe(on_value, "value")
    return lambda: recorder.audio.unobserve(on_value, "value")
