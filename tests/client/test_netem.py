"""Network conditions: the pure delay model, the asyncio delay stage, and sessions behind it
against the real bundled server."""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sagelab.audio import load_audio
from sagelab.client import Session, SyncSession
from sagelab.client.netem import (
    PRESETS,
    DelayLine,
    DelaySchedule,
    Hop,
    LinkDown,
    NetworkConditions,
    parse_network,
    wire_size,
)
from sagelab.server.app import SagelabServer

MS = 1_000_000  # ns
GREETING = Path(__file__).resolve().parents[2] / "src/sagelab/assets/audio/greeting.wav"


def schedule_of(conditions: NetworkConditions, frames: list[tuple[int, int]]) -> list[Any]:
    s = DelaySchedule(conditions, stream="up")
    return [s.next(t, size) for t, size in frames]


# -- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"latency_ms": -5}, "latency_ms is one-way milliseconds between 0 and 60000, got -5"),
        ({"jitter_ms": -1}, "jitter_ms is one-way milliseconds"),
        ({"loss": 5}, "for 5 % write 0.05"),
        ({"loss": 1}, "from 0 up to (not including) 1"),
        ({"loss": -0.1}, "loss is a probability per TCP segment"),
        ({"bandwidth_kbps": 0}, "use None for no cap"),
        ({"rto_min_ms": 0}, "Linux uses 200"),
        ({"latency_ms": math.nan}, "finite number"),
        ({"delay_ms": 50}, "Extra inputs are not permitted"),
    ],
)
def test_bad_parameters_are_rejected_with_a_message_that_says_what_to_write(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        NetworkConditions(**fields)
    assert message in str(info.value)


def test_presets_by_name_with_changes_and_unknown_names_list_the_choices() -> None:
    assert NetworkConditions.preset("3g") == PRESETS["3g"]
    seeded = NetworkConditions.preset("3g", seed=7)
    assert seeded.seed == 7 and seeded.latency_ms == PRESETS["3g"].latency_ms
    assert {"good_wifi", "4g", "3g", "lossy"} <= set(PRESETS)
    with pytest.raises(ValueError, match=r"unknown network preset '5g'; choose one of .*3g"):
        NetworkConditions.preset("5g")
    with pytest.raises(ValueError, match=r"for 5 % write 0\.05"):
        NetworkConditions.preset("3g", loss=5)
    with pytest.raises(TypeError, match="network must be NetworkConditions, a preset name"):
        NetworkConditions.resolve(150)  # type: ignore[arg-type]


def test_session_connect_rejects_bad_conditions_before_touching_the_network() -> None:
    # Nothing listens on port 9: a bad preset must fail first, with its own message.
    with pytest.raises(ValueError, match="unknown network preset 'dialup'"):
        Session.connect("http://127.0.0.1:9", "scripted", network="dialup")
    with pytest.raises(ValueError, match="unknown network preset"):
        Session.connect_relay("http://127.0.0.1:9", "x", network="dialup")


def test_cli_spelling_of_conditions() -> None:
    c = parse_network("latency=50, jitter=10, loss=0.01, bandwidth=1000, seed=3")
    assert c == NetworkConditions(
        latency_ms=50, jitter_ms=10, loss=0.01, bandwidth_kbps=1000, seed=3
    )
    assert parse_network("4g") == PRESETS["4g"]
    with pytest.raises(ValueError, match=r"unknown network setting 'delay'.*latency"):
        parse_network("delay=50")
    with pytest.raises(ValueError, match=r"loss: .*for 2 % write 0\.02"):
        parse_network("loss=2")


# -- the pure schedule ----------------------------------------------------------------------


def test_the_same_seed_gives_the_same_jitter_and_loss_and_directions_differ() -> None:
    c = NetworkConditions(latency_ms=80, jitter_ms=40, loss=0.05, seed=11)
    frames = [(k * 20 * MS, 4300) for k in range(300)]
    first = schedule_of(c, frames)
    again = schedule_of(c, frames)
    assert first == again
    other_seed = schedule_of(c.model_copy(update={"seed": 12}), frames)
    assert [h.deliver_ns for h in other_seed] != [h.deliver_ns for h in first]
    down = DelaySchedule(c, stream="down")
    assert [down.next(t, n).deliver_ns for t, n in frames] != [h.deliver_ns for h in first]
    # Jitter really varies the delay: more than a handful of distinct values.
    assert len({h.propagation_ns for h in first}) > 100


def test_jitter_becomes_head_of_line_blocking_never_reordering() -> None:
    c = NetworkConditions(latency_ms=100, jitter_ms=60, seed=1)
    hops = schedule_of(c, [(k * 5 * MS, 200) for k in range(400)])
    delivered = [h.deliver_ns for h in hops]
    assert delivered == sorted(delivered)
    for h in hops:
        assert 40 * MS <= h.propagation_ns <= 160 * MS
        assert h.retransmit_ns == 0 and h.transmit_ns == 0 and h.queued_ns == 0
    blocked = [h for h in hops if h.blocked_ns > 0]
    # Frames 5 ms apart with ±60 ms of jitter: most have to wait for an earlier, slower one.
    assert len(blocked) > len(hops) // 2
    for prev, h in itertools.pairwise(hops):
        if h.blocked_ns:
            assert h.deliver_ns == prev.deliver_ns  # released right behind the blocker


def test_without_conditions_a_frame_is_delivered_when_sent() -> None:
    hops = schedule_of(NetworkConditions(), [(k * MS, 100_000) for k in range(10)])
    assert [h.deliver_ns for h in hops] == [k * MS for k in range(10)]


def test_a_bandwidth_cap_serialises_a_burst_at_the_link_rate() -> None:
    rate_kbps = 1000
    c = NetworkConditions(latency_ms=20, bandwidth_kbps=rate_kbps)
    sizes = [4300] * 50  # a burst of 50 audio-sized frames, all at t = 0
    hops = schedule_of(c, [(0, n) for n in sizes])
    wire_bits = sum(wire_size(n)[0] * 8 for n in sizes)
    assert hops[-1].deliver_ns == pytest.approx(20 * MS + wire_bits / rate_kbps * 1e6, abs=50)
    assert wire_bits / 8 > sum(sizes)  # headers cost bandwidth too
    # Each frame waited for the ones before it on the link, none for head-of-line.
    assert all(b.queued_ns > a.queued_ns for a, b in itertools.pairwise(hops))
    assert all(h.blocked_ns == 0 for h in hops)
    # An idle link does not bank credit: a frame after a pause waits only its own time.
    late = DelaySchedule(c)
    late.next(0, 4300)
    solo = late.next(10_000 * MS, 4300)
    assert solo.queued_ns == 0
    assert solo.transmit_ns == round(wire_size(4300)[0] * 8 * 1e6 / rate_kbps)


def test_loss_is_retransmission_delay_in_multiples_of_the_rto_never_a_dropped_frame() -> None:
    c = NetworkConditions(latency_ms=100, jitter_ms=30, loss=0.2, seed=5)
    assert c.rto_ms == 200 + max(4 * 30, 200)  # SRTT + max(4·RTTVAR, rto_min), as Linux
    assert NetworkConditions(latency_ms=100, jitter_ms=80).rto_ms == 200 + 320
    frames = [(k * 100 * MS, 100) for k in range(2000)]  # one segment each
    hops = schedule_of(c, frames)
    assert len(hops) == len(frames)  # every frame arrives
    rto_ns = c.rto_ms * MS
    hit = [h for h in hops if h.retransmit_ns]
    for h in hit:
        k = math.log2(h.retransmit_ns / rto_ns + 1)  # lost k times: RTO·(2^k − 1)
        assert k == pytest.approx(round(k)) and round(k) >= 1
    # One segment per frame lost with p = 0.2 (seeded, so this is a fixed count).
    assert 0.15 < len(hit) / len(hops) < 0.25
    # Bigger frames span more segments, so more of them meet a loss: 1 − (1 − p)^n.
    big = schedule_of(c, [(k * 100 * MS, 5 * 1448) for k in range(2000)])
    assert sum(1 for h in big if h.retransmit_ns) / len(big) > 0.5


@settings(max_examples=60, deadline=None)
@given(
    latency=st.floats(0, 500),
    jitter=st.floats(0, 300),
    loss=st.floats(0, 0.5),
    bandwidth=st.none() | st.floats(8, 100_000),
    gaps=st.lists(st.integers(0, 50 * MS), min_size=1, max_size=60),
    sizes=st.lists(st.integers(0, 300_000), min_size=60, max_size=60),
    seed=st.integers(0, 2**32),
)
def test_every_schedule_is_ordered_and_adds_up(
    latency: float,
    jitter: float,
    loss: float,
    bandwidth: float | None,
    gaps: list[int],
    sizes: list[int],
    seed: int,
) -> None:
    c = NetworkConditions(
        latency_ms=latency, jitter_ms=jitter, loss=loss, bandwidth_kbps=bandwidth, seed=seed
    )
    times = list(np.cumsum(gaps))
    hops = schedule_of(c, [(int(t), n) for t, n in zip(times, sizes, strict=False)])
    previous = 0
    for h in hops:
        assert h.deliver_ns >= previous
        previous = h.deliver_ns
        parts = h.queued_ns + h.transmit_ns + h.propagation_ns + h.retransmit_ns + h.blocked_ns
        assert h.deliver_ns == h.sent_ns + parts
        assert h.propagation_ns >= round(max(0.0, latency - jitter) * MS) - 1
        assert min(h.queued_ns, h.transmit_ns, h.retransmit_ns, h.blocked_ns) >= 0


def test_frames_must_enter_in_time_order() -> None:
    s = DelaySchedule(NetworkConditions(latency_ms=10))
    s.next(5 * MS, 10)
    with pytest.raises(ValueError, match="frames must enter in time order"):
        s.next(4 * MS, 10)


# -- the asyncio stage ----------------------------------------------------------------------


class RecordingSchedule(DelaySchedule):
    """The real schedule, keeping what it decided so a test can hold the line to it."""

    def __init__(self, conditions: NetworkConditions) -> None:
        super().__init__(conditions)
        self.hops: list[Hop] = []

    def next(self, sent_ns: int, payload_bytes: int) -> Hop:
        hop = super().next(sent_ns, payload_bytes)
        self.hops.append(hop)
        return hop


async def test_a_delay_line_runs_actions_in_order_and_never_before_they_are_due() -> None:
    schedule = RecordingSchedule(NetworkConditions(latency_ms=30, jitter_ms=25, seed=3))
    line = DelayLine(schedule)
    ran: list[tuple[int, int]] = []

    def action(i: int) -> Any:
        async def run(t_ns: int) -> None:
            ran.append((i, t_ns))

        return run

    for i in range(40):
        await line.put(100, action(i))
        if i % 4 == 0:
            await asyncio.sleep(0.003)
    await (await line.put(100, action(40), track=True))
    await line.aclose()
    assert [i for i, _ in ran] == list(range(41))
    for (_, t_ns), hop in zip(ran, schedule.hops, strict=True):
        assert t_ns >= hop.deliver_ns
    assert any(h.blocked_ns for h in schedule.hops)  # the jitter did try to reorder


async def test_a_full_delay_line_makes_the_sender_wait_for_room() -> None:
    line = DelayLine(
        DelaySchedule(NetworkConditions(latency_ms=150)), max_frames=3, max_bytes=10**6
    )
    events: list[str] = []

    def action(i: int) -> Any:
        async def run(_t: int) -> None:
            events.append(f"delivered {i}")

        return run

    for i in range(3):
        await line.put(10, action(i))
        events.append(f"queued {i}")
    assert line.queued_frames == 3
    await line.put(10, action(3))  # no room until frame 0 leaves
    events.append("queued 3")
    assert events.index("queued 3") > events.index("delivered 0")
    await line.drain()
    assert events[-1] == "delivered 3"
    assert line.queued_frames == 0 and line.queued_bytes == 0
    await line.aclose()


async def test_a_byte_bound_limits_the_queue_but_always_admits_one_frame() -> None:
    line = DelayLine(DelaySchedule(NetworkConditions(latency_ms=100)), max_bytes=1000)
    order: list[str] = []

    async def noop(_t: int) -> None:
        order.append("delivered")

    await line.put(5000, noop)  # larger than the bound, admitted into an empty queue
    order.append("first in")
    await line.put(10, noop)
    order.append("second in")
    assert order == ["first in", "delivered", "second in"]
    await line.aclose()


async def test_a_failing_action_stops_the_line_and_every_later_put_raises_it() -> None:
    line = DelayLine(DelaySchedule(NetworkConditions(latency_ms=5)))

    async def boom(_t: int) -> None:
        raise ConnectionResetError("socket gone")

    async def fine(_t: int) -> None:
        return None

    await line.put(10, boom)
    pending = await line.put(10, fine, track=True)
    with pytest.raises(ConnectionResetError, match="socket gone"):
        await pending
    with pytest.raises(ConnectionResetError, match="socket gone"):
        await line.put(10, fine)
    await line.aclose()


async def test_a_stopped_line_refuses_frames_at_once() -> None:
    line = DelayLine(DelaySchedule(NetworkConditions(latency_ms=1000)))

    async def fine(_t: int) -> None:
        return None

    waiting = await line.put(10, fine, track=True)
    line.stop()
    with pytest.raises(LinkDown):
        await waiting
    with pytest.raises(LinkDown):
        await line.put(10, fine)
    await line.aclose()


# -- sessions behind the simulated network, against the real server ---------------------------


def quiet(server: SagelabServer, **kwargs: Any) -> Any:
    return Session.connect(server.http_url, "scripted", first_message="", **kwargs)


async def test_added_latency_shows_in_both_round_trips(server: SagelabServer) -> None:
    async with quiet(server, network=NetworkConditions(latency_ms=150)) as s:
        rtts = [await s.measure_rtt() for _ in range(3)]
        # The server pings every 0.2 s; each ping carries the previous ping → pong time.
        mark = s.mark()
        await s.wait_for("ping", since=mark, predicate=lambda e: e.data.get("ping_ms"))
        await asyncio.sleep(1.0)
        pings = [e.data["ping_ms"] for e in s.timeline.of_type("ping") if e.data.get("ping_ms")]
    # 2 × 150 ms added to a loopback round trip of well under a millisecond.
    for rtt in rtts:
        assert 0.280 <= rtt <= 0.600
    assert pings
    for ping_ms in pings:
        assert 280 <= ping_ms <= 600
    [net] = s.timeline.of_type("network")
    assert net.data["latency_ms"] == 150


async def test_added_latency_shows_in_voice_to_voice(
    server: SagelabServer, speech_dir: Path
) -> None:
    async with quiet(server, network=NetworkConditions(latency_ms=150)) as s:
        mark = s.mark()
        sent = await s.send_audio(speech_dir / "goforward.wav", trailing_silence_ms=800)
        reply = await s.wait_for("agent_response", since=mark, timeout=15)
        first = await s.wait_for(
            "audio", since=mark, predicate=lambda e: e.event_id == reply.event_id
        )
        await s.wait_agent_done()
    voice_to_voice_ms = (first.t_ns - sent.speech_end_ns) / 1e6
    # The scripted agent's 500 ms silence window (a little less on the wall clock, see
    # test_session), plus 150 ms for the speech to reach the server and 150 ms for the reply
    # to come back: the timeline stamps frames when the app would see them.
    assert voice_to_voice_ms >= 450 + 280
    assert voice_to_voice_ms <= 500 + 300 + 1500  # a loaded machine, not a broken model


async def test_heavy_jitter_and_loss_keep_every_frame_in_order(server: SagelabServer) -> None:
    network = NetworkConditions(latency_ms=60, jitter_ms=50, loss=0.05, seed=42)
    async with Session.connect(server.http_url, "scripted", network=network) as s:
        greeting = load_audio(GREETING, rate=16_000)
        # Not wait_agent_done: a retransmission stall of a second looks like the end of a
        # reply to its quiet-time rule (which is the point of simulating loss).
        deadline = asyncio.get_running_loop().time() + 30
        while s.timeline.agent_audio.size < greeting.size:
            assert asyncio.get_running_loop().time() < deadline, "the greeting never arrived"
            await asyncio.sleep(0.05)
        await s.wait_agent_done()  # anything extra (a duplicate) would arrive by now
    received = s.timeline.agent_audio
    # Not one sample lost, duplicated or out of place, though frames were delayed unevenly.
    assert received.size == greeting.size
    assert np.array_equal(received, greeting)
    recv = [e.t_ns for e in s.timeline.events if e.direction == "recv"]
    assert recv == sorted(recv)


async def test_a_bandwidth_cap_delays_a_burst_by_its_size_over_the_rate(
    server: SagelabServer,
) -> None:
    rate_kbps = 2000
    text = "x" * 25_000
    async with quiet(
        server, text_only=True, network=NetworkConditions(bandwidth_kbps=rate_kbps)
    ) as s:
        await s.measure_rtt()  # the link is idle again after set-up
        for _ in range(4):
            await s.send_contextual_update(text)
        rtt = await s.measure_rtt()  # the ping queues behind the burst on the uplink
        assert not s.timeline.of_type("error")
    burst_bits = 4 * wire_size(len(text) + 40)[0] * 8
    expected_s = burst_bits / (rate_kbps * 1000)  # 0.4 s
    assert expected_s * 0.95 <= rtt <= expected_s + 0.5


async def test_close_waits_for_frames_still_on_the_simulated_wire(server: SagelabServer) -> None:
    def received() -> float:
        labels = {"direction": "in", "type": "user_message"}
        return server.metrics.registry.get_sample_value("sagelab_messages_total", labels) or 0

    async with quiet(server, text_only=True, network=NetworkConditions(latency_ms=300)) as s:
        await s.send_text("said just before hanging up")
        assert received() == 0  # still on the simulated wire
    # The close frame went after the message, as it would on TCP: the server got both.
    for _ in range(100):
        if received():
            break
        await asyncio.sleep(0.05)
    assert received() == 1
    assert s.close_code == 1000


async def test_relay_sessions_cross_the_network_too(server: SagelabServer) -> None:
    async with Session.connect_relay(
        server.http_url, "net-1", network=NetworkConditions(latency_ms=100)
    ) as s:
        rtt = await s.measure_rtt()
    assert 0.180 <= rtt <= 0.500


def test_sync_session_takes_the_same_conditions(bg_server: SagelabServer) -> None:
    with SyncSession.connect(
        bg_server.http_url, "scripted", first_message="", text_only=True, network="satellite"
    ) as s:
        rtt = s.measure_rtt()
        mark = s.mark()
        s.send_text("hello")
        s.wait_for("agent_response", since=mark, timeout=10)
    # Satellite is 300 ± 20 ms each way (and a rare lost segment adds an RTO).
    assert 0.560 <= rtt <= 3.0
