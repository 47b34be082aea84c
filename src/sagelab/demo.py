"""``make demo``: the bundled server plus a spoken conversation driven by ``Session``.

Each user turn is real recorded speech streamed in real time. The demo shows, turn by turn,
what the user said, which tools ran, what the agent answered and how long it took; then a
barge-in, with the interruption latency. The whole timeline and both audio tracks go to
``runs/demo-<time>/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sagelab.client import Session
from sagelab.config import load_config
from sagelab.server.app import SagelabServer

WEATHER = {"paris": "sunny and 21 degrees", "london": "light rain and 14 degrees"}


def get_weather(params: dict[str, Any]) -> str:
    """The demo's client tool: the kind of application action an agent calls."""
    city = str(params.get("city", "")).strip()
    if city.lower() not in WEATHER:
        raise ValueError(f"no weather for {city!r}; known cities: {', '.join(WEATHER)}")
    return WEATHER[city.lower()]


@dataclass
class TurnReport:
    said: str
    heard: str
    tools: str
    reply: str
    first_audio_ms: float | None
    note: str = ""


async def _speak_and_listen(session: Session, wav: Path, said: str) -> TurnReport:
    mark = session.mark()
    sent = await session.send_audio(wav, trailing_silence_ms=900)
    reply = await session.wait_for("agent_response", since=mark, timeout=30)
    first = await session.wait_for(
        "audio", since=mark, timeout=30, predicate=lambda e: (e.event_id or 0) >= reply.event_id
    )
    await session.wait_agent_done()
    return _report(session, mark, said, reply, (first.t_ns - sent.speech_end_ns) / 1e6)


def _report(
    session: Session, mark: int, said: str, reply: Any, first_ms: float | None
) -> TurnReport:
    events = session.timeline.events[mark:]
    heard = next(
        (e.data.get("user_transcript", "") for e in events if e.type == "user_transcript"), ""
    )
    tools = "; ".join(
        f"{e.data['tool_name']}({', '.join(f'{k}={v!r}' for k, v in e.data['parameters'].items())})"
        for e in events
        if e.type == "client_tool_call"
    )
    return TurnReport(said, heard, tools, reply.data.get("agent_response", ""), first_ms)


async def run_demo(console: Console, *, config: Path | None, out_dir: Path, data: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = out_dir / f"demo-{stamp}"
    cfg = load_config(config, port=0, store_path=str(run_dir / "conversations.sqlite3"))
    speech = data / "speech"
    reports: list[TurnReport] = []
    async with SagelabServer(cfg) as server:
        console.print(f"[bold]sagelab demo[/]: server at {server.http_url}, agent 'scripted'")
        async with Session.connect(
            server.http_url, "scripted", tools={"get_weather": get_weather}
        ) as session:
            greeting = await session.wait_for("agent_response", timeout=10)
            await session.wait_agent_done()
            console.print(f"[cyan]agent[/]: {greeting.data['agent_response']}")
            for wav, said in (
                ("goforward.wav", "go forward ten meters"),
                ("cards_001.wav", "(a card name, which makes the agent look up the weather)"),
            ):
                report = await _speak_and_listen(session, speech / wav, said)
                reports.append(report)
                _print_turn(console, report)

            # Barge-in: let the long reply play for a while, then talk over it.
            mark = session.mark()
            await session.send_audio(speech / "forever_2.wav", trailing_silence_ms=900)
            reply = await session.wait_for("agent_response", since=mark, timeout=30)
            await session.wait_for(
                "audio", since=mark, predicate=lambda e: (e.event_id or 0) >= reply.event_id
            )
            await _sleep(1.5)
            barge = session.mark()
            sent = await session.send_audio(speech / "cards_002.wav", trailing_silence_ms=900)
            interruption = await session.wait_for("interruption", since=barge, timeout=10)
            correction = await session.wait_for(
                "agent_response_correction", since=barge, timeout=10
            )
            latency_ms = (interruption.t_ns - sent.speech_start_ns) / 1e6
            reports.append(
                TurnReport(
                    "(talks over the agent)",
                    "",
                    "",
                    correction.data.get("corrected_agent_response", ""),
                    None,
                    f"interrupted {latency_ms:.0f} ms after the user started speaking",
                )
            )
            _print_turn(console, reports[-1])
            await session.wait_for("agent_response", since=barge, timeout=30)
            await session.wait_agent_done()
        session.timeline.save(run_dir)
    _print_table(console, reports)
    console.print(f"timeline, audio and conversation store written to [bold]{run_dir}[/]")
    return run_dir


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _print_turn(console: Console, r: TurnReport) -> None:
    console.print(
        f"[green]user[/]: {r.said}" + (f"  [dim](transcript: {r.heard})[/]" if r.heard else "")
    )
    if r.tools:
        console.print(f"[magenta]tool[/]: {r.tools}")
    latency = f"  [dim]{r.first_audio_ms:.0f} ms to first audio[/]" if r.first_audio_ms else ""
    console.print(f"[cyan]agent[/]: {r.reply}{latency}")
    if r.note:
        console.print(f"[yellow]{r.note}[/]")


def _print_table(console: Console, reports: list[TurnReport]) -> None:
    table = Table(title="turns")
    for col in ("#", "user", "tool calls", "agent", "end of speech → first audio"):
        table.add_column(col)
    for i, r in enumerate(reports, 1):
        latency = f"{r.first_audio_ms:.0f} ms" if r.first_audio_ms is not None else r.note
        table.add_row(str(i), r.said, r.tools or "–", r.reply, latency)
    console.print(table)
