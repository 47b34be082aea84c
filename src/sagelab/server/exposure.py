"""What a running server exposes, and to whom: the lines ``sagelab serve`` logs at start.

Secure defaults only help an operator who knows which ones were changed. Printing the bind
address, the browser origins let in, the key requirements per agent and TLS at every start
makes an exposed server visible in its own log, and binding beyond loopback without API keys
(anyone who reaches the port can open sessions, edit agents and read metrics) gets a warning.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sagelab.server.app import SagelabServer


def is_loopback_bind(host: str) -> bool:
    """Whether the bind address only accepts connections from this machine."""
    if host.lower() in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def summary(server: SagelabServer) -> list[str]:
    config = server.config
    keys = len(server.api_keys)
    reach = (
        "this machine only (loopback)" if is_loopback_bind(config.host) else "other machines too"
    )
    if "*" in config.allowed_origins:
        origins = "any web page (allowed_origins: '*')"
    elif config.allowed_origins:
        origins = ", ".join(config.allowed_origins)
    else:
        origins = "pages served from loopback only"
    lines = [
        f"exposure: bound to {config.host}:{server.port}, reachable from {reach}; "
        f"TLS {'on' if server.tls else 'off'}",
        f"exposure: browser origins allowed: {origins}",
        (
            f"exposure: {keys} API key(s); the REST API, /metrics and /healthz details need one"
            if keys
            else "exposure: no API keys; anyone who can reach the port may open sessions "
            "with public agents, use the REST API and read /metrics"
        ),
    ]
    for spec in config.agents:
        access = "API key or signed URL" if spec.requires_auth else "anyone"
        overrides = ", ".join(spec.allowed_overrides) or "none"
        lines.append(f"exposure: agent {spec.id}: sessions by {access}; overrides: {overrides}")
    return lines


def warning(server: SagelabServer) -> str | None:
    """The loud line for a server bound beyond loopback without API keys, else None."""
    if is_loopback_bind(server.config.host) or len(server.api_keys):
        return None
    return (
        f"SAGELAB IS EXPOSED: bound to {server.config.host} with no API keys, so anyone on "
        "the network can open sessions, call its tools and edit agents. Add api_keys (and "
        "requires_auth on private agents), or bind to 127.0.0.1"
    )
