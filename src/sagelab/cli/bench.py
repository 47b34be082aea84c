"""``sagelab bench``: transport, network, pipeline, accuracy and scenario benchmarks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sagelab.bench.streaming_cmd import bench_streaming
from sagelab.bundled import data_dir
from sagelab.cli.common import ConfigOpt, console, progress_bar, require_agents, tmp_store
from sagelab.extras import require

app = typer.Typer(
    help="Benchmarks: transport, pipeline, accuracy, streaming, network, run (scenarios), "
    "prompts (the prompt lab).",
    no_args_is_help=True,
)
app.command("streaming")(bench_streaming)


@app.command("transport")
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
    with progress_bar("transport", quiet=as_json) as progress:
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
                max_sessions=max(50, sessions), store_path=str(tmp_store()), agents=[agent_id]
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


@app.command("network")
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
    with progress_bar("network", quiet=as_json) as progress:
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
            with ServerProcess(store_path=str(tmp_store()), agents=["scripted"]) as srv:
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


@app.command("pipeline")
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
    chunk_ms: Annotated[
        int, typer.Option(min=10, max=500, help="Client audio chunk (ms): 250 is the Python SDK's")
    ] = 100,
    agent: Annotated[
        str | None,
        typer.Option(help="Agent to talk to (default: the conversation's, audio-sage)"),
    ] = None,
) -> None:
    """The demo conversation with audio-sage: voice-to-voice, stages, interruption, capacity."""
    from sagelab.bench.pipeline import load_conversation, run_pipeline_bench
    from sagelab.bench.serverproc import ServerProcess

    path = conversation or data_dir() / "demo" / "conversation.yaml"
    agent_id = agent or load_conversation(path)[0]
    if url is None:
        require_agents([agent_id])
    if plots is not None:
        require("metrics", needed_for="--plots")

    def progress(msg: str) -> None:
        if not as_json:
            console.print(f"[dim]{msg}[/]")

    def run(base: str) -> dict:
        return asyncio.run(
            run_pipeline_bench(
                base, path, runs=runs, budget_p95_ms=budget_ms, max_sessions=max_sessions,
                on_progress=progress, plots_dir=plots, chunk_ms=chunk_ms, agent_id=agent_id,
            )
        )  # fmt: skip

    if url is None:
        with ServerProcess(store_path=str(tmp_store()), agents=[agent_id]) as srv:
            report = run(srv.http_url)
    else:
        report = run(url)
    if as_json:
        print(json.dumps(report))
        return
    single = report["single"]
    table = Table(title=f"pipeline: {report['runs']} runs of the conversation with {agent_id}")
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
    from sagelab.bench.pipeline import budget_markdown

    console.print("latency budget (share of mean voice-to-voice):", markup=False)
    console.print(budget_markdown(report["budget"]), markup=False)
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


@app.command("accuracy")
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

    require("metrics", needed_for="word error rates")
    if url is None:
        require_agents([agent_id])
    utterances = read_manifest(manifest or data_dir() / "speech" / "manifest.jsonl")
    with progress_bar("accuracy", quiet=as_json) as progress:
        task = progress.add_task("utterances", total=len(utterances))

        def run(base: str) -> list:
            return asyncio.run(
                transcribe_manifest(
                    base, agent_id, utterances, on_done=lambda *_: progress.advance(task)
                )
            )

        if url is None:
            with ServerProcess(store_path=str(tmp_store()), agents=[agent_id]) as srv:
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


@app.command("run")
def bench_run(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Scenario YAML, a folder of them, or the name of a bundled scenario "
            "(e.g. tool-failure); default: all bundled scenarios"
        ),
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

    from sagelab.bench.scenarios import (
        BenchRunOptions,
        ServerStartError,
        print_results,
        run_bench,
    )
    from sagelab.scenarios import ScenarioError, load_scenarios

    if report_format not in ("md", "html"):
        console.print(f"[red]--format must be md or html, not {report_format!r}[/]")
        raise typer.Exit(2)
    try:
        scenarios = load_scenarios(_scenario_path(path))
        require("metrics", needed_for="the report's figures")
        if url is None:
            require_agents({s.agent for s in scenarios}, config)
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


def _scenario_path(path: Path | None) -> Path:
    """A path as given, or a bare name of a bundled scenario (``tool-failure``) as its file."""
    bundled = data_dir() / "scenarios"
    if path is None:
        return bundled
    if path.exists() or len(path.parts) > 1 or path.suffix:
        return path
    by_name = {f.stem.replace("_", "-"): f for f in bundled.glob("*.yaml")}
    return by_name.get(path.name.replace("_", "-"), path)


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


@app.command("prompts")
def bench_prompts(
    lab_file: Annotated[Path, typer.Argument(help="Lab YAML: a scenario and prompt variants")],
    repeat: Annotated[int | None, typer.Option(min=1, help="Runs per variant")] = None,
    config: ConfigOpt = None,
    out: Annotated[Path, typer.Option(help="Results go to OUT/<time>-lab-<name>/")] = Path("runs"),
) -> None:
    """Prompt lab: one scenario under each prompt variant, N runs each, compared in numbers."""
    from sagelab.lab.command import prompt_lab

    raise typer.Exit(prompt_lab(lab_file, repeat=repeat, config=config, out=out, console=console))
