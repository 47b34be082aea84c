"""Conversations that outlive their connection: resume tokens and the grace window.

A phone on a train loses its TCP connection far more often than its user means to hang up.
The relay protocol's reference asks the server to "restore what it can of the in-memory
session (no event replay)" when the client reconnects; ConvAI has no resume at all, so sagelab
adds one that the official SDKs never trigger and never notice. The rules:

- **Opt-in.** A client asks to be resumable when it connects (``?sagelab_resume=1`` on ConvAI,
  ``?resume=1`` on the relay) and gets a token in the metadata itself, so that a connection
  dropping right after it still leaves one (ConvAI: ``sagelab_resume_token`` among the
  metadata event's fields, which SDKs ignore; relay: ``ready``'s ``resumeToken``). Clients
  that cannot resume (the official SDKs, the web app) never hold a slot for nothing: their
  conversation ends the moment their socket dies, as it always did.
- **Held, not ended.** When a resumable connection ends without a close frame (TCP reset, the
  network gone, no pong to a keepalive ping), the conversation stays as it is (agent state and
  history, event-id counter, store row) for ``resume_grace_s``. Its current turn is stopped as a
  barge-in would stop it, and anything it emits meanwhile is dropped: nothing is replayed. A
  clean close (1000, relay ``end``) or a close by the server ends it at once.
- **Tokens** are 32 random bytes, kept here only as SHA-256 digests, and single-use: every
  connection of a conversation gets a fresh one, and spent ones are remembered for a while so
  that a second use is refused as exactly that. A reconnect that presents a token within the
  window, for the same agent (and the same API key when it presents one, and on the relay the
  same ``conversationDetailId``), gets the same conversation id back. Anything else is refused
  with close 4002 and a message that says to start a new conversation. The token is the
  credential: a signed URL is single-use, so a resume needs no new one.
- **Capacity.** A held conversation keeps its reservation (the global slot and its API key's),
  so a resume never fails for capacity, and a server full of vanished clients refuses new ones
  for at most the grace window. ``/healthz`` counts them in ``active_sessions`` and reports
  ``held_sessions`` separately.
- **Takeover.** A token presented while the server still thinks the old connection alive (a
  half-open one that keepalive has not caught yet) moves the conversation to the new
  connection and aborts the old one.
- **Endings.** When the window passes, the conversation ends as the disconnect would have ended
  it (close code 1006 recorded, its reason plus "not resumed within N s"); its slot and its
  agent's resources are freed. Shutdown ends held conversations with 1001 like live ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection

from sagelab.server.capacity import Reservation
from sagelab.server.conversation import Conversation
from sagelab.server.transport import Transport, describe_disconnect

if TYPE_CHECKING:
    from sagelab.server.app import SagelabServer

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
# Spent tokens are remembered (as digests) so their reuse gets its own message; bounded, and
# forgotten after this long, when "unknown or expired" is just as true.
_SPENT_MAX = 4096
_SPENT_MIN_TTL_S = 600.0


class ResumeRefused(Exception):
    """A resume token that cannot be honoured; the message says why and what to do instead."""


@dataclass(eq=False)
class LiveSession:
    """A conversation and what it holds on the server, across the connections that carry it."""

    conv: Conversation
    reservation: Reservation
    protocol: str
    key_id: str | None
    resumable: bool
    detail_id: str | None = None
    connection: ServerConnection | None = None  # None while held
    token_digest: bytes | None = None
    held_since: float | None = None  # epoch seconds when the client vanished
    disconnect: tuple[int, str] | None = None
    watcher: asyncio.Task[None] | None = None
    released: bool = False


class SessionKeeper:
    """Owns every live conversation's slot from its first connection to its end."""

    def __init__(self, server: SagelabServer) -> None:
        self._server = server
        self._tokens: dict[bytes, LiveSession] = {}
        self._spent: OrderedDict[bytes, float] = OrderedDict()
        self._held: set[LiveSession] = set()

    @property
    def grace_s(self) -> float:
        return self._server.config.resume_grace_s

    @property
    def held(self) -> int:
        """Conversations waiting for their client to come back."""
        return len(self._held)

    # -- a conversation's first connection -------------------------------------------------

    def open(
        self,
        conv: Conversation,
        reservation: Reservation,
        *,
        protocol: str,
        key_id: str | None,
        resumable: bool,
        connection: ServerConnection,
        detail_id: str | None = None,
    ) -> LiveSession:
        """Register a new conversation; from here on ``reservation`` is released by this keeper."""
        live = LiveSession(
            conv=conv,
            reservation=reservation,
            protocol=protocol,
            key_id=key_id,
            resumable=resumable and self.grace_s > 0,
            detail_id=detail_id,
            connection=connection,
        )
        self._server.registry.add(conv)
        self._server.metrics.active_sessions.labels(protocol).inc()
        return live

    def issue_token(self, live: LiveSession, transport: Transport) -> None:
        """A fresh token for the connection about to carry ``live``; the old one stops working."""
        if not live.resumable:
            return
        if live.token_digest is not None:
            self._tokens.pop(live.token_digest, None)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        live.token_digest = _digest(token)
        self._tokens[live.token_digest] = live
        transport.resume_token = token
        transport.resume_grace_s = self.grace_s

    # -- resuming --------------------------------------------------------------------------

    def claim(
        self,
        token: str,
        connection: ServerConnection,
        *,
        protocol: str,
        agent_id: str,
        key_id: str | None,
        detail_id: str | None = None,
    ) -> LiveSession:
        """The conversation ``token`` resumes, now carried by ``connection``; spends the token.

        Raises ``ResumeRefused`` for a token that is unknown, expired, spent, or presented for
        another protocol, agent, API key or ``conversationDetailId`` (those leave it unspent).
        """
        digest = _digest(token)
        self._forget_spent()
        live = self._tokens.get(digest)
        if live is None or live.conv.closed:
            self._refused(protocol)
            if digest in self._spent:
                raise ResumeRefused(
                    "this resume token was already used: each token resumes once, and every "
                    "connection gets a new one with its metadata; present the newest, or start "
                    "a new conversation"
                )
            raise ResumeRefused(
                "unknown or expired resume token: a conversation stays resumable for "
                f"{self.grace_s:g} s after its client vanishes (and not across a server "
                "restart); start a new conversation"
            )
        mismatch = self._mismatch(live, protocol, agent_id, key_id, detail_id)
        if mismatch is not None:
            self._refused(protocol)
            raise ResumeRefused(mismatch)
        del self._tokens[digest]
        live.token_digest = None
        self._spent[digest] = time.monotonic()
        if len(self._spent) > _SPENT_MAX:
            self._spent.popitem(last=False)
        if live.watcher is not None:
            live.watcher.cancel()  # the grace window is over: it came back
            live.watcher = None
        self._unhold(live)
        old, live.connection = live.connection, connection
        if old is not None and old.transport is not None:
            # Takeover: the server had not noticed the old connection die. Its route sees that
            # the conversation moved on and leaves it alone.
            old.transport.abort()
            live.held_since, live.disconnect = time.time(), (1006, "taken over by a resume")
        return live

    @staticmethod
    def _mismatch(
        live: LiveSession,
        protocol: str,
        agent_id: str,
        key_id: str | None,
        detail_id: str | None,
    ) -> str | None:
        if live.protocol != protocol:
            return f"the resume token belongs to a {live.protocol} conversation; resume it there"
        if live.conv.agent.id != agent_id:
            return (
                f"the resume token belongs to a conversation with agent {live.conv.agent.id!r}, "
                f"not {agent_id!r}"
            )
        if key_id is not None and key_id != live.key_id:
            return (
                "the resume token was issued under another API key; present the key the "
                "conversation started with, or none (the token is the credential)"
            )
        if key_id is None and live.key_id is not None and live.connection is not None:
            # Its connection still looks alive: moving a keyed conversation away from it
            # takes the key, not a token alone (a held one resumes on its token).
            return (
                "the conversation is still connected; taking it over needs the API key it "
                "started with (send it with the token), or wait until it is held"
            )
        if detail_id is not None and detail_id != live.detail_id:
            return "the resume token belongs to another conversationDetailId"
        return None

    async def resume(self, live: LiveSession, transport: Transport) -> None:
        """Carry a claimed conversation on ``transport``: metadata, a new token, then new events."""
        if not live.conv.detached:
            await live.conv.detach()  # a takeover: the old connection's turn ends here too
        if live.conv.closed:
            return  # stopping the turn failed and ended the conversation; nothing to resume
        self.issue_token(live, transport)
        await live.conv.reattach(transport)
        store = self._server.store
        if store is not None:
            code, reason = live.disconnect or (None, "")
            store.record_resume(
                live.conv.conversation_id,
                disconnected_at=live.held_since or time.time(),
                close_code=code,
                reason=reason,
            )
        live.held_since = live.disconnect = None
        self._server.metrics.resumes.labels(live.protocol, "resumed").inc()
        log.info("conversation %s resumed", live.conv.conversation_id)

    # -- a connection ends -----------------------------------------------------------------

    async def connection_ended(self, live: LiveSession, connection: ServerConnection) -> None:
        """The route is done with ``connection``: hold the conversation for a resume, or end it."""
        if live.connection is not connection:
            return  # a resume took the conversation over; it is the new connection's now
        live.connection = None
        conv = live.conv
        if conv.closed:
            self._release(live)
            return
        code, reason = describe_disconnect(connection)
        abnormal = connection.protocol.close_rcvd is None  # no close frame from the client
        if not (
            live.resumable
            and abnormal
            and self._server.registry.accepting
            and self._server.registry.may_hold(live.key_id, self._held_anonymous())
        ):
            await conv.close(code, reason)
            self._release(live)
            return
        live.held_since, live.disconnect = time.time(), (code, reason)
        self._held.add(live)
        self._server.metrics.held_sessions.labels(live.protocol).inc()
        await conv.detach()
        if conv.closed:  # the backend failed to stop its turn, which ended the session
            self._release(live)
            return
        live.watcher = asyncio.create_task(
            self._expire(live, code, reason), name=f"resume-grace-{conv.conversation_id}"
        )
        log.info(
            "conversation %s held for %g s for a resume (%s)",
            conv.conversation_id,
            self.grace_s,
            reason,
        )

    async def _expire(self, live: LiveSession, code: int, reason: str) -> None:
        """End a held conversation when its window passes; release it if it ended otherwise."""
        try:
            await asyncio.wait_for(live.conv.wait_closed(), self.grace_s)
        except TimeoutError:
            self._server.metrics.resumes.labels(live.protocol, "expired").inc()
            await live.conv.close(code, f"{reason}; not resumed within {self.grace_s:g} s")
        self._release(live)

    def _release(self, live: LiveSession) -> None:
        """Give back everything the conversation held, exactly once."""
        if live.released:
            return
        live.released = True
        self._unhold(live)
        if live.token_digest is not None:
            self._tokens.pop(live.token_digest, None)
            live.token_digest = None
        live.reservation.release()
        self._server.registry.remove(live.conv)
        self._server.metrics.active_sessions.labels(live.protocol).dec()

    def _held_anonymous(self) -> int:
        return sum(1 for held in self._held if held.key_id is None)

    def _unhold(self, live: LiveSession) -> None:
        if live in self._held:
            self._held.discard(live)
            self._server.metrics.held_sessions.labels(live.protocol).dec()

    def _refused(self, protocol: str) -> None:
        self._server.metrics.resumes.labels(protocol, "refused").inc()

    def _forget_spent(self) -> None:
        horizon = time.monotonic() - max(_SPENT_MIN_TTL_S, 10 * self.grace_s)
        while self._spent and next(iter(self._spent.values())) < horizon:
            self._spent.popitem(last=False)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
