"""``sagelab``: serve, demo and bench from the command line (typer + rich)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="Real-time voice conversations with AI agents.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmarks: transport, pipeline, accuracy, network, run (scenarios).",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")
console = Console()

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Agents file (YAML/JSON); default: bundled")
]


def data_dir() -> Path:
    """The repository's ``data/`` (speech, scenarios); ``SAGELAB_DATA`` overrides it."""
    import os

    env = os.environ.get("SAGELAB_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "data" / "speech").is_dir():
            return parent / "data"
    return Path.cwd() / "data"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one)")] = 8765,
    config: ConfigOpt = None,
    max_sessions: Annotated[int | None, typer.Option(help="Concurrent session limit")] = None,
    store: Annotated[str | None, typer.Option(help="SQLite conversation store path")] = None,
    log_level: Annotated[str, typer.Option(help="Python log level")] = "INFO",
    agent: Annotated[
        list[str] | None, typer.Option("--agent", help="Serve only these agent ids (repeatable)")
    ] = None,
) -> None:
    """Run the bundled ConvAI-compatible server until SIGINT/SIGTERM."""
    from sagelab.config import ConfigError, load_config
    from sagelab.server.app import SagelabServer

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from sagelab.server import redact

    redact.install()  # API keys and signed URLs never reach the log
    try:
        cfg = load_config(config, host=host, port=port, max_sessions=max_sessions, store_path=store)
    except ConfigError as exc:
        console.print(f"[red]config error:[/] {exc}")
        raise typer.Exit(2) from exc
    if agent:
        unknown = sorted(set(agent) - {a.id for a in cfg.agents})
        if unknown:
            console.print(f"[red]unknown agent id(s):[/] {', '.join(unknown)}")
            raise typer.Exit(2)
        cfg.agents = [a for a in cfg.agents if a.id in agent]

    async def main() -> None:
        server = SagelabServer(cfg)
        await server.start()
        console.print(
            f"sagelab serving [bold]{', '.join(a.id for a in cfg.agents)}[/] at {server.http_url} "
            f"(ConvAI: {server.ws_url}/v1/convai/conversation?agent_id=…)"
        )
        await server.serve_forever()

    asyncio.run(main())


@app.command()
def demo(
    config: ConfigOpt = None,
    out: Annotated[Path, typer.Option(help="Where to write the session timeline and audio")] = Path(
        "runs"
    ),
) -> None:
    """Start the server in-process and hold a scripted voice conversation, turn by turn."""
    from sagelab.demo import run_demo

    asyncio.run(run_demo(console, config=config, out_dir=out, data=data_dir()))


@bench_app.command("transport")
def bench_transport(
    sessions: Annotated[int, typer.Option(help="Concurrent sessions")] = 10,
    seconds: Annotated[float, typer.Option(help="Seconds of audio each session streams")] = 20.0,
    url: Annotated[str | None, typer.Option(help="Server base URL; default: start one")] = None,
    agent_id: Annotated[str, typer.Option(help="Agent to talk to")] = "scripted",
    speech: Annotated[Path | None, typer.Option(help="WAV the sessions speak")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object last")] = False,
) -> None:
    """N sessions stream real-time speech to the scripted agent; latency, errors, server load."""
    from sagelab.bench.serverproc import ResourceSampler, ServerProcess
    from sagelab.bench.transport import run_transport_bench, summarize

    speech_path = speech or data_dir() / "speech" / "goforward.wav"
    with _progress("transport", quiet=as_json) as progress:
        task = progress.add_task("sessions", total=sessions)

        def run(base: str) -> list:
            return asyncio.run(
                run_transport_bench(
                    base,
                    sessions=sessions,
                    seconds=seconds,
                    speech_path=speech_path,
                    agent_id=agent_id,
                    on_done=lambda _r: progress.advance(task),
                )
            )

        if url is None:
            with ServerProcess(
                max_sessions=max(50, sessions), store_path=str(_tmp_store()), agents=[agent_id]
            ) as srv:
                sampler = ResourceSampler(srv.pid).start()
                results = run(srv.http_url)
                sampler.stop()
                resources = sampler.summary()
        else:
            results, resources = run(url), None
    summary = summarize(results, resources)
    summary.update({"seconds": seconds, "agent_id": agent_id})
    if as_json:
        print(json.dumps(summary))
    else:
        _print_transport(summary)
    if summary["errors"]:
        raise typer.Exit(1)


@bench_app.command("network")
def bench_network(
    network: Annotated[
        list[str] | None,
        typer.Option(
            help="A preset (ideal, good_wifi, 4g, 3g, lossy, satellite) or "
            "'latency=80,jitter=20,loss=0.01,bandwidth=1000'; repeat it; default: all presets"
        ),
    ] = None,
    turns: Annotated[int, typer.Option(help="Spoken turns per session")] = 6,
    sessions: Annotated[int, typer.Option(help="Sessions per network, all at once")] = 2,
    seed: Annotated[int | None, typer.Option(help="Seed for jitter and loss")] = 1,
    url: Annotated[str | None, typer.Option(help="Server base URL; default: start one")] = None,
    speech: Annotated[Path | None, typer.Option(help="WAV the sessions speak")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object last")] = False,
) -> None:
    """Voice-to-voice, round trip, audio gaps and stutter under each network's conditions."""
    from sagelab.bench.network import networks_from, run_network_bench, summarize, tables
    from sagelab.bench.serverproc import ServerProcess

    try:
        networks = networks_from(network, seed=seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--network") from None
    speech_path = speech or data_dir() / "speech" / "goforward.wav"
    with _progress("network", quiet=as_json) as progress:
        task = progress.add_task("turns", total=len(networks) * sessions * turns)

        def run(base: str) -> list:
            return asyncio.run(
                run_network_bench(
                    base,
                    networks,
                    turns=turns,
                    sessions=sessions,
                    speech_path=speech_path,
                    on_turn=lambda: progress.advance(task),
                )
            )

        if url is None:
            with ServerProcess(store_path=str(_tmp_store()), agents=["scripted"]) as srv:
                runs = run(srv.http_url)
        else:
            runs = run(url)
    rows = summarize(runs)
    if as_json:
        print(json.dumps({"turns": turns, "sessions": sessions, "networks": rows}))
    else:
        for table in tables(rows):
            console.print(table)
    if any(row["errors"] for row in rows):
        for row in rows:
            for error in row["errors"]:
                console.print(f"[red]{row['network']}:[/] {error}")
        raise typer.Exit(1)


@bench_app.command("pipeline")
def bench_pipeline(
    runs: Annotated[int, typer.Option(help="Single-session runs of the demo conversation")] = 3,
    max_sessions: Annotated[
        int, typer.Option(help="Capacity search up to this many concurrent sessions (0: skip)")
    ] = 4,
    budget_ms: Annotated[float, typer.Option(help="Voice-to-voice p95 budget")] = 1500.0,
    conversation: Annotated[Path | None, typer.Option(help="Scenario YAML")] = None,
    url: Annotated[str | None, typer.Option(help="Server base URL; default: start one")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object last")] = False,
    plots: Annotated[
        Path | None,
        typer.Option(help="Write latency_cdf.png and stutter_vs_load.png to this folder"),
    ] = None,
) -> None:
    """The demo conversation with audio-sage: voice-to-voice, stages, interruption, capacity."""
    from sagelab.bench.pipeline import run_pipeline_bench
    from sagelab.bench.serverproc import ServerProcess

    path = conversation or data_dir() / "demo" / "conversation.yaml"

    def progress(msg: str) -> None:
        if not as_json:
            console.print(f"[dim]{msg}[/]")

    def run(base: str) -> dict:
        return asyncio.run(
            run_pipeline_bench(
                base, path, runs=runs, budget_p95_ms=budget_ms, max_sessions=max_sessions,
                on_progress=progress, plots_dir=plots,
            )
        )  # fmt: skip

    if url is None:
        with ServerProcess(store_path=str(_tmp_store()), agents=["audio-sage"]) as srv:
            report = run(srv.http_url)
    else:
        report = run(url)
    if as_json:
        print(json.dumps(report))
        return
    single = report["single"]
    table = Table(title=f"pipeline: {report['runs']} runs of the demo conversation")
    table.add_column("metric")
    for col in ("p50", "p95", "p99", "n"):
        table.add_column(col, justify="right")
    rows = [("voice-to-voice (ms)", single["voice_to_voice_ms"]),
            ("time to first audio (ms)", single["ttfa_ms"]),
            ("interruption (ms)", single["interruption_ms"]),
            ("STT real-time factor", single["stt_rtf"]),
            ("TTS real-time factor", single["tts_rtf"])]  # fmt: skip
    rows += [(f"stage {k} (ms)", v) for k, v in single["stages_ms"].items()]
    for label, v in rows:
        table.add_row(
            label, *(str(v[c]) if v[c] is not None else "–" for c in ("p50", "p95", "p99", "n"))
        )
    console.print(table)
    cap = report["capacity"]
    for step in cap["steps"]:
        verdict = "ok" if step["ok"] else "over budget"
        console.print(f"{step['sessions']} sessions: v2v p95 {step['v2v_p95_ms']} ms {verdict}")
    best = cap["max_sessions_within_budget"]
    console.print(f"largest concurrency within {cap['budget_p95_ms']:.0f} ms p95: {best}")
    for figure_path in report.get("plots", []):
        console.print(f"figure: {figure_path}")
    if single["errors"]:
        console.print(f"[red]errors:[/] {single['errors']}")


@bench_app.command("accuracy")
def bench_accuracy(
    manifest: Annotated[Path | None, typer.Option(help="JSONL with 'audio' and 'text'")] = None,
    url: Annotated[str | None, typer.Option(help="Server base URL; default: start one")] = None,
    agent_id: Annotated[
        str, typer.Option(help="Agent whose transcripts are scored")
    ] = "audio-sage",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object last")] = False,
    plots: Annotated[
        Path | None, typer.Option(help="Write the WER-per-utterance figure (wer.png) here")
    ] = None,
) -> None:
    """Stream each utterance as a user turn; WER and CER of the server's transcripts."""
    from sagelab.bench.accuracy import read_manifest, summarize, transcribe_manifest
    from sagelab.bench.serverproc import ServerProcess

    utterances = read_manifest(manifest or data_dir() / "speech" / "manifest.jsonl")
    with _progress("accuracy", quiet=as_json) as progress:
        task = progress.add_task("utterances", total=len(utterances))

        def run(base: str) -> list:
            return asyncio.run(
                transcribe_manifest(
                    base, agent_id, utterances, on_done=lambda *_: progress.advance(task)
                )
            )

        if url is None:
            with ServerProcess(store_path=str(_tmp_store()), agents=[agent_id]) as srv:
                results = run(srv.http_url)
        else:
            results = run(url)
    summary = summarize(results)
    if plots is not None:
        import pandas as pd

        from sagelab.metrics.plots import save_figure, wer_per_utterance

        per_utterance = pd.DataFrame(summary["per_utterance"])
        figure = wer_per_utterance(per_utterance, overall_wer=summary["wer"])
        summary["plots"] = [str(save_figure(figure, plots / "wer.png"))]
    if as_json:
        print(json.dumps(summary))
        return
    table = Table(title=f"accuracy: {summary['utterances']} utterances, agent {agent_id}")
    for col in ("id", "reference", "hypothesis", "WER", "CER"):
        table.add_column(col)
    for row in summary["per_utterance"]:
        table.add_row(
            row["id"], row["reference"], row["hypothesis"], f"{row['wer']:.1%}", f"{row['cer']:.1%}"
        )
    console.print(table)
    console.print(f"overall WER {summary['wer']:.2%}, CER {summary['cer']:.2%}")
    lat = summary["transcript_ms"]
    if lat["n"]:
        console.print(
            f"transcript latency (end of speech → transcript): p50 {lat['p50']} ms, "
            f"p95 {lat['p95']} ms, p99 {lat['p99']} ms"
        )
    for figure_path in summary.get("plots", []):
        console.print(f"figure: {figure_path}")


@bench_app.command("run")
def bench_run(
    path: Annotated[
        Path | None,
        typer.Argument(help="Scenario YAML or a folder of them; default: data/scenarios"),
    ] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each scenario")] = 1,
    url: Annotated[str | None, typer.Option(help="Server base URL; default: start one")] = None,
    config: ConfigOpt = None,
    store: Annotated[
        Path | None,
        typer.Option(help="With --url: the server's conversation store (tool parameters)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="Reports go to OUT/<time>-scenarios/")] = Path("runs"),
    report_format: Annotated[
        str, typer.Option("--format", help="Report format: md or html")
    ] = "md",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object last")] = False,
) -> None:
    """Run voice-agent scenarios, write a report with figures; exit 1 if any check fails."""
    import sys

    from sagelab.scenarios import BenchRunOptions, ScenarioError, load_scenarios
    from sagelab.scenarios.bench import ServerStartError, print_results, run_bench

    if report_format not in ("md", "html"):
        console.print(f"[red]--format must be md or html, not {report_format!r}[/]")
        raise typer.Exit(2)
    try:
        scenarios = load_scenarios(path or data_dir() / "scenarios")
        suite, report = run_bench(
            BenchRunOptions(
                scenarios, repeat=repeat, url=url, config=config, store=store, out_dir=out,
                fmt=report_format, command="sagelab " + " ".join(sys.argv[1:]),  # type: ignore[arg-type]
            ),
            console,
            quiet=as_json,
        )  # fmt: skip
    except (ScenarioError, ServerStartError) as exc:
        kind = "scenario error" if isinstance(exc, ScenarioError) else "server error"
        console.print(f"[red]{kind}:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps({**suite.as_dict(), "report": str(report)}))
    else:
        print_results(suite, report, console)
    if not suite.passed:
        raise typer.Exit(1)


@bench_app.command("prompts")
def bench_prompts(
    lab_file: Annotated[Path, typer.Argument(help="Lab YAML: a scenario and prompt variants")],
    repeat: Annotated[int | None, typer.Option(min=1, help="Runs per variant")] = None,
    config: ConfigOpt = None,
    out: Annotated[Path, typer.Option(help="Results go to OUT/<time>-lab-<name>/")] = Path("runs"),
) -> None:
    """Prompt lab: one scenario under each prompt variant, N runs each, compared in numbers."""
    from sagelab.lab.command import prompt_lab

    raise typer.Exit(prompt_lab(lab_file, repeat=repeat, config=config, out=out, console=console))


def _progress(label: str, *, quiet: bool) -> Progress:
    """A bar for long benchmark work; off when the output must be one JSON object."""
    return Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )


def _tmp_store() -> Path:
    """Benchmarks run with the conversation store on, as production does, in a temp dir."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="sagelab-bench-")) / "store.sqlite3"


def _print_transport(s: dict) -> None:
    table = Table(title=f"transport: {s['sessions']} sessions × {s['seconds']:g} s")
    table.add_column("metric")
    for col in ("p50", "p95", "p99", "max", "n"):
        table.add_column(col, justify="right")
    for key, label in (
        ("ping_rtt_ms", "ping round trip, ConvAI ping_ms (ms)"),
        ("ws_rtt_ms", "WebSocket ping frame round trip (ms)"),
        ("time_to_first_audio_ms", "time to first audio (ms)"),
        ("setup_ms", "session set-up (ms)"),
        ("send_lateness_ms", "client send lateness (ms)"),
    ):
        v = s[key]
        table.add_row(
            label,
            *(str(v[c]) if v[c] is not None else "–" for c in ("p50", "p95", "p99", "max", "n")),
        )
    console.print(table)
    console.print(
        f"errors: {s['errors']}" + (f" ({'; '.join(s['error_samples'])})" if s["errors"] else "")
    )
    if s.get("server"):
        cpu, rss = s["server"]["cpu_percent"], s["server"]["rss_mb"]
        console.print(
            f"server CPU % of one core p50/p95/max: {cpu['p50']}/{cpu['p95']}/{cpu['max']}; "
            f"RSS MB start/max/end: {rss['start']}/{rss['max']}/{rss['end']}"
        )


@app.command()
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
            data_dir=data_dir(),
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


tools_app = typer.Typer(help="Push actions to an agent as tools, or pull them back.")
app.add_typer(tools_app, name="tools")


@tools_app.command("push")
def tools_push(
    path: Annotated[Path, typer.Argument(help="Actions file (YAML/JSON) or a folder of them")],
    agent_id: Annotated[str, typer.Option("--agent-id", help="Agent whose tools to replace")],
    base_url: Annotated[
        str | None, typer.Option(help="Server base URL; default: the ElevenLabs API")
    ] = None,
    prompt_file: Annotated[
        Path | None, typer.Option(help="Text file with the agent's new system prompt")
    ] = None,
) -> None:
    """Create the actions as client tools and make them the agent's tools
    (``ELEVENLABS_API_KEY`` is the key)."""
    import os

    from sagelab.tools import ActionFileError, load_actions
    from sagelab.tools.sync import push

    try:
        actions = load_actions(path)
    except ActionFileError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    prompt = prompt_file.read_text(encoding="utf-8") if prompt_file else None
    api_key = os.environ.get("ELEVENLABS_API_KEY")
    ids = push(actions, base_url=base_url, api_key=api_key, agent_id=agent_id, prompt=prompt)
    for action, tool_id in zip(actions, ids, strict=True):
        console.print(f"{tool_id}  {action.name}")
    console.print(f"agent {agent_id}: {len(ids)} tools" + (", prompt updated" if prompt else ""))


@tools_app.command("pull")
def tools_pull(
    agent_id: Annotated[str, typer.Option("--agent-id", help="Agent to read")],
    base_url: Annotated[
        str | None, typer.Option(help="Server base URL; default: the ElevenLabs API")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the actions here (YAML); default: print them")
    ] = None,
) -> None:
    """Print the agent's prompt, and its client tools as an actions file."""
    import os

    import yaml

    from sagelab.tools.sync import pull

    actions, prompt = pull(
        base_url=base_url, api_key=os.environ.get("ELEVENLABS_API_KEY"), agent_id=agent_id
    )
    doc = {"actions": [a.model_dump(mode="json", exclude_defaults=True) for a in actions]}
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    if out is None:
        print(text, end="")
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"{len(actions)} actions written to {out}")
    console.print(f"[bold]prompt[/bold]: {prompt}")


@app.command()
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


keys_app = typer.Typer(help="API keys for the server's configuration.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("hash")
def keys_hash(
    key: Annotated[
        str | None, typer.Argument(help="The key; default: read it from stdin (no shell history)")
    ] = None,
) -> None:
    """Print the ``sha256:<hex>`` form of an API key, for ``api_keys`` in the agents file."""
    import sys

    from sagelab.server.auth import hash_key

    if key is None:
        key = typer.prompt("API key", hide_input=True) if sys.stdin.isatty() else sys.stdin.read()
    key = key.strip()
    if not key:
        console.print("[red]empty key:[/] pass the key as an argument or on stdin")
        raise typer.Exit(2)
    print(hash_key(key))


@keys_app.command("new")
def keys_new(
    name: Annotated[str | None, typer.Option(help="A label for the key in the config")] = None,
) -> None:
    """Make a random API key; print it once, and the config entry that stores only its hash."""
    import secrets

    from sagelab.server.auth import hash_key

    key = f"sk_sage_{secrets.token_urlsafe(32)}"
    entry = f"  - {{key: {hash_key(key)}" + (f", name: {name}}}" if name else "}")
    # Plain print: rich would wrap the key at the terminal width and break copy-paste.
    print(f"key (shown once, give it to the client): {key}")
    print(f"agents file:\napi_keys:\n{entry}")


if __name__ == "__main__":
    app()
