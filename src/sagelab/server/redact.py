"""Keep credentials out of logs: API keys, signed-URL signatures, bearer tokens.

A signed URL is a credential until it expires, and websockets logs request paths and headers
at debug level, so redaction happens on every formatted log line the server produces, not by
remembering to leave secrets out of each message. ``RedactingLogger`` wraps the logger handed
to websockets; ``install`` adds the same filter to the root handlers (``sagelab serve`` does),
which covers sagelab's own loggers and any library's.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "<redacted>"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Query parameters: ?conversation_signature=…&token=…&api_key=…&resume_token=…
    (
        re.compile(
            r"(?i)\b(conversation_signature|signature|resume_?token|token|api[_-]?key|xi-api-key"
            r"|secret)"
            r"(=|%3D)[^&\s\"'<>]+"
        ),
        rf"\1\2{REDACTED}",
    ),
    # Header lines and dicts: "xi-api-key: sk_…", "'xi-api-key': 'sk_…'", Authorization: Bearer …
    (
        re.compile(
            r"(?i)\b(xi-api-key|authorization)(['\"]?\s*[:,]\s*['\"]?)"
            r"(?:(?:bearer|basic)\s+)?[^\s'\",}]+"
        ),
        rf"\1\2{REDACTED}",
    ),
    # JSON bodies of the signed-URL route.
    (re.compile(r"(?i)(\"signed_url\"\s*:\s*\")[^\"]+"), rf"\1{REDACTED}"),
)


def redact(text: str) -> str:
    """``text`` with every credential-looking value replaced by ``<redacted>``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactFilter(logging.Filter):
    """Rewrites each record's message, formatted with its arguments, without credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it for the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger for websockets whose lines are redacted before any handler sees them."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args!r}"
        self.logger.log(level, redact(text), **kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info, **kwargs)


def install(logger: logging.Logger | None = None) -> None:
    """Add the redaction filter to every handler of ``logger`` (default: the root logger)."""
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
