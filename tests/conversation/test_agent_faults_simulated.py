"""Model faults in the local agent, on the simulated clock: a failing speech-to-text or
text-to-speech is reported to the client and the conversation goes on.

The same faults injected into the real Whisper and Piper through configuration are checked
end to end in ``tests/reliability/test_faults.py`` (model tier); these tests pin the
behaviour of the ``Conversation`` + ``LocalAgent`` adapters around them, with fakes that raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
from simclient import SimClient, resolved, say_text, sim_config, stream_audio

from sagelab.agents.local.brains.echo import EchoBrain
from sagelab.agents.local.pipeline import LocalAgent
from sagelab.agents.turns import EnergyTurnDetector
from sagelab.conversation.fakes import FakeSTT, FakeTTS, MarkedSpeech
from sagelab.conversation.simulation import run_simulated, simulated_runner
from sagelab.protocol import closecodes
from sagelab.server.conversation import Conversation
from sagelab.server.metrics import ServerMetrics

GREETING = "Hello, I am the test agent."


class DeafSTT(FakeSTT):
    def transcribe(self, pcm16k: np.ndarray):  # type: ignore[no-untyped-def]
        raise RuntimeError("decoder exploded")


class MuteTTS(FakeTTS):
    def synthesize(self, text: str) -> Iterator:  # type: ignore[type-arg]
        raise RuntimeError("vocoder exploded")


def _talk(stt: FakeSTT, tts: FakeTTS) -> SimClient:
    config = sim_config(ping_interval_s=1.0)
    client = SimClient()
    speech = MarkedSpeech().add_silence(300).add_speech(1200).add_silence(1500).pcm

    async def main() -> None:
        conv = Conversation(
            conversation_id="conv_faults00001",
            agent=resolved(config, first_message=GREETING, backend="local"),
            transport=client,
            config=config,
            metrics=ServerMetrics(),
            store=None,
        )
        client.conv = conv
        agent = LocalAgent(
            conv,
            detector=EnergyTurnDetector(silence_ms=400),
            stt=stt,
            tts=tts,
            brain=EchoBrain(prefix="Heard "),
            runner=simulated_runner(lambda fn: 0.05),
        )
        await conv.start(agent)
        await asyncio.sleep(5)
        await stream_audio(conv, agent, speech, chunk_ms=100)
        await asyncio.sleep(5)
        await say_text(conv, agent, "what can you do")
        await asyncio.sleep(10)
        assert not conv.closed  # the session went on through the fault
        await conv.close(closecodes.NORMAL, "done")

    run_simulated(main)
    return client


def test_a_failing_transcription_is_reported_and_typed_turns_still_work() -> None:
    client = _talk(DeafSTT(), FakeTTS(ms_per_char=50, chunks=3))
    errors = [f.data for f in client.of("error")]
    assert [(code, kind) for code, kind, _ in errors] == [
        (closecodes.OPERATIONAL, "asr_transcription_error")
    ]
    assert "speech-to-text failed" in errors[0][2] and "decoder exploded" in errors[0][2]
    assert client.of("user_transcript") == []
    typed = next(f for f in client.of("agent_response") if "what can you do" in f.data)
    assert [f for f in client.of("audio") if f.event_id == typed.event_id]  # it was spoken
    assert client.of("close")[-1].data[0] == closecodes.NORMAL


def test_a_failing_synthesis_is_reported_and_the_text_still_arrives() -> None:
    client = _talk(FakeSTT(), MuteTTS())
    kinds = {kind for _, kind, _ in (f.data for f in client.of("error"))}
    assert kinds == {"tts_cascade_error"}
    assert "text-to-speech failed" in client.of("error")[0].data[2]
    responses = [f.data for f in client.of("agent_response")]
    assert responses[0] == GREETING
    assert any("what can you do" in r for r in responses)  # typed turn: the text arrives
    assert client.of("user_transcript")  # and the spoken one was heard
    assert client.of("audio") == []
    assert client.of("close")[-1].data[0] == closecodes.NORMAL
