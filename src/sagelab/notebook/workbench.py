"""The notebooks shipped with sagelab, copied to a folder of the user's choice.

They live inside the package (``sagelab/notebooks/*.ipynb``, package data) and are committed
without outputs. ``sagelab notebooks DIR`` copies them so that ``jupyter lab DIR`` works in the
user's own environment; they read data through sagelab's API and write results under
``DIR/runs/`` (``sagelab.notebook.outputs``), never into the package.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

NOTEBOOKS = (
    "01_conversation.ipynb",
    "02_latency_accuracy.ipynb",
    "03_load_test.ipynb",
    "04_prompt_tool_lab.ipynb",
)


def notebooks_dir() -> Path:
    """The package's ``notebooks/`` folder (read-only: copy before running)."""
    root = resources.files("sagelab").joinpath("notebooks")
    if not isinstance(root, Path) or not root.is_dir():
        raise RuntimeError(f"sagelab's notebooks are not on the file system ({root})")
    return root


def copy_notebooks(dest: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy the notebooks into ``dest`` (created if needed) and return their new paths.

    An existing notebook of the same name is kept (it may hold your edits) unless
    ``overwrite``; then ``FileExistsError`` names the ones in the way and nothing is copied.
    """
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"{dest} exists and is not a folder")
    source = notebooks_dir()
    clashes = [dest / name for name in NOTEBOOKS if (dest / name).exists()]
    if clashes and not overwrite:
        names = ", ".join(p.name for p in clashes)
        raise FileExistsError(f"{dest} already has {names}; pass overwrite=True (--force)")
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in NOTEBOOKS:
        copied.append(Path(shutil.copyfile(source / name, dest / name)))
    return copied
