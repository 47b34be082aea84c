"""The one error type for model weights that cannot be loaded.

Loading happens once per process, usually at server start, far from the code that configured
it; a bare ``FileNotFoundError`` or an ONNX/CTranslate2 traceback there says nothing about
which setting to change. :class:`ModelLoadError` always names the path (or model name) it
tried and how to get working weights, so the message alone is enough to fix the setup.
"""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """Weights missing, unreadable or not the expected kind; the message says how to fix it."""
