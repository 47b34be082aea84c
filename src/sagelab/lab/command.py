"""``sagelab bench prompts``: run a lab file, print the comparison, save tables and a figure."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sagelab.lab.prompts import LabRun, run_lab
from sagelab.lab.variants import LabError, load_lab

__all__ = ["prompt_lab"]


def prompt_lab(
    lab_file: Path, *, repeat: int | None, config: Path | None, out: Path, console: Console
) -> int:
    """Run ``lab_file`` (a path, or the name of a bundled lab such as ``terse_vs_chatty``); the
    exit code is 2 for a bad file or a server that would not start."""
    if not lab_file.exists():
        from sagelab.bundled import data_dir

        bundled = data_dir() / "lab" / f"{lab_file.stem}.yaml"
        lab_file = bundled if bundled.is_file() else lab_file
    try:
        spec = load_lab(lab_file)
    except LabError as exc:
        console.print(f"[red]lab error:[/] {exc}", highlight=False)
        return 2
    runs = (repeat or spec.repeat) * len(spec.variants)
    done = 0

    def on_run(run: LabRun) -> None:
        nonlocal done
        done += 1
        ok = "[green]ok[/]" if run.result.error is None else f"[red]{run.result.error}[/]"
        console.print(f"[{done}/{runs}] {run.variant} run {run.run + 1}: {ok}", highlight=False)

    try:
        result, run_dir = run_lab(spec, config=config, out_dir=out, repeat=repeat, on_run=on_run)
    except (RuntimeError, ValueError) as exc:
        console.print(f"[red]lab failed:[/] {exc}", highlight=False)
        return 2
    summary = result.summary()
    table = Table(title=f"prompt lab {spec.name}: {runs} runs in {result.duration_s:.0f} s")
    table.add_column("")
    for variant in summary.index:
        table.add_column(str(variant))
    for column in summary.columns:
        table.add_row(column, *(_fmt(summary.loc[v, column]) for v in summary.index))
    console.print(table)
    console.print(f"replies: {run_dir / 'replies.csv'}; figure: {run_dir / 'lab.png'}")
    return 0


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.2f}"
    return str(value)
