"""Which sessions are open, and how many more the server accepts, globally and per API key.

Capacity is reserved before the initiation message is even read, so a burst of connections
cannot overshoot ``max_sessions`` (or a key's limit) while they are still handshaking. A
reservation is a ``Reservation`` object released exactly once, so a route cannot give back
capacity it never took or give it back twice.

Reserving first means a connection that never says anything holds a slot. For a client with
a key that is the key's budget to spend; anonymous ones are limited: at most
``max_starting_anonymous`` connections may be waiting to start their session when an
anonymous one asks for a slot (and the route gives them a short initiation timeout), so a script
opening connections cannot take every slot. ``/healthz`` reports these counts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sagelab.server.auth import ApiKey


class Closable(Protocol):
    conversation_id: str

    async def close(self, code: int, reason: str) -> None: ...


class CapacityError(Exception):
    """No room: ``error_type`` and a message that says which limit and what to do."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type, self.message = error_type, message


@dataclass(eq=False)
class Reservation:
    registry: SessionRegistry
    key_id: str | None = None
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.registry._give_back(self.key_id)


class SessionRegistry:
    def __init__(
        self,
        max_sessions: int,
        max_sessions_per_key: int | None = None,
        max_starting_anonymous: int | None = None,
    ) -> None:
        self.max_sessions = max_sessions
        self.max_sessions_per_key = max_sessions_per_key
        self.max_starting_anonymous = (
            max_starting_anonymous
            if max_starting_anonymous is not None
            else max(4, max_sessions // 2)
        )
        self._reserved = 0
        self._per_key: dict[str, int] = {}
        self._sessions: dict[str, Closable] = {}
        self.accepting = True

    @property
    def active(self) -> int:
        return len(self._sessions)

    @property
    def reserved(self) -> int:
        return self._reserved

    def reserved_for(self, key_id: str) -> int:
        return self._per_key.get(key_id, 0)

    @property
    def starting(self) -> int:
        """Slots reserved by connections whose session has not started yet."""
        return max(0, self._reserved - len(self._sessions))

    def has_room(self, key: ApiKey | None) -> bool:
        """Whether ``reserve_for(key)`` would succeed now (it takes nothing)."""
        try:
            self._check(
                key.key_id if key else None,
                key.name if key else "",
                key.max_sessions if key else None,
            )
        except CapacityError:
            return False
        return True

    def may_hold(self, key_id: str | None, held_anonymous: int) -> bool:
        """Whether a resumable conversation whose client vanished may keep its slot for the
        grace window: always with a key, and for anonymous ones while fewer than
        ``max_starting_anonymous`` are held (a script resetting resumable connections
        would otherwise keep every slot for the whole window)."""
        return key_id is not None or held_anonymous < self.max_starting_anonymous

    def reserve_for(self, key: ApiKey | None) -> Reservation:
        """``reserve`` for the key a request presented, or for no key."""
        if key is None:
            return self.reserve()
        return self.reserve(key.key_id, key.name, key.max_sessions)

    def reserve(
        self, key_id: str | None = None, key_name: str = "", key_limit: int | None = None
    ) -> Reservation:
        """Take one session slot (and one of the key's); raises ``CapacityError`` when full.

        ``key_limit`` is the key's own limit; None falls back to ``max_sessions_per_key``.
        """
        self._check(key_id, key_name, key_limit)
        if key_id is not None:
            self._per_key[key_id] = self._per_key.get(key_id, 0) + 1
        self._reserved += 1
        return Reservation(self, key_id)

    def _check(self, key_id: str | None, key_name: str, key_limit: int | None) -> None:
        if not self.accepting:
            raise CapacityError("server_shutting_down", "the server is shutting down; reconnect")
        if self._reserved >= self.max_sessions:
            raise CapacityError(
                "capacity_exceeded",
                f"server is at its limit of {self.max_sessions} concurrent sessions; "
                "retry later or raise max_sessions",
            )
        if key_id is not None:
            limit = key_limit if key_limit is not None else self.max_sessions_per_key
            if limit is not None and self._per_key.get(key_id, 0) >= limit:
                raise CapacityError(
                    "key_capacity_exceeded",
                    f"API key {key_name or key_id} is at its limit of {limit} concurrent "
                    "sessions; end one of its sessions or raise the key's max_sessions",
                )
        elif self.starting >= self.max_starting_anonymous:
            # Counted over every starting connection (the registry does not know which
            # started sessions had a key); keyed ones start within milliseconds anyway.
            raise CapacityError(
                "capacity_exceeded",
                f"{self.max_starting_anonymous} anonymous connections are already waiting to "
                "start a session; send conversation_initiation_client_data right after "
                "connecting, or connect with an API key",
            )

    def _give_back(self, key_id: str | None) -> None:
        self._reserved = max(0, self._reserved - 1)
        if key_id is not None:
            left = self._per_key.get(key_id, 0) - 1
            if left > 0:
                self._per_key[key_id] = left
            else:
                self._per_key.pop(key_id, None)

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
