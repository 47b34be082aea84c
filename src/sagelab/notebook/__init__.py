"""Notebook widgets for voice conversations (anywidget; JupyterLab 4 and Notebook 7).

- ``MicRecorder``: the browser's microphone as 16 kHz PCM16 chunks in the kernel.
- ``AudioPlayer``: PCM played behind a jitter buffer, with reports of what was heard.
- ``ConversationPanel``: a whole conversation with an agent, driven from the notebook.
- ``send_recorder_audio`` / ``attach_recorder``: ``ipywebrtc.AudioRecorder`` blobs as user turns.

Install with ``pip install 'sagelab[notebook]'``.
"""

from sagelab.notebook.messages import ClockSync, WidgetMessageError
from sagelab.notebook.mic import MicInput, MicRecorder, SpeechSegmenter
from sagelab.notebook.panel import ConversationPanel
from sagelab.notebook.player import AudioPlayer, PlayerOutput
from sagelab.notebook.webrtc import attach_recorder, decode_recording, send_recorder_audio

__all__ = [
    "AudioPlayer",
    "ClockSync",
    "ConversationPanel",
    "MicInput",
    "MicRecorder",
    "PlayerOutput",
    "SpeechSegmenter",
    "WidgetMessageError",
    "attach_recorder",
    "decode_recording",
    "send_recorder_audio",
]
