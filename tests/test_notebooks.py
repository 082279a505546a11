"""Every notebook runs end to end with papermill in the smoke profile (computing its runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))

pytest.importorskip("papermill")


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smoke-results")


def test_notebooks_are_committed_clean():
    import nbformat

    for name in NOTEBOOKS:
        nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has stored outputs"
        assert "parameters" in code[0].metadata.get("tags", []), f"{name}: first code cell is not tagged 'parameters'"
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):  # a cell without an id gets a random one per run
        cells = json.loads(path.read_text())["cells"]
        assert all(c.get("id") for c in cells), f"{path.name}: a cell has no id, so every render would differ"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_smoke(name, smoke_results, tmp_path, data_files):
    from dip_lib.report.render import execute_notebook

    out = tmp_path / name
    execute_notebook(
        ROOT / "notebooks" / name,
        out,
        {"profile": "smoke", "results_dir": str(smoke_results), "compute": True, "device": "cpu"},
        cwd=tmp_path,
        timeout=600,
    )
    assert out.exists()


def test_report_without_results_lists_missing_runs(tmp_path, data_files):
    """`make report` on an empty results folder fails naming the missing runs, computing nothing."""
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dip_lib",
            "reproduce",
            "--profile",
            "smoke",
            "--only",
            "optim",
            "--results-dir",
            str(tmp_path / "r"),
            "--budget-seconds",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "6 remain" in proc.stdout
    from dip_lib.core.errors import DipError
    from dip_lib.report import runner
    from dip_lib.report.registry import plan
    from dip_lib.report.store import ResultStore

    with pytest.raises(DipError, match="6 of 6 runs have no stored result"):
        runner.load_records(plan("optim", "smoke"), ResultStore(tmp_path / "r"))
