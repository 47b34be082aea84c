"""What an agent remembers stays bounded whatever a client sends (sagelab.conversation.history)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagelab.conversation import history
from sagelab.server import limits

pytestmark = pytest.mark.fast


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@given(st.lists(st.tuples(st.integers(0, 40), st.text(max_size=10)), max_size=80))
def test_notes_keep_the_newest_text_of_each_id_up_to_the_bound(
    updates: list[tuple[int, str]],
) -> None:
    notes: dict[int, str] = {}
    for context_id, text in updates:
        history.keep_note(notes, context_id, text)
    newest: dict[int, str] = {}
    for context_id, text in updates:  # the model: last write wins, ordered by last write
        newest.pop(context_id, None)
        newest[context_id] = text
    assert list(notes.items()) == list(newest.items())[-history.MAX_NOTES :]


def test_a_long_note_is_cut() -> None:
    notes: dict[str | None, str] = {}
    history.keep_note(notes, None, "x" * (history.MAX_NOTE_CHARS + 5))
    assert len(notes[None]) == history.MAX_NOTE_CHARS


@given(st.lists(st.integers(0, 3 * history.MAX_MESSAGE_CHARS // 2), max_size=100))
def test_history_keeps_the_newest_messages_each_cut(sizes: list[int]) -> None:
    messages = [Message("user", str(i % 10) * n) for i, n in enumerate(sizes)]
    kept = list(messages)
    history.trim_history(kept)
    expected = [
        Message(m.role, m.content[: history.MAX_MESSAGE_CHARS])
        for m in messages[-history.MAX_HISTORY_MESSAGES :]
    ]
    assert kept == expected


def test_the_server_still_exports_the_helpers() -> None:
    assert limits.keep_note is history.keep_note
    assert limits.trim_history is history.trim_history
    assert limits.MAX_NOTES == history.MAX_NOTES
