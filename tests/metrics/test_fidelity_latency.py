"""Measurement fidelity: latencies against an agent whose delays are known in advance.

The real server runs the scripted agent with injected delays (``transcript_delay_ms``,
``reply_delay_ms``, ``audio_delay_ms``, each also reported as a stage), a client tool that
takes a known time, and an energy turn detector whose silence window is counted in audio
frames. The user's "speech" is a tone whose first and last samples are known, sent in 20 ms
chunks (one detector frame each).

Truth comes from the server's side: its store stamps each turn when its first frame was sent
(the transcript, the reply text), on the wall clock, which the test maps onto the monotonic
clock client and server share; the first audio leaves the injected audio delay after the
reply text. Every latency ``turn_table`` computes from the client's timeline must be within
5 ms of that. Independently, the injected delays bound each latency from below: the end of
turn cannot be decided before the chunk that completes the silence window was sent (known by
index), nor answered before the delays. The tool call must take its known 150 ms, and the
barge-in must be decided by the chunk that completes the minimum speech run.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from metrics_signals import LoopWatch, utterance

from sagelab.client import Session
from sagelab.client.session import SentAudio
from sagelab.config import ServerConfig
from sagelab.metrics import tool_call_table, turn_table
from sagelab.server.app import SagelabServer
from sagelab.server.store import ConversationRecord

CHUNK_MS = 20  # one detector frame per chunk
FRAME = 320
SILENCE_MS = 300  # the detector's end-of-turn window
MIN_SPEECH_MS = 60  # speech needed before a barge-in counts
DELAYS = {"transcript_delay_ms": 40, "reply_delay_ms": 120, "audio_delay_ms": 80}
TOOL_MS = 150
TOLERANCE_MS = 5.0
ATTEMPTS = 3


@pytest.fixture
def server_config(server_config: ServerConfig) -> ServerConfig:
    """The bundled scripted agent with known delays, a short script and no greeting."""
    [spec] = server_config.agents
    spec.first_message = ""  # no greeting: the first turn is the user's
    spec.options = {
        "turn_detection": {
            "threshold_dbfs": -40,
            "silence_ms": SILENCE_MS,
            "min_speech_ms": MIN_SPEECH_MS,
        },
        **DELAYS,
        "replies": [
            {"text": "First.", "audio": "audio/reply_lookup.wav"},
            {
                "text": "The weather in {city} is {result}.",
                "audio": "audio/reply_lookup.wav",
                "tool_call": {"name": "get_weather", "parameters": {"city": "Paris"}},
            },
            {"text": "A long answer to talk over.", "audio": "audio/reply_long.wav"},
            {"text": "After the barge-in.", "audio": "audio/reply_lookup.wav"},
        ],
    }
    return server_config


async def slow_weather(params: dict[str, Any]) -> str:
    await asyncio.sleep(TOOL_MS / 1000)
    return "sunny"


def end_of_turn_chunk(speech_end_sample: int) -> int:
    """Index of the chunk whose frame completes the silence window after speech ends."""
    return math.ceil(speech_end_sample / FRAME) + SILENCE_MS // CHUNK_MS - 1


def mono_offset_s() -> float:
    """``time.time() - time.monotonic()``: maps the store's epoch stamps onto the client's clock
    (both sampled back to back; the tightest of a few tries)."""
    best: tuple[float, float] = (float("inf"), 0.0)
    for _ in range(20):
        m0 = time.monotonic_ns()
        wall = time.time()
        m1 = time.monotonic_ns()
        best = min(best, ((m1 - m0) / 1e9, wall - (m0 + m1) / 2e9))
    return best[1]


@dataclass
class Run:
    session: Session
    sends: list[SentAudio]
    barge: SentAudio
    stored: ConversationRecord
    offset_s: float
    clock_step_ms: float  # how far the wall clock moved against the monotonic one meanwhile
    max_lag_ms: float


async def converse(server: SagelabServer, speech_ms: int, audio: np.ndarray) -> Run:
    """Three spoken turns (plain, with a tool, a long reply), then a barge-in over the last."""
    offset_before = mono_offset_s()
    async with (
        LoopWatch() as watch,
        Session.connect(
            server.http_url,
            "scripted",
            stages=True,
            chunk_ms=CHUNK_MS,
            record_audio=False,
            tools={"get_weather": slow_weather},
        ) as s,
    ):
        sends = []
        for _ in range(3):
            mark = s.mark()
            sends.append(await s.send_audio(audio))
            if len(sends) < 3:
                await s.wait_agent_done(quiet_s=0.2)
        await s.wait_for("audio", since=mark, timeout=10)
        await asyncio.sleep(0.4)  # the long reply is playing: talk over it
        barge = await s.send_audio(utterance(0, speech_ms, 1000))
        await s.wait_for("interruption", since=mark)
        await s.wait_agent_done(quiet_s=0.2)
    assert server.store is not None and s.conversation_id is not None
    server.store.flush()
    stored = server.store.get_conversation(s.conversation_id)
    assert stored is not None
    offset = mono_offset_s()
    return Run(
        s, sends, barge, stored, offset, abs(offset - offset_before) * 1000, watch.max_lag_ms
    )


def off_by_more_than_5_ms(run: Run, speech_end: int, speech_ms: int) -> list[str]:
    """Check one run: what the timeline says happened must be so (hard asserts), and every
    latency must be within 5 ms of the truth (returned as a list of misses)."""
    s, sends, barge, stored = run.session, run.sends, run.barge, run.stored
    sent_at = {  # (role, event id) → when the server sent that turn's first frame, client clock
        (t["role"], t["event_id"]): (t["started_at"] - run.offset_s) * 1e9 for t in stored["turns"]
    }
    misses: list[str] = []

    def near(what: str, measured: float, truth: float) -> None:
        if not abs(measured - truth) <= TOLERANCE_MS:
            misses.append(f"{what}: {measured:.2f} ms, truth {truth:.2f} ms")

    turns = turn_table(s.timeline).set_index("event_id")
    spoken = turns[turns["user_input"] == "speech"]
    assert len(spoken) == 4, turns[["user_input", "agent_text"]]
    for sent, (event_id, row) in zip([*sends, barge], spoken.iterrows(), strict=True):
        assert row["user_speech_end_ns"] == sent.speech_end_ns
        transcript_sent = sent_at[("user", event_id)]
        response_sent = sent_at[("agent", event_id)]
        first_audio_sent = response_sent + row["stage_audio_delay_ms"] * 1e6
        truth = {
            "transcript_ms": (transcript_sent - sent.speech_end_ns) / 1e6,
            "agent_text_ms": (response_sent - sent.speech_end_ns) / 1e6,
            "voice_to_voice_ms": (first_audio_sent - sent.speech_end_ns) / 1e6,
            "ttfa_ms": (first_audio_sent - transcript_sent) / 1e6,
        }
        for metric, value in truth.items():
            near(f"turn {event_id} {metric}", row[metric], value)

        # And the injected delays are all there: the end of turn cannot be decided before the
        # chunk that completes the silence window was sent, nor answered before the delays.
        end = speech_end if sent is not barge else speech_ms * 16
        window_ms = (sent.chunk_times_ns[end_of_turn_chunk(end)] - sent.speech_end_ns) / 1e6
        assert row["transcript_ms"] >= window_ms + DELAYS["transcript_delay_ms"]
        least = window_ms + sum(DELAYS.values()) + (TOOL_MS if row["tool_calls"] else 0)
        assert least <= row["voice_to_voice_ms"]
        if row["voice_to_voice_ms"] > least + 50:  # nothing else in the way, unless a stall
            misses.append(
                f"turn {event_id} voice_to_voice_ms: {row['voice_to_voice_ms']:.1f} ms, "
                f"over the {least:.1f} ms the delays explain by more than 50 ms"
            )

    # The tool turn waited for the client tool; the others did not call one.
    assert list(spoken["tool_calls"]) == [0, 1, 0, 0]
    [call] = tool_call_table(s.timeline).itertuples()
    assert call.name == "get_weather" and call.answered and not call.is_error
    [stored_call] = stored["tool_calls"]
    near("tool call", call.duration_ms, TOOL_MS)
    assert call.duration_ms <= stored_call["duration_ms"]  # the server's span includes ours

    # The long reply was cut by the barge-in, once its minimum speech run had been heard: the
    # chunk completing that run decides it.
    cut = spoken.iloc[2]
    assert cut["interrupted"] and not spoken.iloc[[0, 1, 3]]["interrupted"].any()
    assert [t["interrupted"] for t in stored["turns"] if t["role"] == "agent"] == [
        False, False, True, False
    ]  # fmt: skip
    assert cut["barge_in_ns"] == barge.speech_start_ns
    k = MIN_SPEECH_MS // CHUNK_MS - 1
    near(
        "interruption",
        cut["interruption_ms"],
        (barge.chunk_times_ns[k] - barge.speech_start_ns) / 1e6,
    )
    assert cut["interruption_audio_ms"] >= 0
    return misses


async def test_latencies_match_the_servers_send_times_within_5_ms(
    server: SagelabServer,
) -> None:
    lead, speech, trail = 200, 600, 1000
    audio = utterance(lead, speech, trail)
    # A process that is not scheduled cannot stamp a frame on time: on this shared 2-core
    # machine the event loop is sometimes held up for tens of ms, and a measurement taken then
    # is late by as much. A systematic error shows in every run; a stall in one. So the test
    # passes when one of three runs has every latency within 5 ms, and otherwise reports each
    # run's misses with the longest stall its loop saw.
    failures = []
    for _ in range(ATTEMPTS):
        run = await converse(server, speech, audio)
        misses = off_by_more_than_5_ms(run, (lead + speech) * 16, speech)
        if not misses:
            return
        failures.append(
            f"{misses} (event loop stalled up to {run.max_lag_ms:.1f} ms, wall clock moved "
            f"{run.clock_step_ms:.2f} ms)"
        )
    pytest.fail("every run missed the 5 ms bound:\n" + "\n".join(failures))
