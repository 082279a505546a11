"""The library's layers are its folders: ``dip_lib/core`` (the thin DIP library) imports nothing from
``dip_lib/report`` or ``dip_lib/speed``, the speed tools nothing from the report and the report
nothing from the speed tools; only the entry points at the top (the CLI, ``inpaint``, the explorer)
may use every layer. No import cycle (function-level imports counted), and no module imports
another's private names."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "dip_lib"
LAYERS = ("core", "report", "speed")
ALLOWED = {"core": {"core"}, "report": {"core", "report"}, "speed": {"core", "speed"}}


def _modules() -> dict[str, Path]:
    """'core.nets' -> its file, for every module of the package ('cli', 'core' for a package's __init__)."""
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name or "__init__"] = path
    return out


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    private = []
    for mod, path in mods.items():
        package = mod.split(".")[:-1] if path.stem != "__init__" else mod.split(".")
        if mod == "__init__":
            package = []
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            base = package[: len(package) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{prefix}.{alias.name}".lstrip(".")
                dep = target if target in mods else prefix
                if dep in mods and dep != mod:
                    edges[mod].add(dep)
                if node.module and alias.name.startswith("_"):
                    private.append(f"{mod} imports {prefix}.{alias.name}")
    return edges, private


def _layer(mod: str) -> str:
    head = mod.split(".")[0]
    return head if head in LAYERS else "top"


def test_every_module_sits_in_a_layer_or_is_an_entry_point():
    top = {m for m in _modules() if _layer(m) == "top"}
    assert top == {"__init__", "__main__", "cli", "inpaint", "explorer"}


def test_layers_point_one_way_and_names_stay_private():
    edges, private = _graph()
    assert sum(len(d) for d in edges.values()) > 100  # the graph was read, not empty
    wrong = [
        f"{m} -> {d}"
        for m, ds in edges.items()
        for d in ds
        if _layer(m) != "top" and _layer(d) not in ALLOWED[_layer(m)]
    ]
    assert wrong == [] and private == []


def test_no_import_cycle():
    edges, _ = _graph()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                return path + [m, d]
            if d not in state and (cycle := visit(d, path + [m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            assert visit(m, []) is None
