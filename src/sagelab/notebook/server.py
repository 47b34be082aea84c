"""The bundled server started inside a notebook's kernel, writing only into the run's folder.

The bundled agents file keeps the demo database at a relative path (``runs/…``), which would
land wherever the kernel happens to run; a notebook's server puts it, and the conversation
store, in the notebook's own run folder instead (``sagelab.notebook.outputs``), so runs never
share a database and nothing is written beside the notebooks.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from sagelab.config import ServerConfig, load_config


def notebook_config(run_dir: str | Path, **overrides: Any) -> ServerConfig:
    """The bundled agents (port 0: any free one), with the store and every agent's demo
    database inside ``run_dir``. ``overrides`` go to ``load_config``."""
    run_dir = Path(run_dir)
    overrides.setdefault("port", 0)
    overrides.setdefault("store_path", str(run_dir / "store.sqlite3"))
    config = load_config(None, **overrides)
    for i, agent in enumerate(config.agents):
        tools = agent.options.get("server_tools")
        if isinstance(tools, dict) and "database" in tools:
            database = str(run_dir / Path(str(tools["database"])).name)
            options = {**agent.options, "server_tools": {**tools, "database": database}}
            config.agents[i] = agent.model_copy(update={"options": options}, deep=True)
    return config


def start_server(stack: contextlib.ExitStack, config: ServerConfig) -> str:
    """Start ``config``'s server on a background thread until ``stack`` closes; its URL."""
    from sagelab.server.app import BackgroundServer

    return str(stack.enter_context(BackgroundServer(config)).http_url)
