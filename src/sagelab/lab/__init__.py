"""The prompt lab: the same scenario under several prompt variants, compared with numbers.

``load_lab`` reads a lab file (``sagelab.lab.variants`` documents it), ``run_lab`` runs it on a
bundled server and returns a ``LabResult`` whose ``replies`` and ``summary()`` are DataFrames;
``plot_lab`` draws them. ``sagelab bench prompts LAB.yaml`` does all of it from the shell.
"""

from sagelab.lab.plots import plot_lab
from sagelab.lab.prompts import LabResult, lab_agents_file, run_lab, run_lab_on, summarize
from sagelab.lab.variants import LabError, LabSpec, ReplyChecks, Variant, load_lab, parse_lab

__all__ = [
    "LabError",
    "LabResult",
    "LabSpec",
    "ReplyChecks",
    "Variant",
    "lab_agents_file",
    "load_lab",
    "parse_lab",
    "plot_lab",
    "run_lab",
    "run_lab_on",
    "summarize",
]
