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
bench_app = typer.Typer(help="Benchmarks: transport, pipeline, accuracy.", no_args_is_help=True)
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
                on_progress=progress,
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
    users: Annotated[int, typer.Option(help="Concurrent locust users (ConvAI sessions)")] = 50,
    spawn_rate: Annotated[float, typer.Option(help="Users started per second")] = 10.0,
    run_time: Annotated[str, typer.Option(help="Locust run time, e.g. 30s, 2m")] = "1m",
    target: Annotated[
        str | None, typer.Option(help="Server base URL (http://…); default: start one")
    ] = None,
    agent: Annotated[str, typer.Option(help="Agent the users talk to")] = "scripted",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object last")] = False,
    max_error_rate: Annotated[float, typer.Option(help="Fail above this error rate")] = 0.02,
    max_p95_first_audio_ms: Annotated[
        float, typer.Option(help="Fail above this p95 time to first audio")
    ] = 1000.0,
    out: Annotated[
        Path | None, typer.Option(help="Run directory; default runs/loadtest-<time>")
    ] = None,
) -> None:
    """Locust users stream real-time speech over ConvAI; percentiles, errors, server load."""
    from sagelab.loadtest.runner import LoadtestOptions, print_table, run_loadtest

    result = run_loadtest(
        LoadtestOptions(
            users=users,
            spawn_rate=spawn_rate,
            run_time=run_time,
            target=target,
            agent=agent,
            max_error_rate=max_error_rate,
            max_p95_first_audio_ms=max_p95_first_audio_ms,
            out_dir=out,
            data_dir=data_dir(),
        )
    )
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


if __name__ == "__main__":
    app()
