"""Who may open a session: API keys, signed URLs and browser Origins, checked at the edge.

The rules, in the order they are applied:

- ``Origin`` (browsers only; other clients send none): when ``allowed_origins`` is set, a
  WebSocket handshake from any other origin gets HTTP 403 before it is upgraded.
- ``xi-api-key`` header: when the server has keys, a key that is presented must be one of them
  (a wrong key is refused even for a public agent: it is a client bug worth reporting). With no
  keys configured the header is ignored, so local clients can send anything.
- ``conversation_signature``: a presented signature must verify for this agent, unexpired and
  unused; it carries the API key it was issued to.
- ``requires_auth`` agents need one of the two: a valid signature or a valid key header.

The API key a session runs under (from either way in) is what its per-key limit counts against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

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
            key_id = server.signer.verify(signature, agent_id, consume=True)
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


def origin_allowed(server: SagelabServer, origin: str | None) -> bool:
    """Whether a WebSocket handshake's ``Origin`` may connect; no header (not a browser) may."""
    allowed = server.config.allowed_origins
    if not allowed or origin is None:
        return True
    return "*" in allowed or origin.rstrip("/") in {o.rstrip("/") for o in allowed}
