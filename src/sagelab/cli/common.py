"""What every command shares: the console, the ``--config`` option, progress bars, temp stores."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sagelab.extras import require

console = Console()

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Agents file (YAML/JSON); default: bundled")
]


def progress_bar(label: str, *, quiet: bool) -> Progress:
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


def tmp_store() -> Path:
    """Benchmarks run with the conversation store on, as production does, in a temp dir."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="sagelab-bench-")) / "store.sqlite3"


def require_agents(agent_ids: Iterable[str], config: Path | None = None) -> None:
    """Before a command starts a server: the extras its agents need (offline models: local).

    An agents file that does not load is left for the command itself to report.
    """
    from sagelab.config import ConfigError, load_config

    wanted = set(agent_ids)
    try:
        agents = load_config(config).agents
    except ConfigError:
        return
    for spec in agents:
        if spec.id in wanted and spec.backend == "local":
            require("local", needed_for=f"agent {spec.id!r} runs offline models")
