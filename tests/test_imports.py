"""The package's imports form no cycle, counting every import: at module level, inside functions
and under ``TYPE_CHECKING``. A cycle is a module that cannot be read without one that imports it;
deferring an import into a function or behind ``TYPE_CHECKING`` hides it from Python, not from
the reader, so this test counts those too and names any cycle it finds.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def import_graph(package: Path) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}`` from the source alone (``ast``), every
    import counted wherever it stands. Modules are dotted names relative to the package's parent."""
    root = package.parent
    modules = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        here = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                stem = ".".join(base + ([node.module] if node.module else []))
                # "from . import x" / "from .pkg import mod": a name that is a submodule is that module,
                # any other name comes from the module (or package) ``stem`` itself
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:  # "a.b.c" where only "a.b" is a module of the package
                    t = t.rpartition(".")[0]
                if t and t != mod and t in modules:
                    graph[mod].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_through(graph, g) for g in groups]


def _cycle_through(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """One concrete cycle inside a strongly connected group (for the message): a -> b -> ... -> a."""
    members, start = set(group), group[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in members)
        back = [w for w in nxt if w == start]
        if back and len(path) > 1:
            return path + [start]
        step = next((w for w in nxt if w not in seen), None)
        if step is None:  # every neighbour seen: close the loop where it meets the path
            w = nxt[0]
            return path[path.index(w):] + [w] if w in path else path + [w]
        path.append(step)
        seen.add(step)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


def test_the_checker_finds_a_cycle_made_on_purpose(tmp_path):
    """A synthetic package: ``a`` imports ``b`` at module level, ``b`` imports ``c`` inside a function
    and ``c`` imports ``a`` under TYPE_CHECKING - Python imports it fine, the checker names the cycle."""
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .b import f\n",
        "pkg/b.py": "def f():\n    from . import c\n    return c\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/d.py": "from ..a import f\nimport os\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.sub.d"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("import json\n")  # break it: no cycle left
    assert find_cycles(import_graph(pkg)) == []


def layer_table(text: str, package: str) -> dict[str, int]:
    """``{module: layer}`` from the markdown table under the "## Layers" heading: its first column
    is the layer number, its last column the layer's modules in backticks (``space.ops``, or the
    package's own name for its ``__init__``)."""
    import re

    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, int] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue
        for name in re.findall(r"`([\w.]+)`", cells[-1]):
            module = package if name == package else f"{package}.{name}"
            if module in layers:
                raise AssertionError(f"{module} is listed twice in the layer table")
            layers[module] = int(cells[0])
    return layers


def layer_violations(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """Modules missing from the table, and every import that points to a higher layer."""
    out = [f"{m} is in no layer of the table" for m in sorted(graph) if m not in layers]
    out += [f"{m} (layer {layers[m]}) imports {d} (layer {layers[d]})" for m in sorted(graph) if m in layers
            for d in sorted(graph[m]) if d in layers and layers[d] > layers[m]]
    return out


def test_the_layer_check_catches_an_upward_import_and_a_missing_module(tmp_path):
    pkg = _write(tmp_path, {"pkg/__init__.py": "", "pkg/low.py": "from .high import x\n", "pkg/high.py": "x = 1\n",
                            "pkg/new.py": ""})
    table = "## Layers\n\n| layer | what | modules |\n|---|---|---|\n| 1 | base | `low` |\n| 2 | top | `high`, `pkg` |\n"
    layers = layer_table(table, "pkg")
    assert layers == {"pkg.low": 1, "pkg.high": 2, "pkg": 2}
    assert layer_violations(import_graph(pkg), layers) == ["pkg.new is in no layer of the table",
                                                           "pkg.low (layer 1) imports pkg.high (layer 2)"]


def test_the_package_follows_the_architecture_layers():
    graph = import_graph(ROOT / "hwnas_darts")
    layers = layer_table(ARCHITECTURE.read_text(), "hwnas_darts")
    assert not [m for m in layers if m not in graph], "the layer table names modules that do not exist"
    problems = layer_violations(graph, layers)
    assert not problems, "docs/ARCHITECTURE.md's layer table is not what the imports do:\n" + "\n".join(problems)


def test_the_package_has_no_import_cycle():
    graph = import_graph(ROOT / "hwnas_darts")
    assert len(graph) > 20  # the whole package was read
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (every import counted, TYPE_CHECKING and function-level too):\n" + "\n".join(
        " -> ".join(c) for c in cycles)
