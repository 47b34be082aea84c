"""The widgets' JavaScript and CSS, shipped as package data and bundled per widget.

anywidget loads one ES module per widget, from a string, so modules cannot import each other by
path. The sources are plain scripts (classes and functions, no imports) that are concatenated in
dependency order, with the AudioWorklet's source embedded as a string for ``addModule``; only the
last file of a bundle exports the view.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

_PACKAGE = "sagelab.notebook"


@cache
def source(name: str) -> str:
    """One file of ``sagelab/notebook/js``."""
    return resources.files(_PACKAGE).joinpath("js", name).read_text(encoding="utf-8")


def bundle(*names: str) -> str:
    """The ES module of a view: the worklet source as ``WORKLET_SOURCE``, then ``names``."""
    parts = [f"const WORKLET_SOURCE = {json.dumps(source('worklet.js'))};"]
    parts += [f"// ---- {name}\n{source(name)}" for name in names]
    return "\n".join(parts)


def css() -> str:
    return source("widgets.css")
