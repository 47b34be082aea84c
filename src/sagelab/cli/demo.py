"""``sagelab demo``: a spoken conversation with the offline agent, turn by turn."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from sagelab.bundled import data_dir
from sagelab.cli.common import ConfigOpt, console


def demo(
    config: ConfigOpt = None,
    out: Annotated[Path, typer.Option(help="Where to write the session timeline and audio")] = Path(
        "runs"
    ),
) -> None:
    """Start the server in-process and hold a scripted voice conversation, turn by turn."""
    from sagelab.demo import run_demo

    asyncio.run(run_demo(console, config=config, out_dir=out, data=data_dir()))
