"""``sagelab notebooks DIR``: the bundled notebooks, copied where the user's Jupyter runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sagelab.cli.common import console


def notebooks(
    directory: Annotated[Path, typer.Argument(help="Folder to copy the notebooks into")],
    force: Annotated[bool, typer.Option("--force", help="Replace notebooks already there")] = False,
) -> None:
    """Copy sagelab's notebooks into DIRECTORY; then run `jupyter lab DIRECTORY`."""
    from sagelab.notebook.workbench import copy_notebooks

    try:
        copied = copy_notebooks(directory, overwrite=force)
    except (FileExistsError, NotADirectoryError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    for path in copied:
        console.print(f"  {path}")
    console.print(f"Open them with: jupyter lab {directory}")
