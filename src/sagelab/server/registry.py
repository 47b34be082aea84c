"""Which sessions are open, and how many more the server accepts.

Capacity is reserved before the initiation message is even read, so a burst of connections
cannot overshoot ``max_sessions`` while they are still handshaking.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Closable(Protocol):
    conversation_id: str

    async def close(self, code: int, reason: str) -> None: ...


class SessionRegistry:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._reserved = 0
        self._sessions: dict[str, Closable] = {}
        self.accepting = True

    @property
    def active(self) -> int:
        return len(self._sessions)

    @property
    def reserved(self) -> int:
        return self._reserved

    def reserve(self) -> bool:
        if not self.accepting or self._reserved >= self.max_sessions:
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        self._reserved = max(0, self._reserved - 1)

    def add(self, session: Closable) -> None:
        self._sessions[session.conversation_id] = session

    def remove(self, session: Closable) -> None:
        self._sessions.pop(session.conversation_id, None)

    def get(self, conversation_id: str) -> Closable | None:
        return self._sessions.get(conversation_id)

    def ids(self) -> list[str]:
        return list(self._sessions)

    async def close_all(self, code: int, reason: str) -> None:
        sessions = list(self._sessions.values())
        await asyncio.gather(*(s.close(code, reason) for s in sessions), return_exceptions=True)
