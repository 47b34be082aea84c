"""Server and agent configuration: one agents file (YAML or JSON) plus ``SAGELAB_*`` variables.

The agents file is the single place where an operator says which agents exist, which backend
speaks for each, which tools they may call and which session overrides they accept. Paths inside
it (recorded audio, databases) are resolved relative to the file, so a config directory can be
moved as a whole.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

AUDIO_FORMAT_NAMES = (
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
    "ulaw_8000",
)
OverrideName = Literal["prompt", "first_message", "language", "voice"]


class ConfigError(ValueError):
    """A configuration file or variable is invalid; the message says where and how to fix it."""


class ToolSpec(BaseModel):
    """A tool an agent may call, shaped like an ElevenLabs client tool config."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}, "required": []}
    )
    type: Literal["client", "server"] = "client"
    expects_response: bool = True
    response_timeout_secs: float = 20.0
    # A sagelab setting (ElevenLabs has none like it): the server tool only reads, so the local
    # agent may run it while it drafts a reply, before the user is known to be done. A tool
    # that changes anything must never run for a turn that may not happen.
    read_only: bool = False


class AgentSpec(BaseModel):
    """One agent as the agents file declares it, before per-session overrides."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_\-.]{1,128}$")
    name: str = ""
    prompt: str = ""
    first_message: str = ""
    language: str = "en"
    voice: str | None = None
    tools: list[ToolSpec] = Field(default_factory=list)
    backend: str = "scripted"
    options: dict[str, Any] = Field(default_factory=dict)
    requires_auth: bool = False
    input_format: str = "pcm_16000"
    output_format: str = "pcm_16000"
    # None allowed unless the agents file says so: an override lets any client that may open
    # a session rewrite what the agent is told (its prompt) or says first.
    allowed_overrides: list[OverrideName] = Field(default_factory=list)

    @field_validator("input_format", "output_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in AUDIO_FORMAT_NAMES:
            raise ValueError(f"unknown audio format {value!r}; use one of {AUDIO_FORMAT_NAMES}")
        return value

    def tool(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)


class ApiKeySpec(BaseModel):
    """An API key with a name and its own session limit; ``key`` is plain or ``sha256:<hex>``."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1)
    name: str | None = None
    max_sessions: int | None = Field(default=None, ge=1)


class ServerConfig(BaseModel):
    """Everything ``sagelab serve`` needs; defaults suit a laptop or a CI machine."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    public_url: str | None = Field(
        default=None,
        description="Base URL clients reach the server at (for signed URLs); default: Host header",
    )
    max_sessions: int = Field(default=50, ge=1)
    idle_timeout_s: float = Field(default=60.0, gt=0)
    max_duration_s: float = Field(default=600.0, gt=0)
    ping_interval_s: float = Field(default=1.0, gt=0)
    max_frame_bytes: int = Field(default=256 * 1024, ge=1024)
    client_tool_timeout_s: float = Field(default=20.0, gt=0)
    audio_chunk_ms: int = Field(default=100, ge=10, le=1000)
    audio_lead_ms: int = Field(default=200, ge=0, le=5000)
    api_keys: list[str | ApiKeySpec] = Field(default_factory=list)
    max_sessions_per_key: int | None = Field(default=None, ge=1)
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser Origins allowed on the WebSocket and REST routes; "
        "empty: pages served from loopback only; '*': any",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names clients may use besides IP addresses, localhost, the bind "
        "address and public_url's host (a DNS-rebinding page is refused)",
    )
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    max_audio_bytes_per_s: int | None = Field(
        default=None, ge=1, description="Default: twice the input format's real-time rate"
    )
    audio_burst_s: float = Field(default=5.0, gt=0)
    max_messages_per_s: float = Field(default=200.0, gt=0)
    max_bytes_per_s: int | None = Field(
        default=None, ge=1024, description="Bytes per second across all frames; default 512 KiB"
    )
    initiation_timeout_s: float = Field(default=10.0, gt=0)
    anonymous_initiation_timeout_s: float = Field(
        default=3.0, gt=0, description="For clients that presented no key or signed URL"
    )
    max_starting_anonymous: int | None = Field(
        default=None,
        ge=1,
        description="Anonymous connections that may hold a slot before their first message; "
        "default: half of max_sessions (at least 4)",
    )
    send_timeout_s: float = Field(default=10.0, gt=0)
    socket_send_buffer_bytes: int | None = Field(default=256 * 1024, ge=4096)
    ws_ping_interval_s: float | None = Field(default=20.0, gt=0)
    ws_ping_timeout_s: float | None = Field(default=20.0, gt=0)
    close_timeout_s: float = Field(default=5.0, gt=0)
    signing_secret: str | None = Field(
        default=None,
        min_length=32,
        description="At least 32 bytes, random; default: a fresh one per start",
    )
    signed_url_ttl_s: float = Field(default=900.0, gt=0)
    resume_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="How long a conversation whose client vanished stays resumable; 0: never",
    )
    store_path: str = "runs/sagelab.sqlite3"
    store_audio: bool = False
    audio_dir: str = "runs/audio"
    relay_agent: str = Field(
        default="scripted", description="Agent for /voice-conversation without ?agent_id="
    )
    agents: list[AgentSpec] = Field(default_factory=list)
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("api_keys")
    @classmethod
    def _key_entries(cls, keys: list[str | ApiKeySpec]) -> list[str | ApiKeySpec]:
        for entry in keys:
            key = entry.key if isinstance(entry, ApiKeySpec) else entry
            if not key:
                raise ValueError("an API key must not be empty")
            if key.startswith("sha256:") and not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", key):
                raise ValueError(
                    "a hashed API key is 'sha256:' and 64 hex digits; "
                    "make one with: sagelab keys hash"
                )
        return keys

    @model_validator(mode="after")
    def _auth_needs_keys(self) -> ServerConfig:
        check_auth_has_keys(self)
        return self

    def agent(self, agent_id: str) -> AgentSpec | None:
        return next((a for a in self.agents if a.id == agent_id), None)

    def resolve_path(self, path: str | Path) -> Path:
        """Paths in the agents file are relative to the file, not to the working directory."""
        p = Path(path)
        return p if p.is_absolute() else (self.base_dir / p)


def check_auth_has_keys(config: ServerConfig) -> None:
    """``requires_auth`` with no API key would hand signed URLs to anyone who asks: refuse."""
    private = [a.id for a in config.agents if a.requires_auth]
    if private and not config.api_keys:
        raise ValueError(
            f"agent(s) {', '.join(private)} require authentication but no api_keys are "
            "configured, so anyone could get a signed URL; add api_keys (sagelab keys hash) "
            "or set requires_auth: false"
        )


_ENV_FIELDS = {
    "SAGELAB_HOST": "host",
    "SAGELAB_PORT": "port",
    "SAGELAB_PUBLIC_URL": "public_url",
    "SAGELAB_MAX_SESSIONS": "max_sessions",
    "SAGELAB_IDLE_TIMEOUT_S": "idle_timeout_s",
    "SAGELAB_MAX_DURATION_S": "max_duration_s",
    "SAGELAB_STORE_PATH": "store_path",
    "SAGELAB_SIGNING_SECRET": "signing_secret",
    "SAGELAB_RESUME_GRACE_S": "resume_grace_s",
    "SAGELAB_TLS_CERTFILE": "tls_certfile",
    "SAGELAB_TLS_KEYFILE": "tls_keyfile",
}


def default_config_path() -> Path:
    """The agents file shipped with the package (agents ``scripted`` and ``audio-sage``)."""
    return Path(str(resources.files("sagelab") / "assets" / "agents.yaml"))


def load_config(
    path: str | Path | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> ServerConfig:
    """Read an agents file, then apply ``SAGELAB_*`` variables, then keyword overrides."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"
        ) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with keys like 'agents'")
    env = dict(os.environ) if env is None else env
    for var, field in _ENV_FIELDS.items():
        if var in env:
            raw[field] = env[var]
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        config = ServerConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
    config.base_dir = path.resolve().parent
    ids = [a.id for a in config.agents]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"{path}: agent ids must be unique; repeated: {', '.join(duplicates)}")
    return config


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def substitute_variables(text: str, variables: dict[str, Any]) -> str:
    """Fill ``{{name}}`` placeholders; raises ``KeyError`` naming the first missing variable.

    ElevenLabs ends a session whose prompt references an unset variable
    (``missing_dynamic_variable``), so a missing one is an error, not an empty string.
    """

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise KeyError(name)
        value = variables[name]
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return _VARIABLE.sub(fill, text)
