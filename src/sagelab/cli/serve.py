"""``sagelab serve``: the bundled ConvAI-compatible server in the foreground."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from sagelab.cli.common import ConfigOpt, console


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
