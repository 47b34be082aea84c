"""``sagelab soak``: hold sessions for minutes or hours; memory, descriptors, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sagelab.bundled import data_dir
from sagelab.cli.common import console


def soak(
    sessions: Annotated[int, typer.Option(help="Concurrent sessions held all along")] = 10,
    minutes: Annotated[float, typer.Option(help="Length of the run")] = 10.0,
    conversation_s: Annotated[
        float, typer.Option(help="Each session ends its conversation and opens a new one after")
    ] = 120.0,
    speech: Annotated[Path | None, typer.Option(help="WAV the sessions speak")] = None,
    max_rss_growth_mb: Annotated[
        float, typer.Option(help="Fail when server RSS grows by this much or more")
    ] = 20.0,
    out: Annotated[
        Path | None, typer.Option(help="Run directory; default runs/soak-<time>")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object last")] = False,
) -> None:
    """Hold N real-time voice sessions for M minutes; memory, descriptors, nothing lost."""
    from sagelab.bench.soak import SoakOptions, run_soak

    opts = SoakOptions(
        sessions=sessions,
        minutes=minutes,
        conversation_s=conversation_s,
        speech_path=speech or data_dir() / "speech" / "goforward.wav",
        max_rss_growth_mb=max_rss_growth_mb,
        out_dir=out,
    )
    try:
        opts.check()
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    progress = Progress(
        TextColumn("[bold]soak[/]"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
        transient=True,
    )
    with progress:
        task = progress.add_task("starting the server", total=minutes * 60)

        def on_sample(sample, run) -> None:  # type: ignore[no-untyped-def]
            progress.update(
                task,
                completed=min(sample.t_s, minutes * 60),
                description=(
                    f"{sample.active_sessions} sessions, {len(run.conversations)} conversations "
                    f"done, RSS {sample.rss_mb:.1f} MB, {sample.fds} fds"
                ),
            )

        summary = run_soak(opts, on_sample)
    if as_json:
        print(json.dumps(summary))
    else:
        _print_soak(summary)
    if not summary["bar"]["passed"]:
        raise typer.Exit(1)


def _print_soak(s: dict) -> None:
    from rich.markup import escape

    rss, fds, store = s["rss_mb"], s["fds"], s["store"]
    table = Table(title=f"soak: {s['sessions']} sessions × {s['minutes']:g} min")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in (
        ("conversations (ok / all)", f"{s['conversations_ok']} / {s['conversations']}"),
        ("dropped or refused", s["dropped_or_refused"]),
        ("agent replies", s["replies"]),
        ("sessions held (max)", s["sessions_held_max"]),
        (
            "RSS idle → all up → end (max), MB",
            f"{rss['idle']} → {rss['all_up']} → {rss['end']} ({rss['max']})",
        ),
        ("RSS growth, MB", rss["growth"]),
        ("RSS trend, MB per session-hour", rss["trend_mb_per_session_hour"]),
        (
            "fds idle → all up → end → after",
            f"{fds['idle']} → {fds['all_up']} → {fds['end']} → {fds['after']}",
        ),
        ("registry empty afterwards", s["registry_empty_after"]),
        (
            "stored / lost / left open",
            f"{store['conversations']} / {store['lost']} / {store['open']}",
        ),
    ):
        table.add_row(label, str(value))
    console.print(table)
    verdict = (
        "[green]passed[/]"
        if s["bar"]["passed"]
        else "[red]broken:[/] " + "; ".join(s["bar"]["broken"])
    )
    console.print(f"bar: {verdict}   (run directory {escape(s['out_dir'])})")
