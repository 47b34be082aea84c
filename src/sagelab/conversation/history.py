"""Bounds on what a conversation remembers for its agent: ``contextual_update`` notes and the
history a brain sees.

Both grow with what a client sends, so each is cut where it is stored. The bounds are far above
what a real conversation holds (a spoken turn is a few hundred characters); they only stop a
client from making a session hold without limit. They live here, not in the server, because
an agent applies them whichever adapter runs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping, MutableSequence
from typing import Any

#: Distinct ``contextual_update`` notes a session keeps (the oldest goes first), and their size.
MAX_NOTES = 16
MAX_NOTE_CHARS = 4096
#: Conversation history a session keeps for its brain: messages and characters per message.
MAX_HISTORY_MESSAGES = 64
MAX_MESSAGE_CHARS = 8192


def keep_note(notes: MutableMapping[Any, str], context_id: Any, text: str) -> None:
    """Store a ``contextual_update`` note: the same id replaces its note (as the protocol
    says), a note is cut to ``MAX_NOTE_CHARS`` and only the newest ``MAX_NOTES`` are kept."""
    notes.pop(context_id, None)  # re-inserted last: it is now the newest
    notes[context_id] = text[:MAX_NOTE_CHARS]
    while len(notes) > MAX_NOTES:
        del notes[next(iter(notes))]


def trim_history(history: MutableSequence[Any]) -> None:
    """Keep the conversation history a brain sees bounded: the newest
    ``MAX_HISTORY_MESSAGES`` messages, each cut to ``MAX_MESSAGE_CHARS`` characters.

    Messages are dataclasses with a ``content`` field (``ChatMessage``); a cut one is replaced.
    """
    if len(history) > MAX_HISTORY_MESSAGES:
        del history[: len(history) - MAX_HISTORY_MESSAGES]
    for i, message in enumerate(history):
        content = getattr(message, "content", None)
        if isinstance(content, str) and len(content) > MAX_MESSAGE_CHARS:
            history[i] = dataclasses.replace(message, content=content[:MAX_MESSAGE_CHARS])
