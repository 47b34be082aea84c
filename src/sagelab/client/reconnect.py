"""``ReconnectPolicy``: how a ``Session`` survives a dropped connection.

A dropped connection is not a finished conversation: a sagelab server holds a resumable one for
its ``resume_grace_s`` (``sagelab.server.resume``). The policy says how hard to try to get back
to it, and what to do when that is impossible (the token was refused, the server restarted, or
the server is not sagelab's and gave no token at all).

Backoff is exponential with jitter, so a server that drops many clients at once is not hit by
all of them again in the same instant: attempt ``n`` waits
``min(max_backoff_s, initial_backoff_s * multiplier ** (n - 1))``, scaled down by a random
factor in ``[1 - jitter, 1]`` (``jitter=1`` is "full jitter", ``0`` none).
"""

from __future__ import annotations

import math
import random
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# The wire side of sagelab's resume extension (sagelab.server.resume), per protocol:
# the query parameter that asks for a token, and the one that presents it.
RESUME_PARAMS = {"convai": ("sagelab_resume", "resume_token"), "relay": ("resume", "resumeToken")}
RESUME_REFUSED = 4002  # the close code of a refused resume, on both protocols
# Abnormal ends worth a reconnect: no close frame at all, the server going away or restarting.
RECONNECT_CLOSE_CODES = frozenset({1006, 1001, 1012})


@dataclass(frozen=True)
class ReconnectPolicy:
    """Reconnect on an abnormal close: no close frame (1006), 1001 going away, 1012 restart.

    ``new_conversation``: when the conversation cannot be resumed, start a new one with the
    same settings (recorded as ``reconnected_new``) instead of ending the session with a
    ``SessionError``. Off by default: a test usually wants to know that its conversation is
    gone, not to carry on in a different one.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5
    new_conversation: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(
                f"max_attempts must be >= 1, got {self.max_attempts}; "
                "pass reconnect=None to never reconnect"
            )
        for name in ("initial_backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(
                f"max_backoff_s ({self.max_backoff_s}) must be >= initial_backoff_s "
                f"({self.initial_backoff_s})"
            )
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if not (0 <= self.jitter <= 1):
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter!r}")

    def delays(self) -> list[float]:
        """The wait before each attempt, jitter drawn from ``seed`` (fresh ones each call)."""
        rng = random.Random(self.seed)
        waits = []
        for attempt in range(self.max_attempts):
            base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**attempt)
            waits.append(base * (1 - self.jitter * rng.random()))
        return waits


def resume_query(protocol: str) -> tuple[str, str]:
    """``(ask, present)``: the query parameters that ask for a resume token and present one."""
    return RESUME_PARAMS[protocol]


def with_query(url: str, add: Mapping[str, str], drop: Iterable[str] = ()) -> str:
    """``url`` with the ``add`` parameters set (replacing any of the same name), ``drop`` gone."""
    split = urllib.parse.urlsplit(url)
    gone = set(add) | set(drop)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(split.query, keep_blank_values=True)]
    query = [(k, v) for k, v in query if k not in gone] + list(add.items())
    return urllib.parse.urlunsplit(
        split._replace(query=urllib.parse.urlencode(query, quote_via=urllib.parse.quote))
    )
