"""``Playout``: the client's view of the agent's speech, with explicit times."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sagelab.conversation.playout import NS, Playout


def test_audio_at_or_below_an_interruption_is_stale() -> None:
    p = Playout()
    assert p.audio(3, 0.5, 0)
    p.interruption(3, 100)
    assert not p.audio(3, 0.5, 200)
    assert not p.audio(2, 0.5, 200)
    assert p.audio(4, 0.5, 300)


def test_a_reply_whose_audio_has_not_come_is_not_done() -> None:
    p = Playout()
    p.agent_response(5)
    assert not p.agent_done(10 * NS, quiet_s=0.4, text_only=False)
    assert p.agent_done(10 * NS, quiet_s=0.4, text_only=True)
    assert p.audio(5, 1.0, 10 * NS)
    assert not p.agent_done(int(10.5 * NS), quiet_s=0.4, text_only=False)  # still playing
    assert p.agent_done(11 * NS, quiet_s=0.4, text_only=False)


@given(st.lists(st.tuples(st.integers(0, 2 * NS), st.floats(0.01, 1.0)), max_size=30))
def test_playout_ends_when_the_last_chunk_would_finish_playing(chunks) -> None:
    # An ideal player: each chunk starts when it arrives or when the previous one ends.
    p, end, now = Playout(), 0, 0
    for gap, seconds in chunks:
        now += gap
        p.audio(1, seconds, now)
        end = max(end, now) + round(seconds * NS)
    assert p.playout_end_ns == end


def test_a_lost_connection_drops_what_was_in_flight() -> None:
    p = Playout()
    p.agent_response(7)
    p.audio(7, 3.0, 0)
    p.connection_lost(NS)
    assert p.playout_end_ns == NS and not p.audio(7, 0.1, 2 * NS)
    p.new_conversation()
    assert p.audio(1, 0.1, 3 * NS)
