"""Shared fixtures: a real bundled server on a free port, with its SQLite store in tmp."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from elevenlabs.conversational_ai.conversation import AudioInterface

from sagelab.audio import pcm_bytes, silence
from sagelab.config import ServerConfig, load_config
from sagelab.server.app import BackgroundServer, SagelabServer

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "data" / "speech"


@pytest.fixture
def speech_dir() -> Path:
    return SPEECH


@pytest.fixture
def server_config(tmp_path: Path) -> ServerConfig:
    """The bundled ``scripted`` agent, on port 0, storing into this test's tmp dir."""
    config = load_config(
        None,
        env={},
        port=0,
        store_path=str(tmp_path / "store.sqlite3"),
        ping_interval_s=0.2,
    )
    config.agents = [a for a in config.agents if a.id == "scripted"]
    return config


@pytest.fixture
async def server(server_config: ServerConfig) -> AsyncIterator[SagelabServer]:
    async with SagelabServer(server_config) as srv:
        yield srv


@pytest.fixture
def bg_server(server_config: ServerConfig) -> Iterator[SagelabServer]:
    """A server on its own thread, for the synchronous official SDK."""
    with BackgroundServer(server_config) as srv:
        yield srv


class WavMicrophone(AudioInterface):
    """A microphone that plays a script: each utterance starts at a given second, silence
    elsewhere, sent in 250 ms chunks in real time. Records every output chunk and interrupt."""

    def __init__(self, placements: list[tuple[float, np.ndarray]], total_s: float):
        self.audio = silence(int(total_s * 1000))
        for at, pcm in placements:
            i = int(at * 16000)
            self.audio[i : i + pcm.size] = pcm
        self.outputs: list[tuple[float, bytes]] = []
        self.interrupts: list[float] = []
        self._stop = threading.Event()

    def start(self, input_callback):  # type: ignore[no-untyped-def]
        def run() -> None:
            t0 = time.monotonic()
            chunk = 4000  # 250 ms, the SDK's recommended input chunk
            for k, start in enumerate(range(0, self.audio.size, chunk)):
                delay = t0 + k * 0.25 - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                input_callback(pcm_bytes(self.audio[start : start + chunk]))

        threading.Thread(target=run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def output(self, audio: bytes) -> None:
        self.outputs.append((time.monotonic(), audio))

    def interrupt(self) -> None:
        self.interrupts.append(time.monotonic())


@pytest.fixture(name="WavMicrophone")
def wav_microphone_class() -> type[WavMicrophone]:
    """The official SDK's ``AudioInterface`` fed from recordings on a timed script."""
    return WavMicrophone
