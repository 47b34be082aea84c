"""TLS for ``wss://`` and ``https://``: one certificate and key from the configuration.

The server terminates TLS itself so a single process can be exposed without a proxy (a demo on
a LAN, a browser that refuses ``ws://`` from an ``https://`` page). Behind a TLS-terminating
proxy, leave it off and set ``public_url`` so signed URLs say ``wss://``.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sagelab.config import ServerConfig

_HOW = (
    "set tls_certfile (PEM, the certificate chain) and tls_keyfile (PEM, its private key); "
    "for a test certificate: openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
    "-nodes -days 30 -subj /CN=localhost -keyout key.pem -out cert.pem"
)


class TlsConfigError(ValueError):
    """The certificate or key cannot be used; the message says which file and how to fix it."""


def server_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The server's TLS context, or None when TLS is off (no ``tls_certfile``)."""
    if not config.tls_certfile:
        if config.tls_keyfile:
            raise TlsConfigError(f"tls_keyfile is set but tls_certfile is not; {_HOW}")
        return None
    cert = config.resolve_path(config.tls_certfile)
    key = config.resolve_path(config.tls_keyfile) if config.tls_keyfile else None
    for label, path in (("tls_certfile", cert), ("tls_keyfile", key)):
        if path is not None and not path.is_file():
            raise TlsConfigError(f"{label} {path} does not exist; {_HOW}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(
            f"cannot load the TLS certificate {cert} with key {key or cert}: {exc}; {_HOW}"
        ) from exc
    return context
