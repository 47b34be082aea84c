"""Build an official-SDK ``Conversation`` from sagelab pieces, and record it like a ``Session``.

For users who want ElevenLabs' own client in the loop (its audio handling, its callbacks)
while keeping sagelab's tool registry and timeline: the SDK's callbacks and audio interface
feed a :class:`~sagelab.client.timeline.Timeline`, so the same metrics apply.

>>> conv, timeline = sdk_conversation("agent_…", api_key=key, requires_auth=True,
...                                   prompt="Be brief.", registry=tools,
...                                   audio=FileAudioInterface("question.wav"))
>>> conv.start_session(); ...; conv.end_session(); conv.wait_for_session_end()
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from elevenlabs.client import ElevenLabs
from elevenlabs.conversational_ai.conversation import (
    AudioInterface,
    ClientTools,
    Conversation,
    ConversationInitiationData,
)

from sagelab.audio import from_bytes, iter_chunks, load_audio, pcm_bytes, silence
from sagelab.client.timeline import Timeline
from sagelab.tools import ToolRegistry

ELEVENLABS_BASE_URL = "https://api.elevenlabs.io"


class FileAudioInterface(AudioInterface):
    """A microphone that says a recording (after ``lead_s`` of silence, then keeps sending
    silence like an open mic), paced in real time in the SDK's 250 ms chunks."""

    def __init__(
        self, audio: str | Path | np.ndarray, *, lead_s: float = 1.0, tail_s: float = 30.0
    ):
        pcm = audio if isinstance(audio, np.ndarray) else load_audio(audio)
        self.pcm = np.concatenate([silence(int(lead_s * 1000)), pcm, silence(int(tail_s * 1000))])
        self.on_output: Any = None
        self.on_input: Any = None
        self._stop = threading.Event()

    def start(self, input_callback: Any) -> None:
        def run() -> None:
            t0 = time.monotonic()
            for k, chunk in enumerate(iter_chunks(self.pcm, 250)):
                delay = t0 + k * 0.25 - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                if self.on_input is not None:
                    self.on_input(chunk)
                input_callback(pcm_bytes(chunk))

        threading.Thread(target=run, daemon=True, name="sagelab-file-mic").start()

    def stop(self) -> None:
        self._stop.set()

    def output(self, audio: bytes) -> None:
        if self.on_output is not None:
            self.on_output(audio)

    def interrupt(self) -> None:
        if self.on_output is not None:
            self.on_output(None)


class SilentAudioInterface(FileAudioInterface):
    """An open microphone in a quiet room: for typed conversations that still get audio."""

    def __init__(self, *, seconds: float = 600.0) -> None:
        super().__init__(np.zeros(0, dtype=np.int16), lead_s=0.0, tail_s=seconds)


def sdk_conversation(
    agent_id: str,
    *,
    api_key: str | None = None,
    base_url: str = ELEVENLABS_BASE_URL,
    requires_auth: bool = False,
    prompt: str | None = None,
    first_message: str | None = None,
    dynamic_variables: dict[str, Any] | None = None,
    registry: ToolRegistry | None = None,
    audio: AudioInterface | None = None,
) -> tuple[Conversation, Timeline]:
    """An official SDK ``Conversation`` whose events and audio land in a sagelab timeline.

    Audio interfaces from this module also record what the microphone sent; with another
    interface (or none: text only), only what the SDK reports is recorded.
    """
    timeline = Timeline()
    agent: dict[str, Any] = {}
    if prompt is not None:
        agent["prompt"] = {"prompt": prompt}
    if first_message is not None:
        agent["first_message"] = first_message
    tools = ClientTools()
    if registry is not None:
        registry.register_with_client_tools(tools)
    if isinstance(audio, FileAudioInterface):
        audio.on_input = lambda pcm: timeline.add_audio("send", pcm, t_ns=time.monotonic_ns())

        def on_output(data: bytes | None) -> None:
            if data is None:
                timeline.add("recv", "interruption")
            else:
                timeline.add_audio("recv", from_bytes(data), t_ns=time.monotonic_ns())

        audio.on_output = on_output

    def record(kind: str, key: str) -> Any:
        return lambda value: timeline.add("recv", kind, **{key: value})

    def on_correction(original: str, corrected: str) -> None:
        timeline.add(
            "recv",
            "agent_response_correction",
            original_agent_response=original,
            corrected_agent_response=corrected,
        )

    conversation = Conversation(
        ElevenLabs(api_key=api_key, base_url=base_url),
        agent_id,
        requires_auth=requires_auth,
        audio_interface=audio,
        config=ConversationInitiationData(
            conversation_config_override={"agent": agent} if agent else {},
            dynamic_variables=dynamic_variables or {},
        ),
        client_tools=tools,
        callback_agent_response=record("agent_response", "agent_response"),
        callback_user_transcript=record("user_transcript", "user_transcript"),
        callback_agent_response_correction=on_correction,
        callback_latency_measurement=record("ping", "ping_ms"),
    )
    return conversation, timeline
