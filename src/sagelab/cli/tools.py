"""``sagelab tools``: push actions to an agent as client tools, or pull them back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sagelab.cli.common import console

app = typer.Typer(
    help="Push actions to an agent as tools, or pull them back.", no_args_is_help=True
)


@app.command("push")
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


@app.command("pull")
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
