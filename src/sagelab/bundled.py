"""The files shipped inside the package: agents file, speech set, scenarios, demo data, actions.

Everything sagelab reads by default lives under ``sagelab/assets/`` and is found with
:mod:`importlib.resources`, so the commands work the same from a source checkout and from an
installed wheel in an empty folder. These files are read-only: a command that changes one (the
demo database) copies it to its run folder first and never writes inside the package.

Layout of ``assets/``::

    agents.yaml        the bundled agents (``scripted``, ``audio-sage``)
    audio/             the scripted agent's replies
    actions/demo.yaml  the demo application's actions (tools)
    demo/              the demo conversation, its spoken user turns and the database seed
    scenarios/         the bundled scenarios (``sagelab bench run``)
    speech/            real recorded English with reference transcripts (``manifest.jsonl``)

``SAGELAB_DATA`` points :func:`data_dir` at another folder with the same layout (your own
speech set or scenarios) without changing any command line.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["asset", "assets_dir", "data_dir"]


def assets_dir() -> Path:
    """The package's ``assets/`` folder as a file-system path.

    pip always unpacks wheels, so the resource is a real folder; a zipped install (which the
    audio libraries could not read from anyway) is refused with a clear message.
    """
    root = resources.files("sagelab").joinpath("assets")
    if not isinstance(root, Path) or not root.is_dir():
        raise RuntimeError(
            f"sagelab's bundled files are not on the file system ({root}); "
            "install sagelab unpacked (pip install), not as a zip"
        )
    return root


def asset(*parts: str) -> Path:
    """One bundled file or folder, e.g. ``asset("speech", "goforward.wav")``."""
    return assets_dir().joinpath(*parts)


def data_dir() -> Path:
    """Where the commands look for speech, scenarios and the demo by default.

    ``SAGELAB_DATA`` if set (a folder laid out like ``assets/``), else the bundled files.
    """
    env = os.environ.get("SAGELAB_DATA")
    return Path(env) if env else assets_dir()
