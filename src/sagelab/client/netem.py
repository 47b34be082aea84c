"""Network conditions for a ``Session``'s own traffic: latency, jitter, loss and a bandwidth cap.

Voice agents are judged on real networks, where a reply that is fast on loopback stutters on
3G. ``Session.connect(..., network=NetworkConditions(...))`` (or ``network="3g"``) puts a
simulated network between the session and its socket, in both directions, so the timeline
records what an app on that network would see and every metric degrades as it would.

The model is netem's, adjusted for what a WebSocket actually runs on, TCP:

* **Latency and jitter** are one-way and per frame: ``latency_ms ± jitter_ms`` (uniform, as
  netem's default distribution; never below zero). A round trip therefore grows by about
  ``2 × latency_ms``.
* **Frames never overtake each other.** TCP delivers bytes in order, so a frame whose own
  delay is short still waits for the one before it: jitter shows up as head-of-line blocking,
  never as reordering.
* **Loss is retransmission, not a missing frame.** TCP resends a lost segment, so ``loss`` (the
  probability that a TCP segment is lost, each try independently) delays the frame holding it
  by a retransmission timeout, computed as Linux does: ``RTO = SRTT + max(4 × RTTVAR,
  rto_min_ms)`` with ``SRTT = 2 × latency_ms`` and ``RTTVAR ≈ jitter_ms``. A segment lost
  ``k`` times in a row waits ``RTO × (2^k − 1)`` (exponential backoff). Fast retransmit (one
  RTT) is not modelled: voice frames are a few segments sent ten times a second, too sparse
  for three duplicate ACKs, so their losses are mostly recovered by timeout, as here.
* **Bandwidth** is a bottleneck link of ``bandwidth_kbps`` (1 kbit = 1000 bits, as ``tc``
  counts) that serialises frames one after another: a frame waits for the link to be free,
  then takes ``wire bytes × 8 / rate``. Wire bytes count the WebSocket header and 52 bytes of
  IPv4/TCP headers per 1448-byte segment.

What the stage does, per direction: outgoing frames enter an ordered, bounded delay queue
and reach ``ws.send`` when the simulated network would have delivered them to the server;
incoming frames enter the same kind of queue as the socket reads them and reach the session
(and get their timeline timestamp) when they would have reached the app. The queues are
bounded: a full one makes the sender wait (outgoing), or stops reading the socket so TCP
pushes back on the server (incoming), instead of growing without limit.

Not simulated: WebSocket-level pings sent by the *server* are answered by the websockets
library below this stage, at once. The ConvAI ``ping``/``pong`` (what ``ping_ms`` measures)
and ``Session.measure_rtt`` both go through the simulated network.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "PRESETS",
    "DelayLine",
    "DelaySchedule",
    "Hop",
    "LinkDown",
    "NetworkConditions",
    "NetworkLink",
    "parse_network",
    "wire_size",
]

MSS_BYTES = 1448  # TCP payload per segment on a 1500-byte MTU with timestamps
SEGMENT_HEADER_BYTES = 52  # IPv4 (20) + TCP (20) + timestamp option (12)
MAX_CONSECUTIVE_LOSSES = 6  # RTO backoff beyond this would be a dead connection anyway
PING_BYTES = 6  # a WebSocket ping frame with no payload, masked
PONG_BYTES = 2


class NetworkConditions(BaseModel):
    """One direction's network; a session gets two of them, one each way, with their own
    random draws and their own bottleneck link (so an upload burst does not delay downloads).

    Example: ``NetworkConditions(latency_ms=50, jitter_ms=10, loss=0.01, bandwidth_kbps=1000)``
    or ``NetworkConditions.preset("3g", seed=1)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    latency_ms: float = Field(0.0, description="One-way delay added to every frame")
    jitter_ms: float = Field(0.0, description="Uniform ± variation of the one-way delay")
    loss: float = Field(0.0, description="Probability that a TCP segment is lost (0.01 = 1 %)")
    bandwidth_kbps: float | None = Field(None, description="Bottleneck rate; None: no cap")
    seed: int | None = Field(None, description="Makes jitter and loss reproducible")
    rto_min_ms: float = Field(200.0, description="Linux's minimum RTO term (TCP_RTO_MIN)")

    @field_validator("latency_ms", "jitter_ms")
    @classmethod
    def _delay(cls, v: float, info: Any) -> float:
        if v < 0 or v > 60_000:
            raise ValueError(
                f"{info.field_name} is one-way milliseconds between 0 and 60000, got {v:g}"
            )
        return float(v)

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: float) -> float:
        if not 0 <= v < 1:
            hint = f" (for {v:g} % write {v / 100:g})" if 1 <= v <= 100 else ""
            raise ValueError(
                f"loss is a probability per TCP segment, from 0 up to (not including) 1, "
                f"got {v:g}{hint}"
            )
        return float(v)

    @field_validator("bandwidth_kbps")
    @classmethod
    def _bandwidth(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError(
                f"bandwidth_kbps must be above 0 kbit/s, got {v:g}; use None for no cap"
            )
        return v

    @field_validator("rto_min_ms")
    @classmethod
    def _rto(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"rto_min_ms must be above 0 (Linux uses 200), got {v:g}")
        return float(v)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> NetworkConditions:
        """A named preset (``PRESETS``), optionally with some fields changed (e.g. ``seed``)."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise ValueError(
                f"unknown network preset {name!r}; choose one of {', '.join(PRESETS)} "
                "or pass NetworkConditions(latency_ms=…, jitter_ms=…, loss=…, bandwidth_kbps=…)"
            ) from None
        return cls.model_validate({**base.model_dump(), **changes}) if changes else base

    @classmethod
    def resolve(cls, network: NetworkConditions | str | None) -> NetworkConditions | None:
        """What ``Session.connect(network=...)`` accepts: conditions, a preset name or None."""
        if network is None or isinstance(network, NetworkConditions):
            return network
        if isinstance(network, str):
            return cls.preset(network)
        raise TypeError(
            f"network must be NetworkConditions, a preset name ({', '.join(PRESETS)}) or None, "
            f"got {type(network).__name__}"
        )

    @property
    def rto_ms(self) -> float:
        """The retransmission timeout a lost segment waits (see the module's docstring)."""
        return 2 * self.latency_ms + max(4 * self.jitter_ms, self.rto_min_ms)


# One-way figures, applied to each direction. Typical rather than worst case: enough to see
# how each kind of network degrades a conversation, not a survey of carriers.
PRESETS: dict[str, NetworkConditions] = {
    "ideal": NetworkConditions(),
    "good_wifi": NetworkConditions(latency_ms=8, jitter_ms=3, bandwidth_kbps=50_000),
    "4g": NetworkConditions(latency_ms=35, jitter_ms=10, loss=0.001, bandwidth_kbps=8_000),
    "3g": NetworkConditions(latency_ms=100, jitter_ms=30, loss=0.005, bandwidth_kbps=1_000),
    "lossy": NetworkConditions(latency_ms=40, jitter_ms=15, loss=0.03),
    "satellite": NetworkConditions(latency_ms=300, jitter_ms=20, loss=0.005, bandwidth_kbps=10_000),
}


def wire_size(payload_bytes: int) -> tuple[int, int]:
    """(bytes on the wire, TCP segments) for one WebSocket frame of ``payload_bytes``."""
    header = 2 if payload_bytes < 126 else 4 if payload_bytes < 65_536 else 10
    data = payload_bytes + header + 4  # + 4: the client's mask; close enough both ways
    segments = max(1, math.ceil(data / MSS_BYTES))
    return data + segments * SEGMENT_HEADER_BYTES, segments


@dataclass(frozen=True)
class Hop:
    """When one frame is delivered, and why it took that long (all in ns).

    ``deliver_ns = sent_ns + queued_ns + transmit_ns + propagation_ns + retransmit_ns
    + blocked_ns``.
    """

    sent_ns: int
    deliver_ns: int
    queued_ns: int  # waiting for the bottleneck link to be free
    transmit_ns: int  # serialisation at the bottleneck rate
    propagation_ns: int  # latency ± jitter
    retransmit_ns: int  # RTO waits for lost segments
    blocked_ns: int  # head-of-line: waiting for the frame before it

    @property
    def delay_ns(self) -> int:
        return self.deliver_ns - self.sent_ns


class DelaySchedule:
    """The pure model of one direction: (time a frame enters, its size) → ``Hop``.

    No clock, no I/O: the same seed and the same inputs always give the same schedule, which
    is how jitter and loss are tested and reproduced. Calls must come in the order frames
    enter the network, with non-decreasing times.
    """

    def __init__(self, conditions: NetworkConditions, *, stream: str = "") -> None:
        self.conditions = conditions
        # A string seed is hashed with SHA-512 by ``random``: stable across runs and
        # platforms, and each direction (``stream``) gets its own sequence.
        self._rng = random.Random(
            None if conditions.seed is None else f"sagelab-netem:{conditions.seed}:{stream}"
        )
        self._link_free_ns = 0
        self._last_deliver_ns = 0
        self._last_sent_ns = -(2**63)

    def next(self, sent_ns: int, payload_bytes: int) -> Hop:
        if sent_ns < self._last_sent_ns:
            raise ValueError(
                f"frames must enter in time order: {sent_ns} ns came after {self._last_sent_ns}"
            )
        if payload_bytes < 0:
            raise ValueError(f"a frame cannot have {payload_bytes} bytes")
        self._last_sent_ns = sent_ns
        c = self.conditions
        wire_bytes, segments = wire_size(payload_bytes)

        start = max(sent_ns, self._link_free_ns)
        transmit = 0
        if c.bandwidth_kbps is not None:
            transmit = round(wire_bytes * 8 * 1e6 / c.bandwidth_kbps)  # bits / (kbit/s) in ns
        self._link_free_ns = start + transmit

        one_way_ms = c.latency_ms
        if c.jitter_ms:
            one_way_ms += self._rng.uniform(-c.jitter_ms, c.jitter_ms)
        propagation = round(max(0.0, one_way_ms) * 1e6)

        retransmit = 0
        if c.loss:
            worst = 0
            for _ in range(segments):
                k = 0
                while k < MAX_CONSECUTIVE_LOSSES and self._rng.random() < c.loss:
                    k += 1
                worst = max(worst, k)
            retransmit = round(c.rto_ms * 1e6 * (2**worst - 1))

        arrive = start + transmit + propagation + retransmit
        deliver = max(arrive, self._last_deliver_ns)
        self._last_deliver_ns = deliver
        return Hop(
            sent_ns=sent_ns,
            deliver_ns=deliver,
            queued_ns=start - sent_ns,
            transmit_ns=transmit,
            propagation_ns=propagation,
            retransmit_ns=retransmit,
            blocked_ns=deliver - arrive,
        )


Action = Callable[[int], Awaitable[None]]


@dataclass
class _Item:
    hop: Hop
    size: int
    action: Action
    done: asyncio.Future[None] | None


class LinkDown(ConnectionError):
    """The simulated link stopped (the session is closing); nothing more goes through it."""


class DelayLine:
    """One direction as an asyncio stage: frames go in now, their actions run when due.

    ``put`` stamps the frame's entry time, asks the ``DelaySchedule`` when it is delivered
    and queues it; one pump task runs the actions in order, each at (never before) its
    delivery time, with the actual time passed in. The queue holds at most ``max_frames``
    frames and ``max_bytes`` bytes (one frame is always let in, however large); ``put`` waits
    for room. If an action raises, the line stops: pending frames are dropped, their waiters
    get the error, and every later ``put`` raises it.
    """

    def __init__(
        self,
        schedule: DelaySchedule,
        *,
        max_frames: int = 1024,
        max_bytes: int = 2 * 2**20,
        name: str = "netem",
    ) -> None:
        if max_frames < 1 or max_bytes < 1:
            raise ValueError("a delay line needs room for at least one frame and one byte")
        self.schedule = schedule
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._items: deque[_Item] = deque()
        self._bytes = 0
        self._busy = False
        self._room = asyncio.Event()
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._error: BaseException | None = None
        self._pump = asyncio.create_task(self._run(), name=f"sagelab-{name}")

    @property
    def queued_frames(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def _full(self) -> bool:
        return bool(self._items) and (
            len(self._items) >= self.max_frames or self._bytes >= self.max_bytes
        )

    async def put(self, size: int, action: Action, *, track: bool = False) -> asyncio.Future[None]:
        """Queue a frame of ``size`` bytes; ``action(t_ns)`` runs when it is delivered.

        Returns a future that completes after the action has run (``track=True``), or an
        already-completed one (for the hot path, where nobody waits per frame).
        """
        while self._full() and self._error is None:
            self._room.clear()
            await self._room.wait()
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not track:
            done.set_result(None)
        hop = self.schedule.next(time.monotonic_ns(), size)
        self._items.append(_Item(hop, size, action, done if track else None))
        self._bytes += size
        self._idle.clear()
        self._work.set()
        return done

    async def _run(self) -> None:
        try:
            while True:
                while not self._items:
                    self._work.clear()
                    self._idle.set()
                    await self._work.wait()
                item = self._items[0]
                while (now := time.monotonic_ns()) < item.hop.deliver_ns:
                    await asyncio.sleep((item.hop.deliver_ns - now) / 1e9)
                self._items.popleft()
                self._bytes -= item.size
                self._room.set()
                await item.action(now)
                if item.done is not None and not item.done.done():
                    item.done.set_result(None)
        except asyncio.CancelledError:
            if self._error is None:
                self._fail(LinkDown("the simulated network link was stopped"))
            raise
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        pending = list(self._items)
        self._items.clear()
        self._bytes = 0
        for item in pending:
            if item.done is not None and not item.done.done():
                item.done.set_exception(exc)
                item.done.exception()  # retrieved here, so an unawaited one logs nothing
        self._room.set()
        self._idle.set()

    @property
    def error(self) -> BaseException | None:
        return self._error

    async def drain(self) -> None:
        """Wait until every queued frame has been delivered (or the line has stopped)."""
        await self._idle.wait()

    def stop(self) -> None:
        """Drop what is queued and refuse more from now on (not only once the pump notices)."""
        if self._error is None:
            self._fail(LinkDown("the simulated network link was stopped"))
        self._pump.cancel()

    async def aclose(self) -> None:
        self.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump


class _Socket(Protocol):
    async def send(self, message: str | bytes) -> None: ...

    async def ping(self) -> Awaitable[float]: ...


Deliver = Callable[[str | bytes, int], Awaitable[None]]


class NetworkLink:
    """Both directions of one WebSocket behind simulated ``NetworkConditions``.

    ``send`` replaces ``ws.send``; frames read from the socket go to ``receive`` and come out
    of ``deliver(frame, t_ns)`` when the app would see them, ``t_ns`` being that moment.
    """

    def __init__(
        self,
        ws: _Socket,
        conditions: NetworkConditions,
        deliver: Deliver,
        *,
        max_frames: int = 1024,
        max_bytes: int = 2 * 2**20,
    ) -> None:
        self.ws = ws
        self.conditions = conditions
        self._deliver = deliver
        self.up = DelayLine(
            DelaySchedule(conditions, stream="up"),
            max_frames=max_frames,
            max_bytes=max_bytes,
            name="netem-up",
        )
        self.down = DelayLine(
            DelaySchedule(conditions, stream="down"),
            max_frames=max_frames,
            max_bytes=max_bytes,
            name="netem-down",
        )

    async def send(self, frame: str | bytes) -> None:
        """Queue a frame for the server; waits only when the uplink queue is full."""

        async def transmit(_t_ns: int) -> None:
            await self.ws.send(frame)

        await self.up.put(_size(frame), transmit)

    async def receive(self, frame: str | bytes) -> None:
        """A frame the socket just read; waits when the downlink queue is full."""

        async def arrive(t_ns: int) -> None:
            await self._deliver(frame, t_ns)

        await self.down.put(_size(frame), arrive)

    async def ping(self) -> None:
        """A WebSocket ping out through the uplink, its pong back through the downlink.

        Returns when the pong would reach the app; time it from the call.
        """
        pong: asyncio.Future[Awaitable[float]] = asyncio.get_running_loop().create_future()

        async def fire(_t_ns: int) -> None:
            pong.set_result(await self.ws.ping())

        await (await self.up.put(PING_BYTES, fire, track=True))
        await pong.result()
        await (await self.down.put(PONG_BYTES, _nothing, track=True))

    async def flush(self, timeout: float) -> None:
        """Let queued outgoing frames reach the server (e.g. before closing), up to ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.up.drain(), timeout)

    async def close_received(self, timeout: float) -> None:
        """The socket closed: deliver what is still on the simulated wire, the close last."""
        with contextlib.suppress(Exception):
            done = await asyncio.wait_for(self.down.put(PONG_BYTES, _nothing, track=True), timeout)
            await asyncio.wait_for(done, timeout)

    def stop(self) -> None:
        """Stop both directions; later sends raise ``LinkDown``."""
        self.up.stop()
        self.down.stop()

    async def aclose(self) -> None:
        await self.up.aclose()
        await self.down.aclose()


async def _nothing(_t_ns: int) -> None:
    return None


def _size(frame: str | bytes) -> int:
    return len(frame) if isinstance(frame, bytes | bytearray) else len(frame.encode())


def parse_network(value: str) -> NetworkConditions:
    """A CLI spelling: a preset name, or ``latency=50,jitter=10,loss=0.01,bandwidth=1000``."""
    if "=" not in value:
        return NetworkConditions.preset(value)
    keys = {
        "latency": "latency_ms",
        "jitter": "jitter_ms",
        "loss": "loss",
        "bandwidth": "bandwidth_kbps",
        "seed": "seed",
        "rto_min": "rto_min_ms",
    }
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        key, _, raw = part.partition("=")
        name = keys.get(key.strip(), key.strip())
        if name not in NetworkConditions.model_fields:
            raise ValueError(f"unknown network setting {key!r} in {value!r}; use {', '.join(keys)}")
        fields[name] = raw.strip()
    try:
        return NetworkConditions.model_validate(fields)
    except ValidationError as exc:
        raise ValueError(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"])
    return f"{where}: {err['msg']}".replace("Value error, ", "")
