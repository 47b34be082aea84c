"""``sagelab bench network``: how latency, jitter, loss and a bandwidth cap degrade a call.

Each network (a preset of ``sagelab.client.netem`` or custom ``NetworkConditions``) gets
``sessions`` sessions with the bundled ``scripted`` agent, all networks at once so the run
takes as long as one: each session speaks a real recording, waits for the agent's spoken
reply to finish, and does it again ``turns`` times, through ``Session(network=...)``. The
scripted agent has no models, so what changes from one row to the next is the network alone.

Per network, from the sessions' timelines (``sagelab.metrics``):

* voice-to-voice: end of speech sent → first reply audio received (includes the agent's
  500 ms end-of-turn silence window, which no network changes);
* round trip: the server's ``ping_ms`` (its ping → the client's pong, both ways simulated);
* received-audio gaps: time between consecutive audio chunks of a reply (the server sends a
  100 ms chunk every 100 ms after a 200 ms head start, so anything well above 100 ms is the
  network holding audio back);
* stutter: the playout model with no jitter buffer (``sagelab.metrics.playout``): how often
  and for how long a player would have run dry mid-reply.

The wait for a reply to end allows for retransmission stalls (several RTOs of silence), so a
stall is not mistaken for the end of the reply and talked over.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagelab.audio import load_audio
from sagelab.client import Session, SessionError
from sagelab.client.netem import PRESETS, NetworkConditions
from sagelab.client.timeline import Timeline
from sagelab.metrics import chunk_table, ping_table, playout, summarize_values, turn_table

DEFAULT_NETWORKS = ("ideal", "good_wifi", "4g", "3g", "lossy", "satellite")
TRAILING_SILENCE_MS = 800


@dataclass
class NetworkRun:
    """Every session of one network: their timelines and what went wrong."""

    name: str
    conditions: NetworkConditions
    timelines: list[Timeline] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def networks_from(
    specs: list[str] | None, *, seed: int | None
) -> list[tuple[str, NetworkConditions]]:
    """Names (presets) or ``latency=…,jitter=…`` specs, each seeded unless it has a seed."""
    from sagelab.client.netem import parse_network

    out: list[tuple[str, NetworkConditions]] = []
    for spec in specs or list(DEFAULT_NETWORKS):
        conditions = parse_network(spec)
        if seed is not None and conditions.seed is None:
            conditions = conditions.model_copy(update={"seed": seed})
        out.append((spec if spec in PRESETS else f"custom-{len(out) + 1}", conditions))
    return out


def _reply_quiet_s(conditions: NetworkConditions) -> float:
    """How long no audio must arrive before a reply counts as finished: longer than a segment
    lost twice (3 RTOs) whenever the network loses anything."""
    if not conditions.loss:
        return 0.6
    return max(0.6, 3.5 * conditions.rto_ms / 1000)


async def talk(
    url: str,
    agent_id: str,
    conditions: NetworkConditions,
    speech: Any,
    turns: int,
    on_turn: Callable[[], None] | None = None,
) -> Timeline:
    """One session: ``turns`` spoken turns, each waiting for the whole spoken reply."""
    quiet_s = _reply_quiet_s(conditions)
    async with Session.connect(
        url,
        agent_id,
        first_message="",  # no greeting: every reply measured answers a turn
        tools={"get_weather": lambda params: f"sunny in {params.get('city', 'town')}"},
        record_audio=False,
        network=conditions,
    ) as session:
        for _ in range(turns):
            mark = session.mark()
            await session.send_audio(speech, trailing_silence_ms=TRAILING_SILENCE_MS)
            await session.wait_for("audio", since=mark, timeout=30)
            await session.wait_agent_done(quiet_s=quiet_s, timeout=90)
            if on_turn is not None:
                on_turn()
    return session.timeline


async def run_network_bench(
    url: str,
    networks: list[tuple[str, NetworkConditions]],
    *,
    turns: int,
    sessions: int,
    speech_path: Path,
    agent_id: str = "scripted",
    on_turn: Callable[[], None] | None = None,
) -> list[NetworkRun]:
    """All networks' sessions at once; returns one ``NetworkRun`` per network, in order."""
    if turns < 1 or sessions < 1:
        raise ValueError("the network benchmark needs at least one turn and one session")
    speech = load_audio(speech_path)
    runs = [NetworkRun(name, conditions) for name, conditions in networks]

    async def one(run: NetworkRun, k: int) -> None:
        conditions = run.conditions
        if conditions.seed is not None:  # each session its own, reproducible, draw
            conditions = conditions.model_copy(update={"seed": conditions.seed + k})
        try:
            run.timelines.append(await talk(url, agent_id, conditions, speech, turns, on_turn))
        except (SessionError, TimeoutError, OSError) as exc:
            run.errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(run, k) for run in runs for k in range(sessions)))
    return runs


def summarize(runs: list[NetworkRun]) -> list[dict[str, Any]]:
    """One row per network: p50/p95/p99 of each figure (``count`` says how many samples)."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "network": run.name,
            "conditions": run.conditions.model_dump(),
            "sessions": len(run.timelines),
            "errors": run.errors,
        }
        if run.timelines:
            turns = turn_table(run.timelines)
            chunks = chunk_table(run.timelines)
            pings = ping_table(run.timelines)
            play = playout(chunks, jitter_buffer_ms=0)
            row.update(
                turns=len(turns),
                interrupted_turns=int(turns["interrupted"].sum()),
                voice_to_voice_ms=summarize_values(turns["voice_to_voice_ms"]),
                ttfa_ms=summarize_values(turns["ttfa_ms"]),
                ping_ms=summarize_values(pings.loc[pings["source"] == "ping_ms", "rtt_ms"]),
                chunk_gap_ms=summarize_values(chunks["interarrival_ms"]),
                underruns=play.underrun_count,
                underruns_per_min=_finite(play.underruns_per_min),
                stutter_ratio=_finite(play.stutter_ratio),
                underrun_gap_ms=summarize_values(play.underruns["gap_ms"]),
            )
        rows.append(_no_nan(row))
    return rows


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _no_nan(value: Any) -> Any:
    """NaN (no sample) as None, so ``--json`` prints valid JSON."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def tables(rows: list[dict[str, Any]]) -> list[Any]:
    """Rich tables: the networks, their latency, then the agent audio they delivered."""
    from rich.table import Table

    def cells(s: dict[str, Any] | None) -> list[str]:
        if not s or not s.get("count"):
            return ["–", "–", "–"]
        return [f"{s[p]:.0f}" for p in ("p50", "p95", "p99")]

    nets = Table(title="networks (each way)")
    for name in ("network", "latency ± jitter", "loss", "bandwidth", "RTO"):
        nets.add_column(name, justify="left" if name == "network" else "right")
    latency = Table(title="latency (ms)")
    latency.add_column("network")
    for name in ("v2v p50", "p95", "p99", "RTT p50", "p95", "p99", "turns"):
        latency.add_column(name, justify="right")
    audio = Table(title="agent audio received (ms; player without jitter buffer)")
    audio.add_column("network")
    for name in ("gap p50", "p95", "p99", "max", "underruns/min", "stutter"):
        audio.add_column(name, justify="right")
    for row in rows:
        c = NetworkConditions.model_validate(row["conditions"])
        nets.add_row(
            row["network"],
            f"{c.latency_ms:g} ± {c.jitter_ms:g} ms",
            f"{c.loss:.1%}" if c.loss else "–",
            f"{c.bandwidth_kbps:g} kbit/s" if c.bandwidth_kbps else "–",
            f"{c.rto_ms:g} ms" if c.loss else "–",
        )
        if row.get("turns") is None:
            latency.add_row(row["network"], *["–"] * 6, "0")
            audio.add_row(row["network"], *["–"] * 6)
            continue
        turns = str(row["turns"])
        if row["interrupted_turns"]:
            turns += f" ({row['interrupted_turns']} cut)"
        latency.add_row(
            row["network"], *cells(row["voice_to_voice_ms"]), *cells(row["ping_ms"]), turns
        )
        gap = row["chunk_gap_ms"]
        per_min, stutter = row["underruns_per_min"], row["stutter_ratio"]
        audio.add_row(
            row["network"],
            *cells(gap),
            f"{gap['max']:.0f}" if gap.get("count") else "–",
            f"{per_min:.1f}" if per_min is not None else "–",
            f"{stutter:.1%}" if stutter is not None else "–",
        )
    return [nets, latency, audio]
