"""The async ``Session`` client against the real bundled server, with real recorded speech."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from sagelab.audio import load_audio
from sagelab.client import Session, SessionError, Timeline
from sagelab.protocol import convai as wire
from sagelab.server.app import SagelabServer

CHUNK_MS = 100
TRAILING_MS = 800


def quiet(server: SagelabServer, **kwargs: Any) -> AbstractAsyncContextManager[Session]:
    """A session without the greeting, so a test's first turn is not spent talking over it."""
    return Session.connect(server.http_url, "scripted", first_message="", **kwargs)


async def reach_tool_turn(s: Session) -> Any:
    """The scripted agent's second reply is the one that calls ``get_weather``."""
    mark = s.mark()
    await s.send_text("one")
    first = await s.wait_for("agent_response", since=mark, timeout=10)
    assert "heard" in first.data["agent_response"]
    mark = s.mark()
    await s.send_text("two")
    return await s.wait_for(
        "agent_response",
        since=mark,
        timeout=15,
        predicate=lambda e: "looked" in e.data["agent_response"],
    )


async def test_spoken_turn_is_paced_in_real_time_and_answered_after_the_silence_window(
    server: SagelabServer, speech_dir: Path, tmp_path: Path
) -> None:
    wav = speech_dir / "goforward.wav"
    samples = load_audio(wav).size + 16 * TRAILING_MS
    async with quiet(server, chunk_ms=CHUNK_MS) as s:
        mark = s.mark()
        sent = await s.send_audio(wav, trailing_silence_ms=TRAILING_MS)
        reply = await s.wait_for("agent_response", since=mark, timeout=15)
        first_audio = await s.wait_for(
            "audio", since=mark, predicate=lambda e: e.event_id == reply.event_id
        )
        heard = await s.wait_for("user_transcript", since=mark)
        await s.wait_agent_done()

    assert sent.duration_s == pytest.approx(samples / 16_000)
    assert len(sent.chunk_times_ns) == math.ceil(samples / (16 * CHUNK_MS))
    # Real time, not a burst: the schedule cannot run ahead, and a generous allowance for a
    # busy machine still rules out sending the whole recording at once.
    span_s = (sent.end_ns - sent.start_ns) / 1e9
    scheduled_s = (len(sent.chunk_times_ns) - 1) * CHUNK_MS / 1000
    assert scheduled_s - 0.02 <= span_s <= scheduled_s + 1.5
    assert list(sent.chunk_times_ns) == sorted(sent.chunk_times_ns)
    # The recording's own room tone plus the appended silence come after the speech.
    assert sent.start_ns < sent.speech_start_ns < sent.speech_end_ns < sent.end_ns
    assert (sent.end_ns - sent.speech_end_ns) / 1e9 >= TRAILING_MS / 1000 - 0.05

    assert "heard you" in reply.data["agent_response"]
    assert heard.data["user_transcript"].startswith("(speech,")
    # The agent only answers once it has heard its 500 ms silence window after the speech. The
    # window is counted in audio, so jitter in when the earlier chunk left can shorten the gap
    # on the wall clock by a little: hence not the full 500.
    assert (first_audio.t_ns - sent.speech_end_ns) / 1e6 > 450
    assert s.closed and s.close_code == 1000

    # The timeline is the record of all this: it survives a save and load unchanged.
    saved = s.timeline.save(tmp_path / "run")
    loaded = Timeline.load(saved)
    assert loaded.events == s.timeline.events
    assert (loaded.t0_ns, loaded.wall_t0) == (s.timeline.t0_ns, s.timeline.wall_t0)
    user_samples = sum(e.data["samples"] for e in s.timeline.of_type("user_audio_chunk"))
    agent_samples = sum(e.data["samples"] for e in s.timeline.of_type("audio"))
    assert user_samples == samples
    assert agent_samples > 16_000  # at least a second of the reply arrived
    assert loaded.user_audio.size == s.timeline.user_audio.size == user_samples
    assert loaded.agent_audio.size == s.timeline.agent_audio.size == agent_samples
    assert load_audio(saved / "user.wav").size == user_samples
    assert load_audio(saved / "agent.wav").size == agent_samples

    df = s.timeline.to_dataframe()
    assert len(df) == len(s.timeline)
    assert df["type"].tolist() == [e.type for e in s.timeline.events]
    assert (df["t_s"] >= 0).all()


async def _async_weather(params: dict[str, Any]) -> str:
    await asyncio.sleep(0.01)
    return f"async sunny in {params['city']}"


def _sync_weather(params: dict[str, Any]) -> str:
    return f"sync sunny in {params['city']}"


def _broken_weather(params: dict[str, Any]) -> str:
    raise RuntimeError("weather service is down")


@pytest.mark.parametrize(
    ("tools", "expected", "is_error"),
    [
        ({"get_weather": _async_weather}, "The weather in Paris is async sunny in Paris.", False),
        ({"get_weather": _sync_weather}, "The weather in Paris is sync sunny in Paris.", False),
        (
            {"get_weather": _broken_weather},
            "The weather in Paris is unavailable (weather service is down).",
            True,
        ),
        (
            {"get_time": _sync_weather},  # registered, but not the tool the agent calls
            "The weather in Paris is unavailable (Tool 'get_weather' is not registered).",
            True,
        ),
    ],
    ids=["async", "sync", "raising", "unknown"],
)
async def test_client_tool_results_reach_the_agent(
    server: SagelabServer,
    tools: dict[str, Callable[[dict[str, Any]], Any]],
    expected: str,
    is_error: bool,
) -> None:
    async with quiet(server, tools=tools, text_only=True) as s:
        reply = await reach_tool_turn(s)
    assert reply.data["agent_response"].endswith(expected)
    [call] = s.timeline.of_type("client_tool_call")
    assert call.data["tool_name"] == "get_weather"
    assert call.data["parameters"] == {"city": "Paris"}
    [result] = s.timeline.of_type("client_tool_result")
    assert result.data["tool_call_id"] == call.data["tool_call_id"]
    assert result.data["is_error"] is is_error
    assert server.store is not None
    server.store.flush()
    stored = server.store.get_conversation(s.conversation_id or "")
    assert stored is not None
    [tool] = stored["tool_calls"]
    assert tool["is_error"] is is_error


async def test_a_slow_sync_tool_does_not_stall_the_session(server: SagelabServer) -> None:
    release = threading.Event()

    def slow_weather(params: dict[str, Any]) -> str:
        return "released" if release.wait(timeout=8) else "never released"

    async with quiet(server, tools={"get_weather": slow_weather}, text_only=True) as s:
        mark = s.mark()
        await s.send_text("one")
        await s.wait_for("agent_response", since=mark, timeout=10)
        mark = s.mark()
        await s.send_text("two")
        await s.wait_for("client_tool_call", since=mark, timeout=10)
        # While the tool blocks, the session still answers: pings and this round trip.
        pings_before = len(s.timeline.of_type("ping"))
        assert await s.measure_rtt() > 0
        await s.wait_for("ping", since=len(s.timeline), timeout=5)
        assert len(s.timeline.of_type("ping")) > pings_before
        release.set()
        reply = await s.wait_for("agent_response", since=mark, timeout=10)
    assert reply.data["agent_response"].endswith("is released.")


async def test_wait_for_since_ignores_earlier_events(server: SagelabServer) -> None:
    async with quiet(server, text_only=True, tools={"get_weather": _sync_weather}) as s:
        await s.send_text("one")
        first = await s.wait_for("agent_response", timeout=10)
        mark = s.mark()
        with pytest.raises(TimeoutError):
            await s.wait_for("agent_response", since=mark, timeout=0.5)
        await s.send_text("two")
        second = await s.wait_for("agent_response", since=mark, timeout=10)
        assert await s.wait_for("agent_response") is first  # from the start: still the first
    assert second is not first
    assert second.event_id > first.event_id
    assert "looked" in second.data["agent_response"]


async def test_wait_for_raises_session_error_once_the_session_is_closed(
    server: SagelabServer,
) -> None:
    s = await Session.connect(server.http_url, "scripted", first_message="", text_only=True)
    await s.close()
    with pytest.raises(SessionError, match="closed"):
        await s.wait_for("agent_response", since=s.mark(), timeout=5)
    with pytest.raises(SessionError):
        await s.send_text("too late")


async def test_events_yields_typed_messages_until_the_session_closes(
    server: SagelabServer,
) -> None:
    async with quiet(server) as s:
        received: list[wire.ServerMessage] = []

        async def collect() -> None:
            async for msg in s.events():
                received.append(msg)

        collector = asyncio.create_task(collect())
        await asyncio.sleep(0)  # let it subscribe before anything is said
        await s.send_text("hello")
        await s.wait_for("audio", since=0, timeout=10)
        await s.wait_for("ping", since=s.mark(), timeout=5)
    # Closing ends the iteration by itself.
    await asyncio.wait_for(collector, timeout=5)
    responses = [m for m in received if isinstance(m, wire.AgentResponse)]
    assert [r.agent_response for r in responses] == [
        "I heard you. This reply is a recording, streamed in real time."
    ]
    audio = [m for m in received if isinstance(m, wire.AudioEvent)]
    assert audio and all(a.event_id == responses[0].event_id for a in audio)
    assert all(isinstance(a.audio, bytes) and a.audio for a in audio)
    assert any(isinstance(m, wire.Ping) for m in received)
    assert not any(isinstance(m, wire.UnknownServerMessage) for m in received)


async def test_measure_rtt_is_a_positive_number_of_seconds(server: SagelabServer) -> None:
    async with quiet(server, text_only=True) as s:
        rtts = [await s.measure_rtt() for _ in range(3)]
    assert all(isinstance(r, float) and 0 < r < 5 for r in rtts)
    recorded = [e.data["rtt_ms"] for e in s.timeline.of_type("ws_rtt")]
    assert recorded == pytest.approx([r * 1000 for r in rtts])
