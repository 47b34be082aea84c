"""Agents announce their audio formats; every pcm_* rate and ulaw_8000 work both ways."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sagelab.audio import load_audio
from sagelab.client import Session
from sagelab.server.app import SagelabServer

ASSETS = __import__("pathlib").Path(__file__).resolve().parents[2] / "src/sagelab/assets/audio"


@pytest.mark.parametrize("fmt", ["pcm_8000", "pcm_22050", "pcm_44100", "pcm_48000", "ulaw_8000"])
async def test_output_and_input_formats(server_config, speech_dir, fmt):
    server_config.agents[0].output_format = fmt
    server_config.agents[0].input_format = fmt
    # This checks the formats, not pacing: the whole 4.4 s greeting may leave at once, and the
    # speech goes unpaced (within the 5 s burst the input limiter allows).
    server_config.audio_lead_ms = 5000
    greeting = load_audio(ASSETS / "greeting.wav")
    async with (
        SagelabServer(server_config) as server,
        Session.connect(server.http_url, "scripted") as s,
    ):
        meta = s.timeline.of_type("conversation_initiation_metadata")[0]
        assert meta.data["agent_output_audio_format"] == fmt
        assert meta.data["user_input_audio_format"] == fmt
        await s.wait_for("agent_response", timeout=5)
        await _until(lambda: s.timeline.agent_audio.size >= 0.98 * greeting.size)
        await asyncio.sleep(0.1)  # nothing more than the greeting comes
        received = s.timeline.agent_audio
        # The whole greeting arrived, at the right speed (resampled, not reinterpreted).
        assert abs(received.size - greeting.size) < 0.02 * greeting.size
        # The server resamples each block whole; the client decodes chunk by chunk (edges at
        # every 100 ms), which costs a little correlation at rates that are not multiples.
        assert _best_correlation(received, greeting) > 0.8
        # Speech sent in the agent's input format is heard as a turn.
        mark = s.mark()
        await s.send_audio(speech_dir / "goforward.wav", trailing_silence_ms=800, realtime=False)
        heard = await s.wait_for("user_transcript", since=mark, timeout=10)
    assert heard.data["user_transcript"].startswith("(speech, 1.")


async def _until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 400) -> float:
    """Correlation at the best alignment: resampling filters delay the signal a little."""
    n = min(a.size, b.size) - 2 * max_lag
    ref = b[max_lag : max_lag + n].astype(float)
    return max(
        float(np.corrcoef(a[max_lag + lag : max_lag + lag + n].astype(float), ref)[0, 1])
        for lag in range(-max_lag, max_lag + 1, 4)
    )
