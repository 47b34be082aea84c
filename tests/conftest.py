"""Shared fixtures: a real bundled server on a free port, with its SQLite store in tmp."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sagelab.config import ServerConfig, load_config
from sagelab.server.app import BackgroundServer, SagelabServer

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "data" / "speech"


@pytest.fixture
def speech_dir() -> Path:
    return SPEECH


@pytest.fixture
def server_config(tmp_path: Path) -> ServerConfig:
    """The bundled ``scripted`` agent, on port 0, storing into this test's tmp dir."""
    config = load_config(
        None,
        env={},
        port=0,
        store_path=str(tmp_path / "store.sqlite3"),
        ping_interval_s=0.2,
    )
    config.agents = [a for a in config.agents if a.id == "scripted"]
    return config


@pytest.fixture
async def server(server_config: ServerConfig) -> AsyncIterator[SagelabServer]:
    async with SagelabServer(server_config) as srv:
        yield srv


@pytest.fixture
def bg_server(server_config: ServerConfig) -> Iterator[SagelabServer]:
    """A server on its own thread, for the synchronous official SDK."""
    with BackgroundServer(server_config) as srv:
        yield srv
