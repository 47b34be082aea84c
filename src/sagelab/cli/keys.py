"""``sagelab keys``: make API keys and the hashed form the agents file stores."""

from __future__ import annotations

from typing import Annotated

import typer

from sagelab.cli.common import console

app = typer.Typer(help="API keys for the server's configuration.", no_args_is_help=True)


@app.command("hash")
def keys_hash(
    key: Annotated[
        str | None, typer.Argument(help="The key; default: read it from stdin (no shell history)")
    ] = None,
) -> None:
    """Print the ``sha256:<hex>`` form of an API key, for ``api_keys`` in the agents file."""
    import sys

    from sagelab.server.auth import hash_key

    if key is None:
        key = typer.prompt("API key", hide_input=True) if sys.stdin.isatty() else sys.stdin.read()
    key = key.strip()
    if not key:
        console.print("[red]empty key:[/] pass the key as an argument or on stdin")
        raise typer.Exit(2)
    print(hash_key(key))


@app.command("new")
def keys_new(
    name: Annotated[str | None, typer.Option(help="A label for the key in the config")] = None,
) -> None:
    """Make a random API key; print it once, and the config entry that stores only its hash."""
    import secrets

    from sagelab.server.auth import hash_key

    key = f"sk_sage_{secrets.token_urlsafe(32)}"
    entry = f"  - {{key: {hash_key(key)}" + (f", name: {name}}}" if name else "}")
    # Plain print: rich would wrap the key at the terminal width and break copy-paste.
    print(f"key (shown once, give it to the client): {key}")
    print(f"agents file:\napi_keys:\n{entry}")
