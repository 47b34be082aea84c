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
        int, typer.Option(help="Locust worker processes on this machine (0: only remote ones)")
    ] = 1,
    expect_workers: Annotated[
        int, typer.Option(help="Workers joining from other machines (sagelab loadtest-worker)")
    ] = 0,
    bind: Annotated[
        str, typer.Option(help="Address the locust master listens on for workers")
    ] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="Master port (default: free; 5557 with --expect-workers)")
    ] = None,
    workers_wait: Annotated[
        float, typer.Option(help="Seconds to wait for every worker to join")
    ] = 60.0,
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
    server load, plots; exits 1 when the budget is broken, 3 when a worker was lost. With
    --step: a capacity search. With --expect-workers: workers join from other machines."""
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
            processes=processes, remote_workers=expect_workers, bind_host=bind, port=port,
            workers_wait_s=workers_wait, config=config, budget=budget, speech=speech,
            gap_ms=gap_ms, lead_ms=lead_ms, relay_session_s=relay_session_s, step=plan,
            out_dir=out,
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
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps(result.summary))
    else:
        print_table(result.summary, console)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def loadtest_worker(
    master: Annotated[str, typer.Option(help="The master's host[:port] (port default 5557)")],
    processes: Annotated[int, typer.Option(help="Locust worker processes (one core each)")] = 1,
    source_address: Annotated[
        str | None, typer.Option(help="Local address the sessions leave from")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name in the master's summary")] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for this worker's logs and its own tally")
    ] = Path("."),
) -> None:
    """Join a `sagelab loadtest` master from this machine and run its users until it ends the
    run; every measurement goes to the master."""
    require("loadtest", needed_for="locust runs the users")
    from sagelab.loadtest.worker import WorkerOptions, parse_master, run_worker

    try:
        host, master_port = parse_master(master)
        opts = WorkerOptions(host, master_port, processes, out, source_address, name)
        opts.check()
    except ValueError as exc:
        console.print(f"[red]loadtest-worker:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    console.print(f"joining the master at {host}:{master_port} with {processes} process(es)")
    result = run_worker(opts)
    for tally in result.tallies:
        console.print(
            f"{tally['name']}: {tally['rows']} measurements sent, "
            f"{tally['tally'].get('first_audio', 0)} replies timed",
            highlight=False,
        )
    if not result.ok:
        console.print(f"[red]locust exited with {result.exit_codes}; see {out}/locust-worker-*.log")
        raise typer.Exit(1)
