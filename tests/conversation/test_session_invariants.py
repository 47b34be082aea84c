"""``ServerSession`` invariants, in simulated time, over any order of agent actions.

An agent (as the local pipeline, the scripted agent or the ElevenLabs relay drive it) begins
turns, sends their text, queues audio blocks, finishes them, gets cut by barge-in or replaced
by a newer turn, at any moment; the client answers pings late or never. An independent model
of the client's player (it plays each turn's audio as it arrives, and stalls when it runs dry)
says what the user heard; the session's frames must agree with it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from sagelab.conversation import events as ev
from sagelab.conversation.session import (
    AgentTurn,
    Send,
    ServerSession,
    SessionAction,
    SessionSettings,
    ToolDone,
)

CHUNK_S = 0.1


@dataclass
class Log:
    frames: list[tuple[float, ev.OutEvent]] = field(default_factory=list)
    tool_done: list[ToolDone] = field(default_factory=list)

    def take(self, now: float, actions: list[SessionAction]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.frames.append((now, a.event))
            elif isinstance(a, ToolDone):
                self.tool_done.append(a)


def words_block(first_word: int, n_words: int) -> tuple[str, list[tuple[str, float]], float]:
    """A block of speech: ``n_words`` words of 4 characters, 60 ms per character."""
    text = " ".join(f"w{first_word + i:03d}" for i in range(n_words))
    alignment = [(c, i * 0.06) for i, c in enumerate(text)]
    return text, alignment, len(text) * 0.06


def chunks(seconds: float) -> list[tuple[float, object]]:
    out, left = [], seconds
    while left > 1e-9:
        out.append((min(CHUNK_S, left), b"x"))
        left -= CHUNK_S
    return out


def played_by_client(frames: list[tuple[float, ev.OutEvent]], event_id: int, at: float) -> float:
    """Seconds of turn ``event_id`` a client had played by ``at``: playback starts when the
    first chunk arrives and stalls when the buffer runs dry (zero network delay)."""
    clock, played = None, 0.0
    for t, e in frames:
        if t > at:
            break
        if isinstance(e, ev.AgentAudio) and e.event_id == event_id:
            clock = t if clock is None else max(clock, t)
            clock += CHUNK_S
            played += CHUNK_S
    if clock is None:
        return 0.0
    return max(0.0, played - max(0.0, clock - at))


def heard_words(alignment: list[tuple[str, float]], played: float) -> str:
    text = "".join(c for c, t in alignment if t < played - 1e-9)
    full = "".join(c for c, _ in alignment)
    if len(text) < len(full) and not full[len(text)].isspace():
        text = text.rsplit(" ", 1)[0] if " " in text else ""
    return text.strip()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("begin")),
        st.tuples(st.just("response"), st.integers(0, 3)),
        st.tuples(st.just("audio"), st.integers(0, 3), st.integers(1, 6)),
        st.tuples(st.just("finish"), st.integers(0, 3)),
        st.tuples(st.just("interrupt")),
        st.tuples(st.just("advance"), st.floats(0.0, 1.5)),
        st.tuples(st.just("pong")),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(program=ops, lead_ms=st.sampled_from([0, 100, 200]))
def test_every_reply_is_heard_or_corrected_and_ids_never_go_back(
    program: list[tuple], lead_ms: int
) -> None:
    s = ServerSession(SessionSettings(ping_interval_s=0.5, audio_lead_ms=lead_ms), 0.0)
    log = Log()
    now = 0.0
    turns: list[AgentTurn] = []
    texts: dict[int, tuple[str, list[tuple[str, float]]]] = {}  # event id -> audio so far
    finished: set[int] = set()
    queued_chunks: dict[int, int] = {}
    interrupted_at: dict[int, float] = {}
    words = itertools.count(0, 5)

    def advance(to: float) -> None:
        nonlocal now
        while True:
            deadline = s.next_deadline()
            if deadline is None or deadline > to:
                break
            now = max(now, deadline)
            log.take(now, s.tick(now))
        now = max(now, to)

    def pick(i: int) -> AgentTurn | None:
        return turns[-1 - i] if len(turns) > i else None

    for op in program:
        match op:
            case ("begin",):
                turns.append(s.begin_turn(now))
            case ("response", i) if (turn := pick(i)) is not None:
                spoken = texts.get(turn.event_id, ("", []))[0]
                log.take(now, s.agent_response(turn, spoken or "(thinking)", now))
            case ("audio", i, n) if (turn := pick(i)) is not None and turn.event_id not in finished:
                text, alignment, seconds = words_block(next(words), n)
                before, old_alignment = texts.get(turn.event_id, ("", []))
                offset = turn.queued_s
                texts[turn.event_id] = (
                    f"{before} {text}".strip(),
                    old_alignment
                    + ([(" ", offset)] if old_alignment else [])
                    + [(c, offset + t) for c, t in alignment],
                )
                if not turn.interrupted:
                    queued_chunks[turn.event_id] = queued_chunks.get(turn.event_id, 0) + len(
                        chunks(seconds)
                    )
                log.take(now, s.queue_audio(turn, chunks(seconds), alignment, now))
            case ("finish", i) if (turn := pick(i)) is not None:
                finished.add(turn.event_id)
                log.take(now, s.finish_turn(turn, now))
            case ("interrupt",):
                cut, actions = s.interrupt(now)
                log.take(now, actions)
                if cut is not None:
                    interrupted_at[cut.event_id] = now
            case ("advance", dt):
                advance(now + dt)
            case ("pong",):
                pings = [e for _, e in log.frames if isinstance(e, ev.Ping)]
                if pings:
                    s.pong(pings[-1].event_id, now)
            case _:
                pass
    for turn in turns:  # the agent completes whatever it was still doing
        if turn.event_id not in finished:
            finished.add(turn.event_id)
            log.take(now, s.finish_turn(turn, now))
    advance(now + 120.0)

    frames = log.frames
    # Interruptions the session made by itself (a newer turn over an unfinished one).
    for t, e in frames:
        if isinstance(e, ev.Interruption):
            interrupted_at.setdefault(e.event_id, t)

    # Event ids: each turn's id first appears above every turn id before it (clients drop
    # audio at or below the last interruption's id); pings rise and never share an id.
    first_seen: list[int] = []
    for _, e in frames:
        if not isinstance(e, ev.Ping) and e.event_id not in first_seen:
            first_seen.append(e.event_id)
    assert first_seen == sorted(first_seen)
    ping_ids = [e.event_id for _, e in frames if isinstance(e, ev.Ping)]
    assert ping_ids == sorted(set(ping_ids)) and not set(ping_ids) & set(first_seen)

    for turn in turns:
        eid = turn.event_id
        mine = [(t, e) for t, e in frames if getattr(e, "event_id", None) == eid]
        responses = [e for _, e in mine if isinstance(e, ev.AgentResponse)]
        audio = [(t, e) for t, e in mine if isinstance(e, ev.AgentAudio)]
        cut = [t for t, e in mine if isinstance(e, ev.Interruption)]
        corrections = [e for _, e in mine if isinstance(e, ev.Correction)]
        assert len(cut) <= 1
        if cut:
            # After barge-in no audio of the old turn.
            assert all(t <= cut[0] for t, _ in audio)
            if responses:
                sent_text = " ".join(r.text for r in responses).strip()
                alignment = texts.get(eid, ("", []))[1]
                heard = heard_words(alignment, played_by_client(frames, eid, cut[0]))
                if heard != sent_text:
                    assert [c.corrected for c in corrections] == [heard]
                    assert corrections[0].original == sent_text
                else:
                    assert corrections == []
        elif responses:
            # Not cut: the reply was finished, and all of its audio went out.
            assert eid in finished, f"turn {eid}: agent_response with neither audio nor cut"
            assert len(audio) == queued_chunks.get(eid, 0)


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(st.integers(1, 8), min_size=1, max_size=5),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=5, max_size=5),
    lead_ms=st.sampled_from([0, 200]),
)
def test_audio_is_paced_in_real_time_and_never_early_beyond_the_lead(
    blocks: list[int], gaps: list[float], lead_ms: int
) -> None:
    s = ServerSession(SessionSettings(ping_interval_s=1000, audio_lead_ms=lead_ms), 0.0)
    log = Log()
    turn = s.begin_turn(0.0)
    now = 0.0
    for n, gap in zip(blocks, gaps, strict=False):
        log.take(now, s.queue_audio(turn, chunks(n * 0.3), None, now))
        end = now + gap
        while (d := s.next_deadline()) is not None and d <= end:
            now = max(now, d)
            log.take(now, s.tick(now))
        now = end
    log.take(now, s.finish_turn(turn, now))
    while (d := s.next_deadline()) is not None and d < now + 60:
        now = max(now, d)
        log.take(now, s.tick(now))
    audio_times = [t for t, e in log.frames if isinstance(e, ev.AgentAudio)]
    assert len(audio_times) == sum(len(chunks(n * 0.3)) for n in blocks)
    # The client's buffer never holds more than the lead ahead of its player.
    for k, t in enumerate(audio_times):
        played = played_by_client(log.frames, turn.event_id, t)
        buffered = k * CHUNK_S - played
        assert buffered <= lead_ms / 1000 + 1e-6


def test_a_reply_cut_before_any_audio_is_corrected_to_nothing() -> None:
    # The bug the issue reports: text went out, the user barged in before audio existed.
    s = ServerSession(SessionSettings(), 0.0)
    turn = s.begin_turn(0.0)
    sent = s.agent_response(turn, "Here is a long answer about records.", 0.1)
    cut, actions = s.interrupt(0.2)
    assert cut is not None and cut.delivered == ""
    kinds = [type(a.event).__name__ for a in [*sent, *actions] if isinstance(a, Send)]
    assert kinds == ["AgentResponse", "Interruption", "Correction"]
    correction = next(
        a.event for a in actions if isinstance(a, Send) and isinstance(a.event, ev.Correction)
    )
    assert correction.corrected == "" and correction.original.startswith("Here is")


def test_a_newer_turn_cuts_an_unfinished_one() -> None:
    s = ServerSession(SessionSettings(), 0.0)
    old = s.begin_turn(0.0)
    s.agent_response(old, "First answer.", 0.0)
    new = s.begin_turn(0.5)
    actions = s.agent_response(new, "Second answer.", 0.5)
    sent = [a.event for a in actions if isinstance(a, Send)]
    assert isinstance(sent[0], ev.Interruption) and sent[0].event_id == old.event_id
    assert isinstance(sent[-1], ev.AgentResponse) and sent[-1].event_id == new.event_id


def test_pongs_and_tool_results_count_only_for_their_request() -> None:
    s = ServerSession(SessionSettings(ping_interval_s=1.0, client_tool_timeout_s=2.0), 0.0)
    pings = [a.event for a in s.tick(1.0) if isinstance(a, Send)]
    assert isinstance(pings[0], ev.Ping) and pings[0].ping_ms is None
    assert s.pong(pings[0].event_id + 100, 1.1) is None
    rtt = s.pong(pings[0].event_id, 1.05)
    assert rtt is not None and abs(rtt - 0.05) < 1e-9 and s.last_rtt_ms == 50
    assert s.pong(pings[0].event_id, 1.2) is None  # answered once only
    turn = s.begin_turn(1.0)
    call_id, _ = s.client_tool_call(turn, "lookup", {}, None, 1.0)
    assert s.tool_result("call_unknown", 1, False) is None
    done = s.tool_result(call_id, {"ok": 1}, False)
    assert done is not None and done.value == {"ok": 1}
    assert s.tool_result(call_id, {"ok": 2}, False) is None
    late, _ = s.client_tool_call(turn, "slow", {}, None, 2.0)
    timed_out = [a for a in s.tick(4.5) if isinstance(a, ToolDone)]
    assert [t.call_id for t in timed_out] == [late] and timed_out[0].is_error
    assert s.tool_result(late, 1, False) is None


def test_each_chunk_carries_the_alignment_of_the_characters_it_speaks() -> None:
    s = ServerSession(SessionSettings(ping_interval_s=1000, audio_lead_ms=0), 0.0)
    turn = s.begin_turn(0.0)
    text, alignment, seconds = words_block(0, 6)
    log = Log()
    log.take(0.0, s.queue_audio(turn, chunks(seconds), alignment, 0.0))
    log.take(0.0, s.finish_turn(turn, 0.0))
    now = 0.0
    while (d := s.next_deadline()) is not None and d < 100:
        now = max(now, d)
        log.take(now, s.tick(now))
    audio = [e for _, e in log.frames if isinstance(e, ev.AgentAudio)]
    spoken = "".join("".join(a.alignment["chars"]) for a in audio if a.alignment)
    assert spoken == text
    for k, a in enumerate(audio):
        if a.alignment:
            assert all(0 <= t <= CHUNK_S * 1000 for t in a.alignment["char_start_times_ms"])
            first_char = len(
                "".join("".join(b.alignment["chars"]) for b in audio[:k] if b.alignment)
            )
            assert alignment[first_char][1] >= k * CHUNK_S - 1e-9


def test_the_players_report_of_what_it_played_beats_the_servers_model() -> None:
    s = ServerSession(SessionSettings(ping_interval_s=1000, audio_lead_ms=0), 0.0)
    turn = s.begin_turn(0.0)
    text, alignment, seconds = words_block(0, 8)  # 8 words, 2.4 s
    log = Log()
    log.take(0.0, s.agent_response(turn, text, 0.0))
    log.take(0.0, s.queue_audio(turn, chunks(seconds), alignment, 0.0))
    log.take(0.0, s.finish_turn(turn, 0.0))
    log.take(1.0, s.tick(1.0))
    # The client's Interrupt button stopped playback at 0.5 s, though 1 s was sent.
    cut, actions = s.heard(turn.event_id, 0.5, 1.0)
    assert cut is not None and cut.delivered == heard_words(alignment, 0.5) == "w000 w001"
    sent = [a.event for a in actions if isinstance(a, Send)]
    assert isinstance(sent[0], ev.Interruption)
    assert isinstance(sent[1], ev.Correction) and sent[1].corrected == "w000 w001"
    assert not [
        a for a in s.tick(5.0) if isinstance(a, Send) and isinstance(a.event, ev.AgentAudio)
    ]
    # A later, more precise report corrects again; the same report changes nothing.
    again, more = s.heard(turn.event_id, 0.8, 1.1)
    assert again is not None and again.delivered == "w000 w001 w002"
    assert [type(a.event).__name__ for a in more if isinstance(a, Send)] == ["Correction"]
    assert s.heard(turn.event_id, 0.8, 1.2)[1] == []
    # A report about another turn is ignored.
    assert s.heard(turn.event_id + 7, 0.1, 1.3) == (None, [])
