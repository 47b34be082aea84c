"""Where the notebooks read their data and write their results, outside the installed package.

Results: one folder, ``runs/`` beside the notebooks (the kernel's working directory, which
JupyterLab sets to the notebook's folder), or ``SAGELAB_RUNS`` if set. Each run gets its own
``runs/<kind>-<YYYYmmdd-HHMMSS>/``; nothing is ever written inside the package or beside the
notebooks themselves, so a copied set of notebooks stays clean and ``git status`` stays quiet.

Data (speech, scenarios, demo recordings, actions): the package's bundled files through
``sagelab.bundled.data_dir()`` when that module exists (``SAGELAB_DATA`` overrides it); in a
source checkout without it, the checkout's ``data/`` folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

RUNS_ENV = "SAGELAB_RUNS"


def runs_root() -> Path:
    """``SAGELAB_RUNS``, else ``runs/`` in the current directory (the notebook's folder)."""
    env = os.environ.get(RUNS_ENV)
    return Path(env).expanduser() if env else Path.cwd() / "runs"


def run_dir(kind: str) -> Path:
    """A new, empty ``<runs>/<kind>-<time>/`` folder (a suffix keeps two runs in one second
    apart)."""
    root = runs_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = root / (f"{kind}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"cannot make a new run folder under {root}")


def data_dir() -> Path:
    """The folder holding ``speech/``, ``scenarios/``, ``demo/`` and ``actions/``."""
    try:
        from sagelab.bundled import data_dir as bundled  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        return Path(bundled())
    env = os.environ.get("SAGELAB_DATA")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:  # a source checkout's data/
        if (parent / "data" / "demo").is_dir():
            return parent / "data"
    raise FileNotFoundError(
        "sagelab's data (speech, scenarios, demo) was not found: set SAGELAB_DATA to a folder "
        "with speech/, scenarios/, demo/ and actions/"
    )
