"""API keys and signed conversation URLs.

Two ways in, as in the ConvAI protocol (convai-protocol.md §1.3): a request carries an API key
(``xi-api-key``), or a WebSocket URL carries a ``conversation_signature`` that the signed-URL
route handed out to an API-key holder. The server decides per route which one it requires.

Signatures are stateless so any server process with the secret can check them without shared
storage: the token itself holds its expiry, a random nonce, a fingerprint of the agent and the id
of the API key it was issued to (so per-key session limits apply to signed sessions too), all
covered by an HMAC-SHA256. Only the optional single-use check keeps state, and only until the
tokens it remembers expire.

API keys are kept as SHA-256 digests, so a config file may list ``sha256:<hex>`` instead of the
secret. A plain hash (no salt, no stretching) is right here: keys are long random strings, not
passwords a dictionary could guess.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import math
import re
import secrets
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ALREADY_USED",
    "BAD_SIGNATURE",
    "EXPIRED",
    "MALFORMED",
    "WRONG_AGENT",
    "ApiKey",
    "ApiKeyStore",
    "AuthError",
    "SignedUrlSigner",
    "hash_key",
]

MALFORMED: Final = "malformed token"
BAD_SIGNATURE: Final = "bad signature"
WRONG_AGENT: Final = "wrong agent"
EXPIRED: Final = "expired"
ALREADY_USED: Final = "already used"


class AuthError(Exception):
    """A credential was refused; ``reason`` is short and safe to show to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Token layout (81 bytes, 108 base64url characters):
#   version (1) | expiry, ms since the epoch (8, big-endian) | nonce (15) | agent fingerprint (16)
#   | API key id (9, zeros when issued without a key) | HMAC-SHA256 of the above (32)
# 81 is a multiple of 3, so the base64 form has no padding and no unused bits: every 108-character
# string decodes to exactly one token, and changing any character changes the bytes.
_VERSION: Final = 2
_HEADER: Final = struct.Struct(">BQ15s16s9s")
_KEY_ID_SIZE: Final = 9
_NO_KEY: Final = bytes(_KEY_ID_SIZE)
_MAC_SIZE: Final = hashlib.sha256().digest_size
_TOKEN_SIZE: Final = _HEADER.size + _MAC_SIZE
_TOKEN_CHARS: Final = _TOKEN_SIZE // 3 * 4
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)
# Domain separation: MACs made with the same secret for another purpose are never valid tokens.
_MAC_CONTEXT: Final = b"sagelab/conversation_signature\x00"
_MAX_EXPIRY_MS: Final = 2**64 - 1


class SignedUrlSigner:
    """Issues and checks ``conversation_signature`` tokens for one agent each.

    ``secret`` should be random and at least 32 bytes (``secrets.token_bytes(32)``); every
    process that verifies must share it. Tokens expire ``ttl_s`` seconds after signing (the
    ConvAI default is 15 minutes). Single-use checking (``consume=True``) is per process.
    """

    def __init__(self, secret: bytes, ttl_s: float = 900) -> None:
        if not isinstance(secret, bytes | bytearray) or not secret:
            raise ValueError("the signing secret must be non-empty bytes")
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
        self._secret = bytes(secret)
        self._ttl_s = float(ttl_s)
        self._lock = threading.Lock()
        self._used: set[bytes] = set()
        self._used_expiry: list[tuple[int, bytes]] = []  # heap: the next nonce to forget first

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    @property
    def remembered_nonces(self) -> int:
        """Nonces kept for replay checks; only tokens that have not expired yet are kept."""
        return len(self._used)

    def sign(self, agent_id: str, now: float | None = None, *, key_id: str | None = None) -> str:
        """A new token for ``agent_id``, valid until ``now + ttl_s``, issued to ``key_id``
        (an :attr:`ApiKey.key_id`) when the request carried an API key."""
        expires_ms = math.floor((_now(now) + self._ttl_s) * 1000)
        if not 0 <= expires_ms <= _MAX_EXPIRY_MS:
            raise ValueError("expiry out of range")
        subject = _NO_KEY if key_id is None else _key_id_bytes(key_id)
        body = _HEADER.pack(
            _VERSION, expires_ms, secrets.token_bytes(15), _fingerprint(agent_id), subject
        )
        return base64.urlsafe_b64encode(body + self._mac(body)).decode("ascii")

    def verify(
        self,
        token: str,
        agent_id: str,
        now: float | None = None,
        *,
        consume: bool = False,
        unused: bool = False,
    ) -> str | None:
        """Accept the token for ``agent_id`` or raise ``AuthError`` saying why not; returns the
        id of the API key it was issued to (None: issued without one).

        Checks run from cheap to stateful, and nothing in the token is trusted before its
        signature is: malformed, bad signature, wrong agent, expired, then (with ``consume``)
        already used. A token is expired from its expiry instant on. With ``consume=True`` an
        accepted token is remembered until it expires, and presenting it again fails.
        ``unused=True`` fails for a token already used without spending this one: for a
        caller that spends it later, once it knows the request will be served.
        """
        raw = _decode(token)
        body, mac = raw[: _HEADER.size], raw[_HEADER.size :]
        version, expires_ms, nonce, fingerprint, subject = _HEADER.unpack(body)
        if version != _VERSION:
            raise AuthError(MALFORMED)
        if not hmac.compare_digest(mac, self._mac(body)):
            raise AuthError(BAD_SIGNATURE)
        if not hmac.compare_digest(fingerprint, _fingerprint(agent_id)):
            raise AuthError(WRONG_AGENT)
        now_ms = _now(now) * 1000
        if now_ms >= expires_ms:
            raise AuthError(EXPIRED)
        if consume:
            self._consume(nonce, expires_ms, now_ms)
        elif unused:
            with self._lock:
                if nonce in self._used:
                    raise AuthError(ALREADY_USED)
        return None if subject == _NO_KEY else subject.hex()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, _MAC_CONTEXT + body, hashlib.sha256).digest()

    def _consume(self, nonce: bytes, expires_ms: int, now_ms: float) -> None:
        with self._lock:
            # Forget nonces whose tokens have expired: those fail as "expired" anyway, so the
            # memory held is bounded by the tokens issued within one TTL.
            while self._used_expiry and self._used_expiry[0][0] <= now_ms:
                self._used.discard(heapq.heappop(self._used_expiry)[1])
            if nonce in self._used:
                raise AuthError(ALREADY_USED)
            self._used.add(nonce)
            heapq.heappush(self._used_expiry, (expires_ms, nonce))


def hash_key(key: str) -> str:
    """The ``sha256:<hex>`` form of an API key, to put in config files instead of the key."""
    if not key:
        raise ValueError("an API key must not be empty")
    return f"sha256:{_sha256(key).hex()}"


@dataclass(frozen=True)
class ApiKey:
    """A configured key as the server knows it: never the key itself.

    ``key_id`` is derived from the key's digest and is safe to log, store and put in signed
    URLs; ``name`` is the operator's label (default ``key-<first 8 of key_id>``);
    ``max_sessions`` is this key's own concurrent-session limit (None: the server default).
    """

    key_id: str
    name: str
    max_sessions: int | None = None
    digest: bytes = b""

    def __repr__(self) -> str:
        return f"ApiKey(name={self.name!r}, key_id={self.key_id!r})"


class ApiKeyStore:
    """The API keys a server accepts, held only as SHA-256 digests.

    Each configured entry is the key itself, its ``sha256:<64 hex digits>`` form (see
    ``hash_key``), or a mapping ``{key: ..., name: ..., max_sessions: ...}`` (or an object with
    those attributes, like ``config.ApiKeySpec``); a key that really starts with ``sha256:``
    must be given hashed. An empty store accepts nothing: whether a route needs a key is the
    server's decision.
    """

    def __init__(self, keys: Iterable[Any] = ()) -> None:
        self._keys: tuple[ApiKey, ...] = tuple(_parse_key(entry) for entry in keys)
        self._by_id = {k.key_id: k for k in self._keys}

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"ApiKeyStore(<{len(self)} keys>)"

    def identify(self, key: str | None) -> ApiKey | None:
        """The configured key ``key`` is, or None.

        Every configured digest is compared in constant time, without stopping at a match,
        so timing reveals neither which key matched nor how much of one.
        """
        if not key:
            return None
        candidate = _sha256(key)
        found: ApiKey | None = None
        for entry in self._keys:
            if hmac.compare_digest(candidate, entry.digest):
                found = entry
        return found

    def check(self, key: str | None) -> bool:
        """Whether ``key`` is one of the configured keys."""
        return self.identify(key) is not None

    def by_id(self, key_id: str | None) -> ApiKey | None:
        """The key a signed URL was issued to; None when it was removed from the config."""
        return self._by_id.get(key_id) if key_id else None

    hash_key = staticmethod(hash_key)


def _parse_key(entry: Any) -> ApiKey:
    name: str | None = None
    limit: int | None = None
    if isinstance(entry, Mapping):
        key, name, limit = entry.get("key"), entry.get("name"), entry.get("max_sessions")
    elif isinstance(entry, str):
        key = entry
    else:
        key = getattr(entry, "key", None)
        name, limit = getattr(entry, "name", None), getattr(entry, "max_sessions", None)
    if not isinstance(key, str):
        raise ValueError("an API key entry needs a 'key' (plain or sha256:<hex>)")
    digest = _parse_entry(key)
    key_id = hashlib.sha256(b"sagelab/key-id\x00" + digest).digest()[:_KEY_ID_SIZE].hex()
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"max_sessions of API key {name or key_id} must be a positive integer")
    return ApiKey(
        key_id=key_id, name=name or f"key-{key_id[:8]}", max_sessions=limit, digest=digest
    )


def _parse_entry(entry: str) -> bytes:
    if not isinstance(entry, str) or not entry:
        raise ValueError("an API key must be a non-empty string")
    if entry.startswith("sha256:"):
        digest = entry.removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise ValueError("a hashed API key must be 'sha256:' followed by 64 hex digits")
        return bytes.fromhex(digest)
    return _sha256(entry)


def _sha256(key: str) -> bytes:
    # surrogatepass: header values can carry lone surrogates; a bad key must fail, not raise.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _key_id_bytes(key_id: str) -> bytes:
    try:
        subject = bytes.fromhex(key_id)
    except (TypeError, ValueError):
        subject = b""
    if len(subject) != _KEY_ID_SIZE or subject == _NO_KEY:
        raise ValueError(f"key_id must be {_KEY_ID_SIZE * 2} hex digits, not all zero")
    return subject


def _fingerprint(agent_id: str) -> bytes:
    # 128 bits of SHA-256: enough that no two agent ids share one, and the token stays fixed-size.
    return hashlib.sha256(b"agent\x00" + agent_id.encode("utf-8", "surrogatepass")).digest()[:16]


def _decode(token: str) -> bytes:
    if not isinstance(token, str) or len(token) != _TOKEN_CHARS or not _BASE64URL.fullmatch(token):
        raise AuthError(MALFORMED)
    return base64.urlsafe_b64decode(token)


def _now(now: float | None) -> float:
    return time.time() if now is None else now
