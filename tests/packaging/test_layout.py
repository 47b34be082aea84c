"""The package's layout reads as its architecture: no import cycles, one module name per concept.

The import graph is built from the source with :mod:`ast`, not by importing anything, so an
optional extra that is not installed cannot hide an edge. Every ``import`` counts, also those
inside functions (a lazy import still couples two modules: ``cli`` and ``loadtest.runner`` once
imported each other that way); only imports under ``if TYPE_CHECKING:`` are left out, since
they never run. Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so those
packages are edges too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import sagelab

pytestmark = pytest.mark.fast

SRC = Path(sagelab.__file__).resolve().parent

#: Module names that occur in more than one package because they are one concept seen from two
#: sides (the ConvAI wire format and the server speaking it; a metric and its benchmark). Any
#: other repeated name is a second concept under a name already taken, and fails the test.
SAME_CONCEPT: dict[str, str] = {
    "accuracy": "word error rate: its definition (metrics) and its benchmark (bench)",
    "convai": "the ConvAI protocol: wire format (protocol) and the server route (server)",
    "relay": "the relay protocol: wire format (protocol) and the server route (server)",
    "demo": "the demo: the command (sagelab.demo) and the demo application's tools (tools)",
    "endofturn": "the end-of-turn model (agents.local) and its benchmark (bench)",
    "errors": "the exception types of a package",
    "mic": "the user's microphone: in a notebook widget and in a locust user",
    "model": "the data model of a user-written file (scenario, action)",
    "pipeline": "the offline voice pipeline (agents.local) and its benchmark (bench)",
    "plots": "figures of measurements (metrics, loadtest)",
    "runner": "runs one scenario / one load test end to end",
    "session": "a conversation session: the client (client), the server core (conversation)",
    "serverconf": "the agents file written for a run's own server (scenario run, load test)",
    "soak": "the soak test: its command (cli) and its run (bench)",
    "store": "the conversation store (server) and tables read from it (metrics)",
    "summary": "percentile summaries of measurements (metrics, loadtest)",
    "tools": "an agent's tools: run inside the server, pushed to an agent (cli)",
    "transport": "session transport (server) and its benchmark (bench)",
    "turns": "turn-taking: turn events, energy detector (agents), the turn-taker (conversation)",
}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(name: str, path: Path, tree: ast.AST) -> set[str]:
    """Every sagelab module ``tree`` imports (targets may be packages or modules)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # submodules by name
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m == "sagelab" or m.startswith("sagelab.")}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for target in _imported(name, path, ast.parse(path.read_text(encoding="utf-8"))):
            if target not in mods:
                continue  # a name imported from a module, not a module
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # a.b.c runs a.b's __init__ first
                dep = ".".join(parts[:i])
                if dep in mods and dep != name and not name.startswith(dep + "."):
                    graph[name].add(dep)
        graph.setdefault(name, set())
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


def test_the_checker_sees_a_cycle() -> None:
    """The detector itself: a lazy two-module cycle like the old cli <-> runner is found."""
    graph = {"sagelab.cli": {"sagelab.loadtest.runner"}, "sagelab.loadtest.runner": set()}
    assert find_cycles(graph) == []
    graph["sagelab.loadtest.runner"].add("sagelab.cli")
    assert find_cycles(graph) == [["sagelab.cli", "sagelab.loadtest.runner"]]
    lazy = ast.parse("def f():\n    from sagelab.cli import data_dir\n")
    assert "sagelab.cli" in _imported("sagelab.loadtest.runner", SRC / "x.py", lazy)
    hinted = ast.parse("if TYPE_CHECKING:\n    from sagelab.server.app import S\n")
    assert _imported("sagelab.server.convai", SRC / "x.py", hinted) == set()


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in src/sagelab:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_conversation_core_imports_no_adapter() -> None:
    """``sagelab.conversation`` decides; the server, client, notebook and model packages are
    the I/O around it, so the core must not import them (type hints aside). The fakes of the
    models are the exception: they return the models' own result types."""
    graph = import_graph()
    graph.pop("sagelab.conversation.fakes")
    adapters = ("sagelab.server", "sagelab.client", "sagelab.notebook", "sagelab.agents.local")
    wrong = sorted(
        f"{name} imports {dep}"
        for name, deps in graph.items()
        if name.startswith("sagelab.conversation")
        for dep in deps
        if any(dep == a or dep.startswith(a + ".") for a in adapters)
    )
    assert not wrong, wrong


def test_one_module_name_per_concept() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for name, path in modules().items():
        if path.name != "__init__.py":
            by_name[path.stem].append(name)
    repeated = {
        stem: where
        for stem, where in by_name.items()
        if len(where) > 1 and stem not in SAME_CONCEPT
    }
    assert not repeated, f"one name, two concepts: {repeated}"
    stale = {stem for stem in SAME_CONCEPT if len(by_name.get(stem, [])) < 2}
    assert not stale, f"SAME_CONCEPT lists names no longer repeated: {sorted(stale)}"
