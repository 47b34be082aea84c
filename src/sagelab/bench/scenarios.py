"""``sagelab bench run``: scenarios against a URL or a bundled server, a report, an exit code.

Without ``--url`` the bundled server runs in its own process (as in the other benchmarks, so
the client's CPU is not the server's) from an agents file written for this run: only the
agents the scenarios talk to, a fresh demo database, and a conversation store in the run
folder, which is where server tool parameters are read back from.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sagelab.metrics import summarize_values
from sagelab.scenarios.model import Scenario
from sagelab.scenarios.report import Format, write_report
from sagelab.scenarios.runner import StepRun
from sagelab.scenarios.serverconf import STORE_NAME, write_run_config
from sagelab.scenarios.suite import ScenarioResult, SuiteResult, run_suite


class ServerStartError(RuntimeError):
    """The bundled server would not start; the message points at its log."""


@dataclass(frozen=True)
class BenchRunOptions:
    scenarios: Sequence[Scenario]
    repeat: int = 1
    url: str | None = None
    config: Path | None = None
    store: Path | None = None
    out_dir: Path = Path("runs")
    fmt: Format = "md"
    command: str | None = None


def run_bench(
    options: BenchRunOptions, console: Console, *, quiet: bool = False
) -> tuple[SuiteResult, Path]:
    """Run the suite with a progress bar; write the report. Returns the suite and report."""
    run_dir = options.out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-scenarios"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = options.out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-scenarios-{suffix}"
    run_dir.mkdir(parents=True)
    total = sum(len(s.steps) for s in options.scenarios) * options.repeat
    progress = Progress(
        TextColumn("[bold]scenarios[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )
    with progress:
        task = progress.add_task("starting", total=total)

        def on_step(step: StepRun) -> None:
            progress.update(task, advance=1, description=step.step.label[:50])

        def on_result(result: ScenarioResult) -> None:
            # Steps a broken session never reached still count as done on the bar.
            missing = sum(1 for s in result.run.steps if not s.ran)
            progress.update(task, advance=missing)
            if not quiet:
                mark = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
                console.print(f"{mark} {result.name} run {result.repeat + 1}")

        def run(url: str, store: Path | None) -> SuiteResult:
            return asyncio.run(
                run_suite(
                    options.scenarios, url, repeat=options.repeat, store_path=store,
                    on_step=on_step, on_result=on_result,
                )
            )  # fmt: skip

        if options.url is None:
            from sagelab.bench.serverproc import ServerProcess

            agents = sorted({s.agent for s in options.scenarios})
            config = write_run_config(options.config, agents, run_dir)
            progress.update(task, description=f"starting the server ({', '.join(agents)})")
            log = run_dir / "server.log"
            try:
                server = ServerProcess(config, agents=agents, log_path=log).__enter__()
            except RuntimeError as exc:
                raise ServerStartError(
                    f"the bundled server did not start ({exc}); see {log}"
                ) from exc
            try:
                suite = run(server.http_url, run_dir / STORE_NAME)
            finally:
                server.__exit__(None, None, None)
        else:
            suite = run(options.url, options.store)
    report = write_report(suite, run_dir, fmt=options.fmt, command=options.command)
    return suite, report


def print_results(suite: SuiteResult, report: Path, console: Console) -> None:
    table = Table(title="scenarios")
    for col in ("scenario", "run", "result", "checks", "voice-to-voice p50", "failed checks"):
        table.add_column(col)
    for r in suite.results:
        failed = [c for c in r.checks if not c.passed]
        p50 = summarize_values(
            s.observation.latencies_ms.get("voice_to_voice")
            for s in r.steps
            if s.observation is not None
        )["p50"]
        median = f"{p50:.0f} ms" if math.isfinite(p50) else "–"
        table.add_row(
            r.name,
            str(r.repeat + 1),
            "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
            f"{len(r.checks) - len(failed)}/{len(r.checks)}",
            median,
            "; ".join(c.name for c in failed[:4]) + (" …" if len(failed) > 4 else "")
            or (r.error or ""),
        )
    console.print(table)
    for line in suite.failures():
        console.print(f"[red]✗[/] {line}", highlight=False)
    verdict = "[green]all scenarios passed[/]" if suite.passed else "[red]scenarios failed[/]"
    console.print(f"{verdict}; report: [bold]{report}[/]")
