"""Helpers shared by the notebook tests (importable: test directories are on sys.path)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sagelab.notebook.workbench import copy_notebooks

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Lab:
    """A headless JupyterLab on a scratch copy of ``notebooks/`` (autosave cannot touch the
    repository's notebooks) whose kernels inherit ``env``."""

    root: Path
    url: str
    token: str
    runtime_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def page_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"

    def kernel_connection_files(self) -> list[Path]:
        return sorted(self.runtime_dir.glob("kernel-*.json"), key=lambda p: p.stat().st_mtime)


def scratch_notebooks(root: Path) -> Path:
    """``root`` with the package's notebooks copied into ``root/notebooks`` the way a user gets
    them (``sagelab notebooks DIR``); they write their results to ``root/notebooks/runs``."""
    copy_notebooks(root / "notebooks")
    return root


def runs_of(root: Path) -> Path:
    """Where notebooks copied by ``scratch_notebooks`` write their results."""
    return root / "notebooks" / "runs"
