"""The architecture of shared/DESIGN.md, checked: which layer may import which, no import cycles, no code that
asks what type a process or network is outside the package that defines it, and a README that shows the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "difflab"

# The modules and packages at the bottom: anything may import them.
FOUNDATION = {"difflab", "errors", "io", "rng", "condition", "dataspec", "resources"}
# What each part of difflab may import besides itself and the foundation (the arrows of DESIGN.md, lower layers only).
ALLOWED: dict[str, set[str]] = {
    "errors": set(), "rng": set(), "condition": set(), "dataspec": set(), "io": set(), "resources": set(),
    "process": set(),
    "operators": set(),
    "networks": set(),
    "data": set(),
    "training": set(),
    "text": set(),
    "autoencoder_losses": set(),
    "parameterization": {"process", "networks"},
    "codecs": {"networks"},
    "denoisers": {"process", "parameterization", "operators"},
    "objectives": {"process", "parameterization", "likelihood"},
    "samplers": {"process", "denoisers"},
    "likelihood": {"process", "denoisers"},
    "restoration": {"operators", "process", "denoisers", "samplers"},
    "metrics": {"data"},
    "viz": {"process"},
    "config": {"codecs", "networks", "objectives", "process", "training"},
    "pipelines": {"autoencoder_losses", "codecs", "config", "data", "denoisers", "likelihood", "metrics", "networks",
                  "objectives",
                  "operators", "parameterization", "process", "restoration", "samplers", "text", "training", "viz"},
}
ALLOWED["cli"] = set(ALLOWED) - {"cli"}
ALLOWED["__main__"] = {"cli"}          # python -m difflab (and torchrun -m difflab): the CLI
PROCESS_NAMES = ("ddpm", "vp", "ve", "flow")
NETWORK_KINDS = ("unet", "mlp")


def modules() -> dict[str, Path]:
    """difflab.x.y -> file, for every module of the package (a package by its __init__)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the difflab modules it imports, anywhere in the file (deferred imports included)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "difflab":
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "difflab"]
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def part(module: str) -> str:
    """The layer a module belongs to: its top-level name under difflab ("difflab" for the package itself)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else pieces[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_part_of_the_package_has_a_place_in_the_layers():
    parts = {part(m) for m in modules()}
    assert parts - {"difflab"} == set(ALLOWED), "add the new module or package to ALLOWED (and to the README)"


def test_no_import_goes_up_a_layer():
    wrong = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                   if part(b) != part(a) and part(b) not in FOUNDATION and part(b) not in ALLOWED[part(a)])
    assert wrong == []


def test_the_foundation_imports_only_the_foundation():
    wrong = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                   if part(a) in FOUNDATION and part(b) not in FOUNDATION)
    assert wrong == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_layers_themselves_form_no_cycle():
    graph = {p: set(targets) for p, targets in ALLOWED.items()}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


TYPE_CHECKS = [
    (re.compile(r"isinstance\([^)]*\b(DDPMProcess|VPProcess|VEProcess|FlowProcess)\b"), "process"),
    (re.compile(r"""[=!]=\s*["'](%s)["']|["'](%s)["']\s*[=!]=""" % ("|".join(PROCESS_NAMES), "|".join(PROCESS_NAMES))),
     "process"),
    (re.compile(r"isinstance\([^)]*\b(UNet|MLP)\b"), "networks"),
    (re.compile(r"""[=!]=\s*["'](%s)["']|["'](%s)["']\s*[=!]=""" % ("|".join(NETWORK_KINDS), "|".join(NETWORK_KINDS))),
     "networks"),
    # what data is: the data layer reads it off the arrays it loads; everyone else asks the DataSpec
    (re.compile(r"len\([^)]*shape\)\s*[=!]=\s*3|\.ndim\s*==\s*2\b"), "data"),
]


@pytest.mark.parametrize("pattern,owner", TYPE_CHECKS)
def test_no_code_asks_what_type_a_process_or_network_is(pattern, owner):
    """Code asks a process for its capabilities and a run for its DataSpec; only the package that defines a
    type may test for it."""
    hits = []
    for name, path in modules().items():
        if part(name) == owner:
            continue
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{k}: {line.strip()}")
    assert hits == []


def test_readme_layout_matches_the_tree():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    listed = [line.split()[0] for line in block.splitlines() if line.startswith("difflab/")]
    for entry in listed:
        assert (ROOT / entry).exists(), f"README lists {entry}, which is not in the tree"
    tops = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
            if p.name not in ("__init__.py", "__pycache__") and (p.is_dir() or p.suffix == ".py")}
    shown = {entry.split("/", 1)[1] for entry in listed if entry.count("/") == 1 or entry.endswith("/")}
    assert tops - shown == set(), "the README's Layout misses these"
