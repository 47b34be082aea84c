"""Who may open a session: API keys, signed URLs and browser Origins, checked at the edge.

The rules, in the order they are applied:

- One ``Host``, ``Origin`` and ``xi-api-key`` header at most: a request that repeats one is
  refused with 400 (two values for a credential or an origin mean a confused or hostile client).
- ``Host`` (every HTTP request and handshake): a name this server is reached by, so a DNS
  rebinding page (its own domain pointed at 127.0.0.1) is refused with 421. Accepted: any IP
  literal, ``localhost``, the bind address, this machine's host name, ``public_url``'s host and
  ``allowed_hosts``.
- ``Origin`` (browsers only; other clients send none): the WebSocket routes and the REST API
  refuse a browser page whose origin is not allowed, with 403 before anything else happens.
  With ``allowed_origins`` empty, only pages served from loopback (``http://localhost:*``,
  ``http://127.0.0.1:*``, ``http://[::1]:*``) are allowed; ``"*"`` allows every origin.
- ``xi-api-key`` header: when the server has keys, a key that is presented must be one of them
  (a wrong key is refused even for a public agent: it is a client bug worth reporting). With no
  keys configured the header is ignored, so local clients can send anything.
- ``conversation_signature``: a presented signature must verify for this agent, unexpired and
  unused; it carries the API key it was issued to.
- ``requires_auth`` agents need one of the two: a valid signature or a valid key header.

The API key a session runs under (from either way in) is what its per-key limit counts against.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from sagelab.server.auth import ApiKey, AuthError

if TYPE_CHECKING:
    from sagelab.server.app import SagelabServer

SIGNED_URL_ROUTE = "/v1/convai/conversation/get-signed-url"


class AccessDenied(Exception):
    """Refused credentials; the message is safe to show (it never repeats a credential)."""


def authenticate(
    server: SagelabServer,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    agent_id: str,
    requires_auth: bool,
) -> ApiKey | None:
    """The API key the session runs under (None: anonymous), or ``AccessDenied``."""
    key: ApiKey | None = None
    presented = headers.get("xi-api-key")
    if presented and len(server.api_keys):
        key = server.api_keys.identify(presented)
        if key is None:
            raise AccessDenied(
                "the xi-api-key header is not a key of this server; send a configured key "
                "or no header at all"
            )
    signature = query.get("conversation_signature")
    signed = False
    if signature:
        try:
            # A signed URL is spent only when the session will get a slot: a client refused
            # for capacity keeps its URL and may retry with it. The route reserves right
            # after this returns, with no await in between, so the check cannot go stale.
            key_id = server.signer.verify(signature, agent_id, unused=True)
            if server.registry.has_room(server.api_keys.by_id(key_id) if key is None else key):
                server.signer.verify(signature, agent_id, consume=True)
        except AuthError as exc:
            raise AccessDenied(
                f"conversation_signature refused ({exc.reason}); signed URLs are single-use "
                f"and expire after {server.signer.ttl_s:g} s: get a fresh one from "
                f"GET {SIGNED_URL_ROUTE}"
            ) from None
        signed = True
        if key is None and key_id is not None:
            key = server.api_keys.by_id(key_id)
            if key is None:
                raise AccessDenied(
                    "the signed URL was issued to an API key this server no longer accepts; "
                    f"get a fresh one from GET {SIGNED_URL_ROUTE}"
                )
    if requires_auth and not signed and key is None:
        how = f"a signed URL (GET {SIGNED_URL_ROUTE} with an xi-api-key header)"
        if len(server.api_keys):
            how += " or an xi-api-key header on the WebSocket request"
        raise AccessDenied(f"agent {agent_id!r} requires authentication: connect with {how}")
    return key


LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
SINGLE_HEADERS = ("Host", "Origin", "xi-api-key")


class HeaderSource(Protocol):
    def get_all(self, key: str) -> list[str]: ...


@dataclass(frozen=True)
class Refusal:
    """An HTTP refusal at the edge: status, the ElevenLabs-style error code, a message."""

    status: int
    code: str
    message: str


def check_request(
    server: SagelabServer, headers: HeaderSource, *, browser_sensitive: bool
) -> Refusal | None:
    """The edge checks every HTTP request and handshake passes, in order; None: passed.

    ``browser_sensitive``: the route acts for whoever calls it (a WebSocket session, the REST
    API, a signed URL), so a foreign browser page must not reach it.
    """
    for name in SINGLE_HEADERS:
        if len(headers.get_all(name)) > 1:
            return Refusal(400, "duplicate_header", f"the {name} header may appear only once")
    hosts = headers.get_all("Host")
    if hosts and not host_allowed(server, hosts[0]):
        return Refusal(
            421,
            "host_not_allowed",
            f"this server does not answer to Host {hosts[0][:100]!r}; reach it by its address, "
            "or add the name to allowed_hosts (or set public_url) in the server configuration",
        )
    origins = headers.get_all("Origin")
    if browser_sensitive and origins and not origin_allowed(server, origins[0]):
        return Refusal(
            403,
            "origin_not_allowed",
            f"Origin {origins[0][:100]!r} may not use this server; add it to allowed_origins "
            "in the server configuration (by default only pages served from loopback may)",
        )
    return None


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, without its port or IPv6 brackets, lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(server: SagelabServer, host_header: str) -> bool:
    """Whether a request's ``Host`` names this server rather than someone else's domain.

    IP literals are always accepted: a DNS rebinding page runs under its own domain name, and
    a page under an IP address is a page the user loaded from that address.
    """
    name = host_name(host_header)
    if not name or _is_ip(name) or name in LOOPBACK_NAMES:
        return True
    return name in known_host_names(server)


def known_host_names(server: SagelabServer) -> set[str]:
    config = server.config
    names = {config.host.lower(), *(h.lower() for h in config.allowed_hosts)}
    if config.public_url:
        names.add((urlsplit(config.public_url).hostname or "").lower())
    if config.host in ("0.0.0.0", "::", ""):
        # Bound to every interface: the machine's own names reach it too.
        hostname = socket.gethostname().lower()
        names |= {hostname, f"{hostname}.local"}
    return names


def is_loopback_origin(origin: str) -> bool:
    """``http(s)://localhost|127.x.y.z|[::1][:port]``: a page served from this machine."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https"):
        return False
    host = (parts.hostname or "").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_allowed(server: SagelabServer, origin: str | None) -> bool:
    """Whether a request's ``Origin`` may use the server; no header (not a browser) may.

    With ``allowed_origins`` empty only loopback pages may: any other web page a user opens
    could otherwise drive a local server, since browsers do not apply CORS to WebSockets and
    send simple POSTs without asking.
    """
    if origin is None:
        return True
    allowed = server.config.allowed_origins
    if "*" in allowed:
        return True
    if origin.rstrip("/") in {o.rstrip("/") for o in allowed}:
        return True
    return not allowed and is_loopback_origin(origin)
