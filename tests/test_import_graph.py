"""The package's floors only point down (src/scaledyolo/__init__.py's docstring, ARCHITECTURE.md).

Read from the code, not from what happens to be imported at runtime: every `import` / `from ... import`
of every module, at module level, inside functions and under TYPE_CHECKING alike, is an edge. The graph
must be acyclic, no edge may point to a higher floor, and an import hidden inside a function is only
allowed for the optional heavy dependencies listed below. Then each module is imported in a fresh
interpreter (a forked child of one that holds only third-party libraries), so no import order hides a
circle, and `import scaledyolo.ops.nms` is checked not to load the model stack.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "scaledyolo"

# Floor of each module, by its dotted name or the package it lies in (the longest match wins).
FLOORS = {
    0: ("errors", "files", "devices", "logs", "safe_yaml", "geometry", "hyp", "runs", "classes"),
    1: ("ops",),
    2: ("models",),
    3: ("interop",),
    4: ("data", "media", "drawing"),
    5: ("train", "eval", "predict", "bench", "export", "calibration", "precision"),
    6: ("", "api"),  # "": the package root, which re-exports the facade
    7: ("commands",),
    8: ("cli", "__main__"),
}
# Function-level imports of our own modules that are kept, and why.
HIDDEN_ALLOWED = {
    # OpenVINO and NNCF are optional and take a second or more to import: only that export format loads them
    ("scaledyolo.export", "scaledyolo.interop.openvino"),
    ("scaledyolo.export", "scaledyolo.interop.quantize"),
    ("scaledyolo.precision", "scaledyolo.interop.openvino"),  # and only --precision int8 loads them
    ("scaledyolo.precision", "scaledyolo.interop.openvino_network"),
    ("scaledyolo.precision", "scaledyolo.interop.quantize"),
}


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


MODULES = _modules()


def floor_of(module: str) -> int:
    name = module.removeprefix("scaledyolo").removeprefix(".")
    best, best_len = None, -1
    for floor, prefixes in FLOORS.items():
        for prefix in prefixes:
            if (name == prefix or (prefix and name.startswith(prefix + "."))) and len(prefix) > best_len:
                best, best_len = floor, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is on no floor: add it to FLOORS here and to the package docstring")
    return best


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def edges() -> list[tuple[str, str, bool]]:
    """(importer, imported, hidden in a function) for every import of one of our modules by another."""
    found = []
    for module, file in MODULES.items():
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(file.read_text(encoding="utf-8"))
        hidden = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for node in ast.walk(fn)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != "scaledyolo":
                    continue
                resolved = _resolve(target)
                if resolved and resolved != module:
                    found.append((module, resolved, id(node) in hidden))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_on_a_floor():
    for module in MODULES:
        floor_of(module)


def test_the_graph_is_acyclic_and_points_down():
    all_edges = edges()
    graph: dict[str, set[str]] = {}
    for a, b, _ in all_edges:
        # a package's own __init__ importing its submodules is how a package exports them, not a dependency
        if not b.startswith(a + "."):
            graph.setdefault(a, set()).add(b)
    assert _cycles(graph) == []
    upward = sorted(f"{a} (floor {floor_of(a)}) -> {b} (floor {floor_of(b)})" for a, bs in graph.items()
                    for b in bs if floor_of(b) > floor_of(a))
    assert upward == []


def test_no_import_hides_inside_a_function():
    hidden = sorted({(a, b) for a, b, is_hidden in edges() if is_hidden} - HIDDEN_ALLOWED)
    assert hidden == []


def _fresh_import(module: str) -> str | None:
    """Import `module` in a forked child of this process (which has no scaledyolo module loaded yet)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        message = b""
        try:
            import importlib

            importlib.import_module(module)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, whatever it is
            message = f"{type(exc).__name__}: {exc}".encode()
        os.write(write, message)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message or None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_each_module_imports_alone_in_a_fresh_interpreter():
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(SRC)!r})\n"
        "import numpy, cv2, yaml, tqdm, torch, torch.nn\n"  # third-party only: each child imports ours afresh
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_import_graph import MODULES, _fresh_import\n"
        "assert not any(m == 'scaledyolo' or m.startswith('scaledyolo.') for m in sys.modules)\n"
        "failed = {m: e for m in sorted(MODULES) if m != 'scaledyolo.__main__' for e in [_fresh_import(m)] if e}\n"
        "print(failed)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "{}"


def test_ops_nms_does_not_load_the_models():
    script = ("import sys, scaledyolo.ops.nms\n"
              "print(sorted(m for m in sys.modules if m.startswith('scaledyolo.') and not m.startswith('scaledyolo.ops')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
