"""``sagelab`` on the command line: one module per command group (typer + rich).

``serve`` (:mod:`~sagelab.cli.serve`), ``demo``, ``bench ...`` (transport, network, pipeline,
accuracy, run), ``loadtest``, ``soak``, ``tools push|pull`` and ``keys hash|new``. Each module
only parses options and prints results; the work is done by the package the command names.

:func:`main` is the console script: an optional extra that is not installed ends the command
with one line naming the extra to install, not a traceback.
"""

from __future__ import annotations

import sys

import typer

from sagelab.cli import bench, demo, keys, loadtest, notebooks, serve, soak, tools
from sagelab.extras import missing_extra

__all__ = ["app", "main"]

app = typer.Typer(help="Real-time voice conversations with AI agents.", no_args_is_help=True)
app.command()(serve.serve)
app.command()(demo.demo)
app.add_typer(bench.app, name="bench")
app.command()(loadtest.loadtest)
app.command("loadtest-worker")(loadtest.loadtest_worker)
app.add_typer(tools.app, name="tools")
app.command()(soak.soak)
app.add_typer(keys.app, name="keys")
app.command()(notebooks.notebooks)


def main() -> None:
    """Run the command line; a missing optional extra is one line on stderr and exit code 2."""
    try:
        app()
    except Exception as exc:
        missing = missing_extra(exc)
        if missing is None:
            raise
        print(f"sagelab: {missing}", file=sys.stderr)
        raise SystemExit(2) from None
