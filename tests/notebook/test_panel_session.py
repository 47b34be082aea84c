"""``ConversationPanel`` driving a real session against the bundled server (``scripted`` agent),
with no browser: recordings, typed turns, client tools, the microphone's chunks as the view
sends them, a local interrupt, and an ipywebrtc recording."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from ipywebrtc import AudioRecorder
from nb_helpers import REPO

from sagelab.audio import encode_webm_opus, load_audio, silence, speech_bounds
from sagelab.notebook import ConversationPanel, attach_recorder
from sagelab.notebook.messages import pcm_to_buffer
from sagelab.server.app import SagelabServer

GOFORWARD = REPO / "data" / "speech" / "goforward.wav"
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def panel(bg_server: SagelabServer) -> Iterator[ConversationPanel]:
    calls: list[dict[str, Any]] = []

    def get_weather(params: dict[str, Any]) -> str:
        calls.append(params)
        return f"sunny in {params['city']}"

    panel = ConversationPanel("scripted", bg_server.http_url, tools={"get_weather": get_weather})
    panel.connect()
    panel.tool_log = calls  # type: ignore[attr-defined]
    yield panel
    panel.end()


def test_a_recording_is_a_user_turn_with_its_latency(panel: ConversationPanel) -> None:
    assert panel.phase == "connected"
    assert panel.wait_for_reply().startswith("Hello!")  # the greeting
    panel.send_recording(GOFORWARD)
    reply = panel.wait_for_reply()
    assert reply == "I heard you. This reply is a recording, streamed in real time."
    roles = [(line["role"], line["text"]) for line in panel.transcript]
    assert roles[-2][0] == "user" and roles[-2][1].startswith("(speech")
    assert roles[-1] == ("agent", reply)
    panel.end()
    assert panel.phase == "ended" and panel.status == "ended"
    last = panel.turns[-1]
    assert last["voice_to_voice_ms"] is not None and 0 < last["voice_to_voice_ms"] < 5000
    # The audio went to the (absent) browser player, chunk by chunk.
    assert panel.player.sent_s > 1.0


def test_client_tools_run_in_the_kernel_and_show_their_result(panel: ConversationPanel) -> None:
    panel.wait_for_reply()
    panel.say("hello")
    panel.wait_for_reply()
    panel.say("what is the weather?")  # the scripted agent's second reply calls a tool
    reply = panel.wait_for_reply()
    assert "sunny in Paris" in reply
    assert panel.tool_log == [{"city": "Paris"}]  # type: ignore[attr-defined]
    call = panel.tool_calls[-1]
    assert (call["name"], call["status"], call["result"]) == ("get_weather", "ok", "sunny in Paris")
    assert panel.transcript[-2] == {
        "role": "user",
        "text": "what is the weather?",
        "event_id": None,
    }


def test_microphone_chunks_stream_into_the_session(panel: ConversationPanel) -> None:
    """Chunks arrive as the view sends them (mic_start, 100 ms mic messages, mic_stop)."""
    pcm = np.concatenate([load_audio(GOFORWARD), silence(900)])
    panel.wait_for_reply()
    panel.mic.handle({"type": "mic_start", "context_rate": 16000, "device": "test"}, None)
    t0 = time.monotonic()
    for seq, start in enumerate(range(0, pcm.size, 1600)):
        time.sleep(max(0.0, t0 + seq * 0.1 - time.monotonic()))  # a microphone's pace
        chunk = pcm[start : start + 1600]
        panel.mic.handle({"type": "mic", "seq": seq, "rms": 0.1}, [pcm_to_buffer(chunk)])
    panel.mic.handle({"type": "mic_stop", "chunks": seq + 1}, None)
    reply = panel.wait_for_reply()
    assert reply.startswith("I heard you")
    sent = np.concatenate([e for e in [panel.timeline.user_audio]])
    assert np.array_equal(sent[: pcm.size], pcm)  # every sample, in order
    assert not sent[pcm.size :].any()  # then only the silence sent after the stop
    marks = panel.timeline.of_type("user_speech")
    assert marks and marks[-1].data["source"] == "microphone"
    table = panel.turn_table()
    assert table["voice_to_voice_ms"].iloc[-1] > 0


def test_a_stopped_recording_is_followed_by_silence_so_the_server_can_end_the_turn(
    panel: ConversationPanel,
) -> None:
    """A sample-driven turn-taker (audio-sage waits up to 800 ms of silence it *hears*) never
    ends a turn whose recording stopped right after the words; the panel keeps sending
    silence for a while after a stop, as a live microphone would."""
    pcm = np.concatenate([load_audio(GOFORWARD), silence(100)])
    panel.wait_for_reply()
    panel.mic.handle({"type": "mic_start", "context_rate": 16000, "device": "test"}, None)
    t0 = time.monotonic()
    for seq, start in enumerate(range(0, pcm.size, 1600)):
        time.sleep(max(0.0, t0 + seq * 0.1 - time.monotonic()))
        chunk = pcm[start : start + 1600]
        panel.mic.handle({"type": "mic", "seq": seq, "rms": 0.1}, [pcm_to_buffer(chunk)])
    panel.mic.handle({"type": "mic_stop", "chunks": seq + 1}, None)
    time.sleep(2.0)
    sent = np.concatenate([panel.timeline.user_audio])
    assert np.array_equal(sent[: pcm.size], pcm)
    tail = sent[pcm.size :]
    assert not tail.any() and tail.size >= 1.4 * 16_000, tail.size  # ~1.5 s of silence


def test_interrupt_stops_the_agent_audio_going_to_the_player(panel: ConversationPanel) -> None:
    session = panel.session  # the greeting is playing
    deadline = time.monotonic() + 10
    while not any(e.data.get("duration_s") for e in session.timeline.of_type("audio")[-3:]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    panel.interrupt()
    time.sleep(0.2)
    sent_then = panel.player.sent_chunks
    time.sleep(1.0)  # the server is still streaming the greeting in real time
    turn = max(e.event_id or 0 for e in session.timeline.of_type("audio"))
    arriving = [e for e in session.timeline.of_type("audio") if e.event_id == turn]
    assert len(arriving) > 5
    assert panel.player.sent_chunks == sent_then  # none of it reaches the speaker
    assert session.timeline.of_type("user_interrupt")


def test_ipywebrtc_recordings_become_user_turns(panel: ConversationPanel) -> None:
    panel.wait_for_reply()
    recorder = AudioRecorder()
    detach = attach_recorder(recorder, panel)
    blob = b"".join(encode_webm_opus(load_audio(GOFORWARD)))
    recorder.audio.value = blob  # what the browser sets when the user presses stop
    reply = panel.wait_for_reply()
    assert reply.startswith("I heard you")
    assert panel.transcript[-2]["text"].startswith("(speech")
    detach()


def test_a_cut_reply_is_marked_with_what_was_heard_and_the_server_is_told(
    panel: ConversationPanel,
) -> None:
    panel.wait_for_reply()
    panel.send_recording(GOFORWARD)
    reply = panel.wait_for_reply()
    turn = next(line["event_id"] for line in reversed(panel.transcript) if line["role"] == "agent")
    received_ms = 1000 * sum(
        e.data["duration_s"] for e in panel.timeline.of_type("audio") if e.event_id == turn
    )
    # What the browser's player reports when Interrupt stopped it 40 % into the reply.
    played_ms = round(received_ms * 0.4)
    report = {"kind": "end", "event_id": turn, "b_ms": 1.0, "played_ms": played_ms}
    report |= {"received_ms": received_ms, "flushed": True, "rms_max": 0.2}
    panel._on_view_message(None, {"type": "player", "events": [report]}, [])
    panel.player.release_pending()  # no browser answered the clock pings
    deadline = time.monotonic() + 10
    while not panel.timeline.of_type("internal_sagelab_heard"):
        assert time.monotonic() < deadline, "the server was never told what was heard"
        time.sleep(0.05)
    sent = panel.timeline.of_type("internal_sagelab_heard")[0]
    words = reply.split()
    expected = " ".join(words[: int(len(words) * 0.4)])
    assert sent.direction == "send" and sent.event_id == turn
    assert sent.data["played_ms"] == played_ms and sent.data["text"] == expected
    line = next(x for x in panel.transcript if x["role"] == "agent" and x["event_id"] == turn)
    assert line["interrupted"] and line["heard"] == expected and line["text"] == reply
    panel._refresh_turns()
    row = next(r for r in panel.turns if r["event_id"] == turn)
    assert row["interrupted"] and row["heard_text"] == expected and row["turn"] == 1
    assert panel.turns[0]["kind"] == "greeting" and panel.turns[0]["turn"] == 0


def test_save_writes_the_session_where_asked_and_replay_sends_a_wav(
    panel: ConversationPanel, tmp_path: Any
) -> None:
    panel.wait_for_reply()
    panel.send_recording(GOFORWARD)
    panel.wait_for_reply()
    sent: list[tuple[dict[str, Any], list[Any]]] = []
    panel.send = lambda content, buffers=None: sent.append((content, buffers or []))  # type: ignore[method-assign]
    turn = panel.turns[-1]["event_id"]
    panel._on_view_message(None, {"type": "action", "action": "replay", "event_id": turn,
                                  "side": "user"}, [])  # fmt: skip
    panel._on_view_message(None, {"type": "action", "action": "replay", "event_id": turn,
                                  "side": "agent"}, [])  # fmt: skip
    clips = [(c, b) for c, b in sent if c.get("type") == "clip"]
    assert [c["side"] for c, _ in clips] == ["user", "agent"], panel.error
    for content, buffers in clips:
        assert bytes(buffers[0][:4]) == b"RIFF" and content["seconds"] > 0.5
    user_s = clips[0][0]["seconds"]
    start, end = speech_bounds(load_audio(GOFORWARD)) or (0, 0)
    speech_s = (end - start) / 16_000  # the clip: the speech, with a little before and after
    assert speech_s - 0.1 <= user_s <= speech_s + 0.6
    folder = panel.save(tmp_path / "mine")
    assert sorted(p.name for p in folder.iterdir()) == [
        "agent.wav", "timeline.jsonl", "tool_calls.csv", "turn_breakdown.csv", "turns.csv",
        "user.wav",
    ]  # fmt: skip
    assert panel.saved_to == str(folder)
