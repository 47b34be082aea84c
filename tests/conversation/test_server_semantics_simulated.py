"""The protocol semantics the server is responsible for, on the simulated clock.

The server's ``Conversation`` adapter, the bundled ``scripted`` backend and a real SQLite store
run on ``VirtualTimeLoop``; ``SimClient`` stands where the websocket would be. These were
wire tests over real sockets in real time (``tests/server/test_semantics.py`` keeps one short
smoke check of the route itself); here the recordings play out, pings repeat and timeouts
expire in simulated seconds, and nothing sleeps on the wall clock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from simclient import (
    TURN_KINDS,
    SimClient,
    open_conversation,
    resolved,
    say_text,
    sim_config,
    stream_audio,
)

from sagelab.agents.turns import EnergyTurnDetector
from sagelab.audio import load_audio, silence
from sagelab.conversation.simulation import run_simulated
from sagelab.protocol import closecodes
from sagelab.server.store import ConversationStore


def _with_store(conv, store: ConversationStore) -> None:  # type: ignore[no-untyped-def]
    conv.store = store
    store.start_conversation(conv.conversation_id, conv.agent.id, "convai")


def test_metadata_first_exactly_once_and_event_ids_increase_per_turn() -> None:
    client = SimClient(tools={"get_weather": lambda p: "warm"})

    async def main() -> None:
        conv, backend = await open_conversation(client, sim_config())
        # The greeting plays out first: text over it would interrupt it, and that
        # interruption rightly carries the greeting's id, below the pings sent meanwhile.
        await asyncio.sleep(10)
        for text in ("one", "two", "three"):
            mark = len(client.frames)
            await say_text(conv, backend, text)
            reply = await client.wait_for("agent_response", since=mark)
            await client.wait_for(
                "audio", since=mark, predicate=lambda f, r=reply: f.event_id == r.event_id
            )
            await asyncio.sleep(15)  # every reply's recording plays out (simulated seconds)
        await conv.close(closecodes.NORMAL, "done")

    run_simulated(main)
    frames = client.frames
    assert frames[0].kind == "metadata" and len(client.of("metadata")) == 1
    turns = client.of("agent_response")
    ids = [f.event_id for f in turns]
    assert len(ids) == 4  # greeting + three replies
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    # Every audio frame between a turn's response and the next one carries the turn's id.
    positions = [frames.index(t) for t in turns] + [len(frames)]
    for turn, start, end in zip(turns, positions, positions[1:], strict=False):
        audio_ids = {f.event_id for f in frames[start:end] if f.kind == "audio"}
        assert audio_ids == {turn.event_id}
    tool_call = client.of("client_tool_call")[0]
    assert tool_call.event_id == ids[2]  # "two" got the reply with the tool call
    assert "warm" in turns[2].data
    # All ids (pings included) only ever increase.
    all_ids = [f.event_id for f in frames if f.event_id is not None and f.kind != "audio"]
    assert all_ids == sorted(all_ids)
    # Pings never share an id with a turn.
    assert not {f.event_id for f in client.of("ping")} & {
        f.event_id for f in frames if f.kind in TURN_KINDS
    }


def test_ping_ms_is_null_first_then_the_measured_round_trip() -> None:
    client = SimClient(rtt_s=0.035)

    async def main() -> list[float]:
        conv, _ = await open_conversation(client, sim_config())
        await asyncio.sleep(2.0)
        await conv.close(closecodes.NORMAL, "done")
        return conv.ping_rtts_ms

    rtts = run_simulated(main)
    pings = client.of("ping")
    assert len(pings) >= 5  # every 0.2 s
    assert pings[0].data is None
    assert [p.data for p in pings[1:]] == [35] * (len(pings) - 1)
    assert rtts and all(abs(r - 35.0) < 1e-6 for r in rtts)
    gaps = np.diff([p.t for p in pings])
    assert np.allclose(gaps, 0.2, atol=0.01)


def test_an_unanswered_ping_is_not_measured() -> None:
    client = SimClient(answer_pings=False)

    async def main() -> list[float]:
        conv, _ = await open_conversation(client, sim_config())
        await asyncio.sleep(1.0)
        await conv.close(closecodes.NORMAL, "done")
        return conv.ping_rtts_ms

    assert run_simulated(main) == []
    assert len(client.of("ping")) >= 3 and all(p.data is None for p in client.of("ping"))


def test_interruption_then_next_turn_has_a_higher_id(tmp_path: Path, speech_dir: Path) -> None:
    client = SimClient(tools={"get_weather": lambda p: "ok"})
    store = ConversationStore(tmp_path / "store.sqlite3")
    speech = np.concatenate([load_audio(speech_dir / "cards_002.wav"), silence(700)])

    async def main() -> str:
        conv, backend = await open_conversation(client, sim_config())
        _with_store(conv, store)
        await asyncio.sleep(8)  # the greeting plays out
        for text in ("first", "second"):
            mark = len(client.frames)
            await say_text(conv, backend, text)
            await client.wait_for("agent_response", since=mark)
            await asyncio.sleep(10)
        mark = len(client.frames)
        await say_text(conv, backend, "tell me something long")
        long = await client.wait_for("agent_response", since=mark)
        await client.wait_for("audio", since=mark, predicate=lambda f: f.event_id == long.event_id)
        await asyncio.sleep(1.0)
        await stream_audio(conv, backend, speech)
        await asyncio.sleep(5)
        await conv.close(closecodes.NORMAL, "done")
        return conv.conversation_id

    conversation_id = run_simulated(main)
    frames = client.frames
    long = next(f for f in client.of("agent_response") if f.data.startswith("Here is a longer"))
    interruption = client.of("interruption")[0]
    correction = client.of("correction")[0]
    assert interruption.event_id == correction.event_id == long.event_id
    after = [f for f in client.of("agent_response") if f.t > interruption.t]
    assert after and after[0].event_id > interruption.event_id
    stale = [
        f
        for f in frames[frames.index(interruption) :]
        if f.kind == "audio" and f.event_id <= interruption.event_id
    ]
    assert stale == [], "audio of the interrupted turn arrived after the interruption"
    original, heard = correction.data
    assert original == long.data
    assert heard and long.data.startswith(heard) and len(heard) < len(long.data)

    store.flush()
    stored = store.get_conversation(conversation_id)
    store.close()
    assert stored is not None
    cut = next(
        t for t in stored["turns"] if t["event_id"] == long.event_id and t["role"] == "agent"
    )
    assert cut["interrupted"] and cut["corrected_text"] == heard


def test_unanswered_client_tool_times_out_and_the_turn_goes_on() -> None:
    config = sim_config()
    tool = config.agents[0].tools[0]
    tool.response_timeout_secs = 10  # the bundled value: simulated seconds cost nothing
    client = SimClient()  # registers no tools, so never answers

    async def main() -> None:
        conv, backend = await open_conversation(client, config)
        await say_text(conv, backend, "one")
        await client.wait_for("agent_response", predicate=lambda f: "heard" in f.data)
        mark = len(client.frames)
        await say_text(conv, backend, "two")
        await client.wait_for("agent_response", since=mark, predicate=lambda f: "looked" in f.data)
        await conv.close(closecodes.NORMAL, "done")

    run_simulated(main)
    call = client.of("client_tool_call")[0]
    reply = next(f for f in client.of("agent_response") if "looked" in f.data)
    assert "unavailable" in reply.data and "did not answer within 10 s" in reply.data
    assert 10.0 - 1e-6 <= reply.t - call.t < 10.5  # the timeout, not earlier and not much later
    (response,) = client.of("tool_response")
    assert response.event_id == call.event_id == reply.event_id and response.data[2] is True


def test_a_late_tool_result_is_refused_and_an_answer_in_time_is_used() -> None:
    config = sim_config()
    config.agents[0].tools[0].response_timeout_secs = 0.5
    late = SimClient(tools={"get_weather": lambda p: "sunny"}, tool_delay_s=0.6)
    in_time = SimClient(tools={"get_weather": lambda p: "sunny"}, tool_delay_s=0.4)

    async def main(client: SimClient) -> bool:
        conv, backend = await open_conversation(client, config)
        await say_text(conv, backend, "one")
        await client.wait_for("agent_response", predicate=lambda f: "heard" in f.data)
        await say_text(conv, backend, "two")
        await client.wait_for("agent_response", predicate=lambda f: "looked" in f.data)
        await asyncio.sleep(0.5)
        call_id = client.of("client_tool_call")[0].data[1]
        again = conv.on_tool_result(call_id, "twice", False)  # the same id, a second time
        await conv.close(closecodes.NORMAL, "done")
        return again

    assert run_simulated(lambda: main(late)) is False
    assert "did not answer within 0.5 s" in late.of("agent_response")[-1].data
    assert run_simulated(lambda: main(in_time)) is False
    assert in_time.of("agent_response")[-1].data.endswith("The weather in Paris is sunny.")


def test_idle_session_is_closed_with_a_reason() -> None:
    config = sim_config(idle_timeout_s=20.0)
    client = SimClient()  # answers pings: pongs are not activity

    async def main() -> float:
        loop = asyncio.get_running_loop()
        conv, backend = await open_conversation(client, config)
        await asyncio.sleep(12)
        await say_text(conv, backend, "still here")  # activity restarts the idle timer
        touched = loop.time()
        await conv.wait_closed()
        await asyncio.sleep(0.1)
        return touched

    touched = run_simulated(main)
    (close,) = client.of("close")
    (error,) = client.of("error")
    assert close.data[0] == closecodes.OPERATIONAL == 1002
    assert error.data[1] == "transport_receive_timeout"
    assert 20.0 - 1e-6 <= close.t - touched < 20.5


def test_conversation_longer_than_max_duration_ends_normally_with_the_reason() -> None:
    config = sim_config(max_duration_s=30.0)
    client = SimClient()

    async def main() -> None:
        conv, backend = await open_conversation(client, config)
        for _ in range(10):  # an active user: the idle timer never fires
            await asyncio.sleep(5)
            await say_text(conv, backend, "more")
        await conv.wait_closed()

    run_simulated(main)
    (close,) = client.of("close")
    assert close.data == (closecodes.NORMAL, "max_duration_exceeded")
    assert 30.0 - 1e-6 <= close.t < 30.5


def test_text_only_sessions_get_no_audio() -> None:
    config = sim_config()
    client = SimClient()

    async def main() -> None:
        agent = resolved(config, first_message="Hi Ann, welcome back.", text_only=True)
        conv, backend = await open_conversation(client, config, agent)
        await asyncio.sleep(1)
        await say_text(conv, backend, "hello")
        await asyncio.sleep(10)
        await conv.close(closecodes.NORMAL, "done")

    run_simulated(main)
    assert client.of("agent_response")[0].data == "Hi Ann, welcome back."
    assert len(client.of("agent_response")) == 2
    assert client.of("audio") == []


def test_a_spoken_turn_is_answered_after_the_silence_window(speech_dir: Path) -> None:
    # The scripted agent's turn detection (silence_ms: 500) counts the silence in audio: the
    # reply comes after 500 ms of it, never before. (tests/client/test_session.py checks the
    # client's real-time pacing of the same turn over a socket.)
    client = SimClient()
    speech = load_audio(speech_dir / "goforward.wav")
    audio = np.concatenate([speech, silence(1500)])

    async def main() -> float:
        conv, backend = await open_conversation(client, sim_config())
        await asyncio.sleep(8)  # the greeting plays out
        started = asyncio.get_running_loop().time()
        await stream_audio(conv, backend, audio, chunk_ms=20)
        await asyncio.sleep(8)
        await conv.close(closecodes.NORMAL, "done")
        return started

    started = run_simulated(main)
    (heard,) = client.of("user_transcript")
    reply = client.of("agent_response")[1]
    assert heard.data.startswith("(speech,") and "heard you" in reply.data
    first_audio = next(f for f in client.of("audio") if f.event_id == reply.event_id)
    # Where the agent's detector (the bundled options) sees the speech end and the silence
    # window close, in the same audio: the transcript comes when the window closes, the reply
    # after it, and never less than 500 ms after the speech.
    ends = [e for e in EnergyTurnDetector(-40, 500, 60).feed(audio) if e.kind == "speech_end"]
    assert len(ends) == 1
    silence_from, decided_at = ends[0].sample, ends[0].decided
    assert decided_at is not None
    assert decided_at - silence_from >= 500 * 16
    assert abs(heard.t - (started + decided_at / 16_000)) <= 0.02 + 1e-6
    assert first_audio.t - (started + silence_from / 16_000) >= 0.5 - 1e-6


def test_a_held_conversation_is_not_idle_and_resumes_with_new_events_only() -> None:
    # What resume.py does with a conversation whose client vanished, minus the sockets: the
    # cut reply is interrupted as a barge-in would, the old client gets nothing more, a held
    # conversation does not time out as idle, and the resumed client gets the same
    # conversation id in fresh metadata, then only newer turns.
    config = sim_config(idle_timeout_s=20.0)
    first, second = SimClient(), SimClient()

    async def main() -> tuple[int, bool]:
        conv, backend = await open_conversation(first, config)
        await asyncio.sleep(8)
        mark = len(first.frames)
        await say_text(conv, backend, "one")
        reply = await first.wait_for("agent_response", since=mark)
        await first.wait_for("audio", since=mark, predicate=lambda f: f.event_id == reply.event_id)
        await asyncio.sleep(0.5)  # mid-reply
        await conv.detach()
        held_from = len(first.frames)
        await asyncio.sleep(45)  # longer than the idle timeout
        assert not conv.closed and len(first.frames) == held_from
        second.conv = conv
        await conv.reattach(second)
        await say_text(conv, backend, "two")
        await asyncio.sleep(15)
        still_open = not conv.closed
        await conv.close(closecodes.NORMAL, "done")
        return reply.event_id, still_open

    cut_id, still_open = run_simulated(main)
    assert still_open
    assert second.frames[0].kind == "metadata" and second.frames[0].data == "conv_simulated0001"
    turn_frames = [f for f in second.frames if f.kind in TURN_KINDS]
    assert turn_frames and all(f.event_id > cut_id for f in turn_frames)
    assert any(f.kind == "audio" for f in turn_frames)  # the new reply is spoken
    # The first client heard the start of the cut reply, and nothing after the detach.
    assert [f for f in first.of("audio") if f.event_id == cut_id]
    assert not first.of("close")
