"""The kernel side of the widgets, without a browser: the message formats, the clock mapping,
the player's reports into ``sagelab.metrics``, utterance marks on live audio, the panel's
transcript and tool calls, and the ipywebrtc adapter's decoding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from nb_helpers import REPO

from sagelab.audio import encode_webm_opus, load_audio, silence, speech_bounds
from sagelab.audio.io import AudioDecodeError
from sagelab.metrics import player_playout
from sagelab.notebook import (
    AudioPlayer,
    ClockSync,
    ConversationPanel,
    MicInput,
    MicRecorder,
    PlayerOutput,
    SpeechSegmenter,
    WidgetMessageError,
    decode_recording,
)
from sagelab.notebook.conversation_log import ConversationLog
from sagelab.notebook.messages import parse_player_events, pcm_from_buffer, pcm_to_buffer
from sagelab.protocol import convai as wire

Sent = list[tuple[dict[str, Any], list[bytes]]]
GOFORWARD = REPO / "data" / "speech" / "goforward.wav"


def recorder() -> tuple[Sent, Any]:
    sent: Sent = []
    return sent, lambda content, buffers: sent.append((content, buffers))


# -- messages ------------------------------------------------------------------------------


def test_pcm_buffers_round_trip_little_endian() -> None:
    pcm = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    data = pcm_to_buffer(pcm)
    assert data[:4] == b"\x00\x00\x01\x00"
    assert np.array_equal(pcm_from_buffer([memoryview(data)]), pcm)


@pytest.mark.parametrize(
    ("buffers", "message"),
    [([], "one binary buffer"), ([b"\x00\x01\x02"], "even"), ([bytes(40_000)], "over one second")],
)
def test_bad_mic_buffers_say_what_was_expected(buffers: list[bytes], message: str) -> None:
    with pytest.raises(WidgetMessageError, match=message):
        pcm_from_buffer(buffers)


@pytest.mark.parametrize("chunk_ms", [10, 101, 250])
def test_chunk_sizes_outside_20_to_100_ms_are_refused(chunk_ms: int) -> None:
    with pytest.raises(ValueError, match="20 to 100"):
        MicRecorder(chunk_ms=chunk_ms)
    with pytest.raises(ValueError, match="20 to 100"):
        ConversationPanel("scripted", chunk_ms=chunk_ms)


def test_clock_sync_keeps_the_fastest_round_trip() -> None:
    clock = ClockSync()
    assert clock.to_kernel_ns(5.0) is None
    offset_ns = 7_000_000_000  # the browser's clock is 7 s ahead of the kernel's
    # A slow echo (the kernel was busy for 2 s) and then a fast one.
    clock.add(1_000_000_000, (1_000_000_000 + offset_ns + 5_000_000) / 1e6, 3_000_000_000)
    clock.add(4_000_000_000, (4_000_000_000 + offset_ns + 1_000_000) / 1e6, 4_002_000_000)
    assert clock.rtt_ns == 2_000_000
    assert clock.error_bound_ms == pytest.approx(1.0)
    assert clock.to_kernel_ns((9_000_000_000 + offset_ns) / 1e6) == pytest.approx(
        9_000_000_000, abs=1_000_000
    )
    with pytest.raises(WidgetMessageError, match="before it was sent"):
        clock.add(10, 1.0, 5)


def test_player_reports_need_a_kind_and_a_time() -> None:
    clock = ClockSync()
    with pytest.raises(WidgetMessageError, match="start, underrun, end"):
        parse_player_events({"events": [{"kind": "bogus", "b_ms": 1}]}, clock)
    with pytest.raises(WidgetMessageError, match="b_ms"):
        parse_player_events({"events": [{"kind": "start"}]}, clock)
    with pytest.raises(WidgetMessageError, match="list"):
        parse_player_events({"events": "start"}, clock)


# -- the player's kernel side ---------------------------------------------------------------


def browser_echo(output: PlayerOutput, sent: Sent, browser_offset_ms: float) -> None:
    """Answer the pings like the page does (its clock ``browser_offset_ms`` ahead)."""
    import time

    for content, _ in list(sent):
        if content["type"] == "clock":
            now_ms = time.monotonic_ns() / 1e6 + browser_offset_ms
            output.handle({"type": "clock", "k": content["k"], "b_ms": now_ms})


def test_player_output_sends_audio_at_once_and_places_reports_on_the_kernel_clock() -> None:
    sent, send = recorder()
    events = []
    output = PlayerOutput(send, on_event=events.append)
    pcm = load_audio(GOFORWARD)
    output.audio(pcm[:1600], event_id=3)
    assert sent[0][0] == {"type": "audio", "event_id": 3}
    assert np.array_equal(np.frombuffer(sent[0][1][0], "<i2"), pcm[:1600])

    offset_ms = 123_456.0
    report = {"type": "player", "events": [{"kind": "start", "event_id": 3, "b_ms": 0.0}]}
    import time

    start_kernel_ns = time.monotonic_ns()
    report["events"][0]["b_ms"] = start_kernel_ns / 1e6 + offset_ms
    output.handle(report)
    assert events == []  # no clock yet: the report waits rather than land at a wrong time
    output.handle({"type": "ready"})  # pings the page
    browser_echo(output, sent, offset_ms)
    assert len(events) == 1
    assert events[0].type == "playback_start"
    assert events[0].t_ns == pytest.approx(start_kernel_ns, abs=5_000_000)


def test_player_records_feed_the_metrics_playout_table() -> None:
    sent, send = recorder()
    output = PlayerOutput(send)
    output.handle({"type": "ready"})
    browser_echo(output, sent, 0.0)
    base = 1_000_000.0
    output.handle(
        {
            "type": "player",
            "events": [
                {"kind": "start", "event_id": 5, "b_ms": base},
                {"kind": "underrun", "event_id": 5, "b_ms": base + 700, "gap_ms": 180.0},
                {
                    "kind": "end",
                    "event_id": 5,
                    "b_ms": base + 2180,
                    "played_ms": 2000.0,
                    "flushed": False,
                },
            ],
        }
    )
    table = player_playout(output.records())
    row = table.turns.iloc[0]
    assert row["event_id"] == 5 and row["underruns"] == 1
    assert row["gap_ms"] == 180.0 and row["audio_ms"] == 2000.0
    assert table.stutter_ratio == pytest.approx(180 / 2180)
    report = output.report()
    assert report["played_s"] == 2.0 and report["underruns"] == 1


def test_flush_reaches_the_browser() -> None:
    sent, send = recorder()
    output = PlayerOutput(send)
    output.flush(4)
    assert sent[-1][0] == {"type": "flush", "event_id": 4}


def test_audio_player_validates_its_buffer() -> None:
    with pytest.raises(ValueError, match="0 to 2000"):
        AudioPlayer(jitter_ms=-5)


# -- the microphone's kernel side ------------------------------------------------------------


def test_mic_input_keeps_chunks_in_order_and_counts_lost_ones() -> None:
    got: list[np.ndarray] = []
    mic = MicInput(on_chunk=got.append)
    mic.handle({"type": "mic_start", "context_rate": 48000, "device": "fake"}, None)
    speech = load_audio(GOFORWARD)
    chunks = [speech[i : i + 1600] for i in range(0, 16000, 1600)]
    for seq, chunk in enumerate(chunks):
        if seq == 4:
            continue  # lost on the way
        mic.handle({"type": "mic", "seq": seq, "rms": 0.1}, [pcm_to_buffer(chunk)])
    mic.handle({"type": "mic_stop", "chunks": 10}, None)
    assert mic.missing_chunks == 1
    assert mic.context_rate == 48000 and not mic.recording
    assert np.array_equal(mic.audio(), np.concatenate(chunks[:4] + chunks[5:]))
    assert len(got) == 9
    assert not mic.handle({"type": "something else"}, None)


def test_segmenter_marks_the_speech_of_a_recording_streamed_live() -> None:
    pcm = np.concatenate([silence(500), load_audio(GOFORWARD), silence(800)])
    bounds = speech_bounds(pcm)
    assert bounds is not None
    seg = SpeechSegmenter()
    chunk = 1600
    t0 = 1_000_000_000
    found = None
    for k, start in enumerate(range(0, pcm.size, chunk)):
        sent_ns = t0 + k * 100_000_000  # sent as each 100 ms chunk was captured
        found = seg.feed(pcm[start : start + chunk], sent_ns) or found
    assert found is not None
    first_chunk, last_chunk = bounds[0] // chunk, (bounds[1] - 1) // chunk
    assert found == (t0 + first_chunk * 100_000_000, t0 + last_chunk * 100_000_000)
    assert seg.finish() is None  # the utterance was already closed by the silence


def test_segmenter_finishes_an_utterance_when_the_mic_stops() -> None:
    seg = SpeechSegmenter()
    speech = load_audio(GOFORWARD)
    assert seg.feed(speech[8000:9600], 10) is None
    assert seg.speaking
    assert seg.finish() == (10, 10)


# -- what the panel shows -------------------------------------------------------------------


def test_conversation_log_builds_transcript_and_tool_calls() -> None:
    log = ConversationLog()
    assert log.apply(wire.UserTranscript(user_transcript="find Oslo", event_id=2)) == {"transcript"}
    log.apply(wire.AgentResponse(agent_response="Two accounts in Oslo and one more.", event_id=2))
    log.apply(
        wire.AgentResponseCorrection(
            original_agent_response="Two accounts in Oslo and one more.",
            corrected_agent_response="Two accounts",
            event_id=2,
        )
    )
    call = wire.ClientToolCall(
        tool_name="lookup", tool_call_id="c1", parameters={"city": "<b>Oslo</b>"}, event_id=3
    )
    assert log.apply(call) == {"tool_calls"}
    log.tool_result("c1", {"rows": ["x" * 1000]}, False)
    log.apply(
        wire.AgentToolResponse(
            tool_name="search",
            tool_call_id="s1",
            tool_type="webhook",
            is_error=True,
            is_called=True,
            event_id=4,
        )
    )
    transcript, tools = log.snapshot()
    assert [(r["role"], r["text"]) for r in transcript] == [
        ("user", "find Oslo"),
        ("agent", "Two accounts in Oslo and one more."),  # the whole reply stays
    ]
    assert transcript[1]["interrupted"] is True
    assert transcript[1]["heard"] == "Two accounts"  # and what was heard of it
    assert tools[0]["parameters"] == '{"city": "<b>Oslo</b>"}'  # kept as text, shown as text
    assert tools[0]["status"] == "ok" and len(tools[0]["result"]) == 400
    assert tools[1]["status"] == "error" and tools[1]["kind"] == "webhook"


def test_the_players_report_of_a_cut_replaces_the_servers_guess() -> None:
    log = ConversationLog()
    log.apply(wire.AgentResponse(agent_response="one two three four", event_id=5))
    log.apply(wire.Interruption(event_id=5))
    log.apply(
        wire.AgentResponseCorrection(
            original_agent_response="one two three four",
            corrected_agent_response="one",
            event_id=5,
        )
    )
    assert log.heard(5, "one two", 1500.0)
    late = wire.AgentResponseCorrection(
        original_agent_response="one two three four", corrected_agent_response="one", event_id=5
    )
    log.apply(late)  # a server's guess arriving after the player's report does not undo it
    line = log.snapshot()[0][0]
    assert (line["text"], line["heard"], line["played_ms"]) == (
        "one two three four",
        "one two",
        1500.0,
    )
    assert not log.heard(99, "x", 1.0)  # no such turn: nothing marked


def test_server_tool_parameters_and_result_come_from_the_sagelab_event() -> None:
    log = ConversationLog()
    log.apply(
        wire.AgentToolRequest(
            tool_name="search_records", tool_call_id="s1", tool_type="webhook", event_id=4
        )
    )
    assert log.snapshot()[1][0]["parameters"] == ""  # the protocol's own event has none
    event = wire.SagelabToolCall(
        event_id=4,
        tool_call_id="s1",
        tool_name="search_records",
        parameters={"query": "oslo"},
        result={"count": 2, "records": ["Anna Berg"]},
        is_error=False,
    )
    assert log.apply(event.to_message()) == {"tool_calls"}
    call = log.snapshot()[1][0]
    assert call["parameters"] == '{"query": "oslo"}'
    assert "Anna Berg" in call["result"] and call["status"] == "ok"
    broken = wire.sagelab_event(wire.SagelabToolCall.type, {"tool_name": "x"})
    assert log.apply(broken) == set()  # a malformed extension event changes nothing


def test_panel_refuses_an_empty_agent() -> None:
    with pytest.raises(ValueError, match="agent_id is empty"):
        ConversationPanel("")


def test_panel_methods_before_connect_say_to_connect() -> None:
    panel = ConversationPanel("scripted", "http://127.0.0.1:9")
    with pytest.raises(Exception, match="connect"):
        panel.say("hello")


def test_elevenlabs_panel_needs_an_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_AGENT_ID", raising=False)
    with pytest.raises(ValueError, match="ELEVENLABS_AGENT_ID"):
        ConversationPanel.elevenlabs()


# -- ipywebrtc recordings --------------------------------------------------------------------


def test_a_browser_webm_recording_decodes_to_the_same_speech() -> None:
    pcm = load_audio(GOFORWARD)
    blob = b"".join(encode_webm_opus(pcm))
    decoded = decode_recording(blob)
    assert decoded.size == pytest.approx(pcm.size, abs=1600)
    n = min(decoded.size, pcm.size)
    # Opus is lossy and may shift by a few samples: compare energy envelopes per 20 ms.
    env = [np.sqrt(np.mean(x[: n // 320 * 320].astype(float).reshape(-1, 320) ** 2, axis=1))
           for x in (pcm[:n], decoded[:n])]  # fmt: skip
    assert np.corrcoef(env[0], env[1])[0, 1] > 0.95


def test_an_empty_recorder_says_to_record_first() -> None:
    with pytest.raises(AudioDecodeError, match="record something first"):
        decode_recording(b"")
