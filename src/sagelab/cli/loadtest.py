"""``sagelab loadtest``: locust users against a server, a summary, plots and a verdict.

The work is :mod:`sagelab.loadtest.runner`'s; this module only turns options into a
:class:`~sagelab.loadtest.runner.LoadtestOptions` and prints the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sagelab.bundled import data_dir
from sagelab.cli.common import ConfigOpt, console
from sagelab.extras import require


def loadtest(
    users: Annotated[int, typer.Option(help="Concurrent locust users (sessions)")] = 50,
    spawn_rate: Annotated[float, typer.Option(help="Users started per second")] = 10.0,
    run_time: Annotated[str, typer.Option(help="Locust run time, e.g. 30s, 2m")] = "1m",
    target: Annotated[
        str | None, typer.Option(help="Server base URL (http://…); default: start one")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="scripted or local: the bundled agent of that kind and its budget"),
    ] = None,
    agent: Annotated[
        str | None, typer.Option(help="Agent id (default: scripted, or audio-sage for local)")
    ] = None,
    protocol: Annotated[str, typer.Option(help="convai or relay (the web app's)")] = "convai",
    signed_url: Annotated[
        bool,
        typer.Option(
            "--signed-url",
            help="Connect through get-signed-url (the started server gets an API key and the "
            "agent requires auth; with --target the key is $ELEVENLABS_API_KEY)",
        ),
    ] = False,
    processes: Annotated[
        int, typer.Option(help="Locust worker processes; 2+ runs a master and workers")
    ] = 1,
    config: ConfigOpt = None,
    step: Annotated[
        bool,
        typer.Option(
            "--step",
            help="Capacity search: add users in steps until the budget breaks; "
            "report the largest sustainable number",
        ),
    ] = False,
    step_users: Annotated[
        int | None, typer.Option(help="Users added per step (default 10; local: 1)")
    ] = None,
    step_time: Annotated[
        str | None, typer.Option(help="Time per step (default 30s; local: 60s)")
    ] = None,
    max_users: Annotated[
        int | None, typer.Option(help="Last step's users (default: --users)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object last")] = False,
    max_error_rate: Annotated[float, typer.Option(help="Fail above this error rate")] = 0.02,
    max_p95_first_audio_ms: Annotated[
        float | None,
        typer.Option(help="Fail above this p95 time to first audio (default 1000; local: off)"),
    ] = None,
    max_p95_voice_to_voice_ms: Annotated[
        float | None,
        typer.Option(help="Fail above this p95 voice-to-voice (default off; local: 1500)"),
    ] = None,
    max_stutter_share: Annotated[
        float, typer.Option(help="Fail when more than this share of agent turns stutter")
    ] = 0.05,
    speech: Annotated[
        Path | None, typer.Option(help="Recording each user says (default per backend)")
    ] = None,
    gap_ms: Annotated[
        int | None, typer.Option(help="Silence after each utterance (default 2500; local 7000)")
    ] = None,
    lead_ms: Annotated[
        int | None,
        typer.Option(help="Silence before a session's first utterance (default 0; local 8000)"),
    ] = None,
    relay_session_s: Annotated[
        float, typer.Option(help="Relay: seconds of speech per session before 'end'")
    ] = 60.0,
    out: Annotated[
        Path | None, typer.Option(help="Run directory; default runs/loadtest-<time>")
    ] = None,
) -> None:
    """Locust users stream real-time speech (ConvAI or relay); percentiles, stutter, errors,
    server load, plots; exits 1 when the budget is broken. With --step: a capacity search."""
    import os
    from dataclasses import replace

    require("loadtest", needed_for="locust runs the users")

    from sagelab.loadtest.runner import (
        BACKEND_AGENTS,
        LoadtestOptions,
        default_budget,
        parse_duration,
        run_loadtest,
    )
    from sagelab.loadtest.steps import StepPlan
    from sagelab.loadtest.summary import print_table

    def fail(message: str) -> typer.Exit:
        console.print(f"[red]loadtest:[/] {message}", highlight=False)
        return typer.Exit(2)

    if backend is not None and backend not in BACKEND_AGENTS:
        raise fail(f"unknown --backend {backend!r}; use one of {', '.join(BACKEND_AGENTS)}")
    agent_id = agent or BACKEND_AGENTS[backend or "scripted"]
    kind = backend
    if kind is None and target is None:
        from sagelab.config import ConfigError, load_config

        try:
            spec = load_config(config).agent(agent_id)
        except ConfigError as exc:
            raise fail(str(exc)) from exc
        if spec is None:
            raise fail(f"agent {agent_id!r} is not in the agents file; pass --agent or --config")
        kind = "local" if spec.backend == "local" else "scripted"
    kind = kind or "scripted"
    budget = replace(default_budget(kind), max_error_rate=max_error_rate,
                     max_stutter_share=max_stutter_share)  # fmt: skip
    if max_p95_first_audio_ms is not None:
        budget = replace(budget, max_p95_first_audio_ms=max_p95_first_audio_ms)
    if max_p95_voice_to_voice_ms is not None:
        budget = replace(budget, max_p95_voice_to_voice_ms=max_p95_voice_to_voice_ms)
    try:
        plan = None
        if step:
            plan = StepPlan(
                step_users=step_users or (1 if kind == "local" else 10),
                step_time_s=parse_duration(step_time or ("60s" if kind == "local" else "30s")),
                max_users=max_users or users,
                spawn_rate=spawn_rate,
            )
        opts = LoadtestOptions(
            users=users, spawn_rate=spawn_rate, run_time=run_time, target=target,
            agent=agent_id, backend=kind, protocol=protocol,  # type: ignore[arg-type]
            signed_url=signed_url, api_key=os.environ.get("ELEVENLABS_API_KEY"),
            processes=processes, config=config, budget=budget, speech=speech, gap_ms=gap_ms,
            lead_ms=lead_ms, relay_session_s=relay_session_s, step=plan, out_dir=out,
            data_dir=data_dir(), locustfile=_locustfile(),
        )  # fmt: skip
        opts.check()
        if plan is None:
            parse_duration(run_time)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    with Progress(
        TextColumn("[bold]loadtest[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
        transient=True,
    ) as bar:
        task = bar.add_task("starting the server", total=1.0)

        def progress(elapsed: float, total: float, note: str) -> None:
            bar.update(task, completed=elapsed, total=total, description=note or "running")

        try:
            result = run_loadtest(opts, progress)
        except (FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps(result.summary))
    else:
        print_table(result.summary, console)
    if not result.ok:
        raise typer.Exit(1)


def _locustfile() -> Path | None:
    """The locust users: shipped in ``sagelab.loadtest`` when present, else (source checkouts
    from before the locustfile moved into the package) ``loadtests/`` beside ``src/``."""
    from importlib import resources

    packaged = resources.files("sagelab.loadtest").joinpath("locustfile.py")
    if packaged.is_file():
        return Path(str(packaged))
    import sagelab

    checkout = Path(sagelab.__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
    return checkout if checkout.is_file() else None
