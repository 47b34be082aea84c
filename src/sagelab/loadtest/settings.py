"""What every load-test user of a run does, decided once on the master and sent to each worker.

A worker on another machine shares nothing with the master but locust's connection: not its
environment, not its disk. So the master reads the run's settings (agent, silence, speech…)
from its own environment (``SAGELAB_*``, set by ``sagelab loadtest``) and sends them to each
worker as it joins (:meth:`UserSettings.to_message`). The speech travels by name when it is one
of the recordings shipped in this package (every worker has its own copy), and as bytes when
the user chose a file of their own, so no worker ever opens a path of the master's.

The API key for ``--signed-url`` is sent only when the master listens on a loopback address:
locust's channel is neither encrypted nor authenticated, so across machines each worker takes
the key from its own environment (``SAGELAB_API_KEY`` or ``ELEVENLABS_API_KEY``) instead.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

#: Recordings shipped in ``sagelab/loadtest/speech`` (``bundled:<name>`` in settings):
#: "go forward ten meters" (pocketsphinx test data, BSD-2-Clause) and "Search for customers in
#: Oslo." (sagelab's own demo user, synthesised with Piper).
BUNDLED_SPEECH = ("goforward.wav", "search.wav")
BUNDLED_PREFIX = "bundled:"


def bundled_speech(name: str) -> bytes:
    """A recording shipped with the package, read from the installed package (wheel or not)."""
    if name not in BUNDLED_SPEECH:
        raise ValueError(f"no bundled recording {name!r}; choose one of {BUNDLED_SPEECH}")
    return resources.files("sagelab.loadtest").joinpath("speech", name).read_bytes()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name the master binds) never leaves this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class UserSettings:
    """The users' behaviour; ``speech`` is ``bundled:<name>`` or a path on the master."""

    agent: str = "scripted"
    user_class: str = ""  # the one class to prepare a microphone for; "" = every class
    signed_url: bool = False
    api_key: str | None = None
    speech: str = BUNDLED_PREFIX + "goforward.wav"
    gap_ms: int = 2500
    lead_ms: int = 0
    relay_session_s: float = 60.0
    # Filled on a worker from the message: the recording itself when it is not bundled.
    speech_bytes: bytes | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> UserSettings:
        env = os.environ if env is None else env
        return cls(
            agent=env.get("SAGELAB_AGENT", "scripted"),
            user_class=env.get("SAGELAB_USER_CLASS", ""),
            signed_url=env.get("SAGELAB_SIGNED_URL", "") not in ("", "0"),
            api_key=env.get("SAGELAB_API_KEY") or env.get("ELEVENLABS_API_KEY") or None,
            speech=env.get("SAGELAB_SPEECH") or cls.speech,
            gap_ms=int(env.get("SAGELAB_GAP_MS", "2500")),
            lead_ms=int(env.get("SAGELAB_LEAD_MS", "0")),
            relay_session_s=float(env.get("SAGELAB_RELAY_SESSION_S", "60")),
        )

    def audio(self) -> bytes:
        """The recording's bytes: from the package, the message, or (standalone) the path."""
        if self.speech_bytes is not None:
            return self.speech_bytes
        if self.speech.startswith(BUNDLED_PREFIX):
            return bundled_speech(self.speech.removeprefix(BUNDLED_PREFIX))
        path = Path(self.speech)
        if not path.is_file():
            raise FileNotFoundError(f"speech recording not found: {path}")
        return path.read_bytes()

    def to_message(self, *, include_key: bool) -> dict[str, Any]:
        """The settings as a worker needs them (msgpack-able); see the module docstring."""
        data = asdict(self)
        data["speech_bytes"] = None
        if not self.speech.startswith(BUNDLED_PREFIX):
            data["speech_bytes"] = base64.b64encode(self.audio()).decode("ascii")
        if not include_key:
            data["api_key"] = None
        return data

    @classmethod
    def from_message(
        cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> UserSettings:
        """A worker's settings: the master's, with the key from its own env if none came."""
        env = os.environ if env is None else env
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        raw = fields.pop("speech_bytes", None)
        settings = cls(**fields)
        if raw is not None:
            settings = replace(settings, speech_bytes=base64.b64decode(raw))
        if not settings.api_key:
            key = env.get("SAGELAB_API_KEY") or env.get("ELEVENLABS_API_KEY") or None
            settings = replace(settings, api_key=key)
        return settings
