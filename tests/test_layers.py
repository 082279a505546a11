"""The library's layers: the thin DIP library (with the time and memory estimate a user gets before
a fit) imports nothing from the report or the speed tools, the speed tools nothing from the report,
the report nothing from the speed tools; no import cycle (function-level imports counted) and no
module imports another's private names."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "dip_lib"
CORE = {
    "nets", "inputs", "masks", "metrics", "imageio", "config", "device", "step", "tracking", "solver",
    "presets", "stopping", "drops", "peers", "batched", "data", "errors", "resume", "estimate",
}  # fmt: skip
SPEED = {"bench", "parity", "original"}


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    private = []
    for path in PKG.glob("*.py"):
        mod = path.stem
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                edges[mod] |= {n for n in names if (PKG / f"{n}.py").exists() and n != mod}
                if node.module:
                    private += [f"{mod} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return edges, private


def test_layers_point_one_way_and_names_stay_private():
    edges, private = _graph()
    layer = {
        m: "core" if m in CORE else "speed" if m in SPEED else "report" for m in [p.stem for p in PKG.glob("*.py")]
    }
    allowed = {"core": {"core"}, "speed": {"core", "speed"}, "report": {"core", "report"}}
    wrong = [
        f"{m} ({layer[m]}) -> {d} ({layer[d]})"
        for m, ds in edges.items()
        for d in ds
        if layer[d] not in allowed[layer[m]]
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
