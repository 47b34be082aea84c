"""``make demo``: the bundled server and a spoken conversation with the offline ``audio-sage``.

The demo user's turns (``data/demo/conversation.yaml``) are streamed as real-time audio; the
agent hears them with Silero VAD and Whisper, answers with the rules brain and its tools over
a real SQLite database, and speaks with Piper. Each turn is shown as it happens: what the agent
heard, the tools it ran, what it said, and where the time went. One turn is interrupted by the
user talking over the agent. The timeline, both audio tracks and the server's conversation
store go to ``runs/demo-<time>/``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sagelab.bench.pipeline import ScenarioTurn, after_turn, from_turn, load_conversation
from sagelab.client import Session
from sagelab.config import load_config
from sagelab.extras import require
from sagelab.metrics import playout, tool_call_table, turn_table
from sagelab.server.app import SagelabServer

STAGE_ORDER = ("endpointing", "stt", "tool", "brain", "tts_first_audio")


@dataclass
class TurnReport:
    heard: str
    tools: list[str]
    reply: str
    voice_to_voice_ms: float | None
    stages: dict[str, float] = field(default_factory=dict)
    note: str = ""


def _report(session: Session, event_id: int) -> TurnReport:
    """One agent turn as ``sagelab.metrics.turn_table`` measures it (the benches' numbers)."""
    table = turn_table(session.timeline)
    row = table[table["event_id"] == event_id].iloc[0]
    stages = {
        name: float(row[f"stage_{name}_ms"])
        for name in STAGE_ORDER
        if f"stage_{name}_ms" in row and pd.notna(row[f"stage_{name}_ms"])
    }
    v2v = row["voice_to_voice_ms"]
    return TurnReport(
        str(row["user_text"] or ""),
        list(row["tools"] or []),
        str(row["agent_text"] or ""),
        float(v2v) if pd.notna(v2v) else None,
        stages,
    )


async def _turn(session: Session, turn: ScenarioTurn) -> tuple[TurnReport, Any]:
    mark = session.mark()
    await session.send_audio(turn.audio, trailing_silence_ms=1000)
    reply = await session.wait_for("agent_response", since=mark, timeout=30)
    await session.wait_for(
        "audio", since=mark, timeout=30, predicate=lambda e: (e.event_id or 0) >= reply.event_id
    )
    return _report(session, reply.event_id), reply


async def run_demo(console: Console, *, config: Path | None, out_dir: Path, data: Path) -> Path:
    run_dir = out_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    agent_id, turns = load_conversation(data / "demo" / "conversation.yaml")
    cfg = load_config(config, port=0, store_path=str(run_dir / "conversations.sqlite3"))
    cfg.agents = [a for a in cfg.agents if a.id == agent_id]
    require("metrics", needed_for="the demo draws its timeline")
    if any(a.backend == "local" for a in cfg.agents):
        require("local", needed_for=f"agent {agent_id!r} runs offline models")
    for spec in cfg.agents:  # the demo's database is the run's own, fresh from the seed
        tools = spec.options.get("server_tools")
        if isinstance(tools, dict) and "database" in tools:
            spec.options = {
                **spec.options,
                "server_tools": {**tools, "database": str(run_dir / "records.sqlite3")},
            }
    reports: list[TurnReport] = []
    console.print(f"[bold]sagelab demo[/]: loading the offline models for [bold]{agent_id}[/]…")
    async with SagelabServer(cfg) as server:
        console.print(f"server at {server.http_url}")
        async with Session.connect(server.http_url, agent_id, stages=True) as session:
            greeting = await session.wait_for("agent_response", timeout=30)
            console.print(f"[cyan]agent[/]: {escape(greeting.data['agent_response'])}")
            await session.wait_agent_done(timeout=60)
            skip = False
            for i, turn in enumerate(turns):
                if skip:
                    skip = False
                    continue
                console.print(f"[green]user says[/]: {escape(turn.text)}")
                report, reply = await _turn(session, turn)
                reports.append(report)
                _print_turn(console, report)
                if turn.barge_after_ms is not None and i + 1 < len(turns):
                    await asyncio.sleep(turn.barge_after_ms / 1000)
                    barge = turns[i + 1]
                    console.print(f"[green]user talks over the agent[/]: {escape(barge.text)}")
                    mark = session.mark()
                    await session.send_audio(barge.audio, trailing_silence_ms=1000)
                    cut = await _interruption(session, mark)
                    if cut is None:
                        reports[-1].note = (
                            "not interrupted: the agent answered this as a new turn instead "
                            "(it had stopped talking before the user was heard)"
                        )
                        after = reply.event_id  # the next reply answers the barge
                    else:
                        correction = await session.wait_for(
                            "agent_response_correction", since=mark, timeout=30
                        )
                        table = turn_table(session.timeline)
                        latency = table.loc[table["event_id"] == cut.event_id, "interruption_ms"]
                        heard = correction.data.get("corrected_agent_response", "")
                        reports[-1].note = (
                            f"interrupted {latency.iloc[0]:.0f} ms after the user started "
                            f'talking; heard: "{heard}"'
                        )
                        after = cut.event_id
                    console.print(f"[yellow]{escape(reports[-1].note)}[/]")
                    new_reply = await session.wait_for(
                        "agent_response", since=mark, timeout=30,
                        predicate=after_turn(after),
                    )  # fmt: skip
                    await session.wait_for(
                        "audio", since=mark, timeout=30,
                        predicate=from_turn(new_reply.event_id),
                    )  # fmt: skip
                    report = _report(session, new_reply.event_id)
                    reports.append(report)
                    _print_turn(console, report)
                    skip = True
                await session.wait_agent_done(timeout=60)
        session.timeline.save(run_dir)
    _print_table(console, reports)
    figure = _save_timeline_figure(session, run_dir / "timeline.png")
    console.print(f"conversation timeline (one lane per stage): [bold]{figure}[/]")
    console.print(f"timeline, audio and conversation store written to [bold]{run_dir}[/]")
    return run_dir


async def _interruption(session: Session, mark: int) -> Any:
    """The ``interruption`` the barge-in caused, or None if the agent answered it as a new turn.

    On a loaded machine the agent can fall silent between two sentences of its reply (speech
    synthesis falling behind); speech then is a new user turn, not a barge-in.
    """
    try:
        return await session.wait_for("interruption", since=mark, timeout=30)
    except TimeoutError:
        if any(e.type == "agent_response" for e in session.timeline.events[mark:]):
            return None
        raise


def _stages(r: TurnReport) -> str:
    return ", ".join(f"{k} {r.stages[k]:.0f}" for k in STAGE_ORDER if k in r.stages)


def _print_turn(console: Console, r: TurnReport) -> None:
    console.print(f"  [dim]heard:[/] {escape(r.heard)}")
    if r.tools:
        console.print(f"  [magenta]tools:[/] {escape(', '.join(r.tools))}")
    console.print(f"[cyan]agent[/]: {escape(r.reply)}")
    if r.voice_to_voice_ms is not None:
        console.print(f"  [dim]voice-to-voice {r.voice_to_voice_ms:.0f} ms ({_stages(r)} ms)[/]")


def _print_table(console: Console, reports: list[TurnReport]) -> None:
    table = Table(title="audio-sage demo: turns")
    for col in ("#", "heard", "tools", "voice-to-voice", "stages (ms)", "note"):
        table.add_column(col)
    for i, r in enumerate(reports, 1):
        v2v = f"{r.voice_to_voice_ms:.0f} ms" if r.voice_to_voice_ms is not None else "–"
        table.add_row(
            str(i),
            escape(r.heard),
            escape(", ".join(r.tools)) or "–",
            v2v,
            _stages(r),
            escape(r.note),
        )
    console.print(table)


def _save_timeline_figure(session: Session, path: Path) -> Path:
    from sagelab.metrics.plots import conversation_timeline, save_figure

    timeline = session.timeline
    figure = conversation_timeline(
        turn_table(timeline),
        tool_call_table(timeline),
        playout(timeline).turns,
        title="audio-sage demo: where the time went",
    )
    return save_figure(figure, path)
