"""A committed profile is complete: on a clone, ``make reproduce PROFILE=quick`` computes nothing.
Every run of every quick plan (and of the paper profile's CPU Table-1 plan) has a valid stored
record, and what page 02 shows of the untrained networks is stored, not computed at render time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dip_lib.report import arch, registry
from dip_lib.report.runs import get_profile
from dip_lib.report.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "experiment, profile", [(e, "quick") for e in registry.EXPERIMENTS] + [("table1-cpu", "paper")]
)
def test_every_planned_run_of_a_committed_profile_is_stored(experiment, profile):
    missing = ResultStore(ROOT / "results").missing(registry.plan(experiment, profile))
    assert not missing, f"{len(missing)} runs of {experiment} ({profile}) not stored, e.g. {missing[0].label}"


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_the_untrained_outputs_page_02_shows_are_stored(profile):
    rows = arch.prior_outputs(get_profile(profile), ResultStore(ROOT / "results"))
    assert rows and len(rows) == len(arch.prior_archs(get_profile(profile)))
    assert all(img.shape[0] == 3 and 0 <= img.min() <= img.max() <= 1 for _, panels in rows for _, img in panels)


def test_stored_untrained_outputs_are_read_not_recomputed(tmp_path, monkeypatch):
    """Computed once (fp32, one thread), then read back as stored; nothing stored is None, not a fit."""
    prof = get_profile("smoke")
    store = ResultStore(tmp_path)
    assert arch.prior_outputs(prof, store, samples=2) is None
    first = arch.prior_outputs(prof, store, samples=2, compute=True)
    monkeypatch.setattr(arch, "_compute_prior", lambda *a: pytest.fail("recomputed"))
    again = arch.prior_outputs(prof, store, samples=2, compute=True)
    assert [n for n, _ in first] == [n for n, _ in again]
    assert all((a == b).all() for (_, p), (_, q) in zip(first, again) for (_, a), (_, b) in zip(p, q))


def test_no_page_module_computes_with_torch():
    """What a page draws is read from the store: the modules that draw and lay out pages import
    neither torch nor the networks, so a render cannot differ from one CPU model to another."""
    for name in ("plots", "pages", "tables", "facts"):
        tree = ast.parse((ROOT / "dip_lib" / "report" / f"{name}.py").read_text())
        imported = {
            (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names
        }
        assert not {m for m in imported if m == "torch" or m.endswith("nets") or m.endswith("inputs")}, name


def test_opening_a_notebook_in_jupyterlab_leaves_the_tree_clean():
    """JupyterLab writes the kernel's spec into a notebook it opens: ours already carry it; its
    checkpoints and the explorer's outputs are ignored by git."""
    import json
    import shutil
    import subprocess

    from ipykernel.kernelspec import get_kernel_dict

    kernel = get_kernel_dict()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        spec = json.loads(nb.read_text())["metadata"]["kernelspec"]
        assert spec == {"display_name": kernel["display_name"], "language": kernel["language"], "name": "python3"}
    if shutil.which("git") and (ROOT / ".git").exists():
        for path in (
            "notebooks/.ipynb_checkpoints/02_architecture_sweep-checkpoint.ipynb",
            "outputs/explorer_output.png",
        ):
            assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path


def test_a_report_without_its_images_is_one_line_before_any_page(tmp_path, monkeypatch):
    from dip_lib.core import data
    from dip_lib.core.errors import DipError
    from dip_lib.report import render

    entry = data.registry()[0]
    monkeypatch.setattr(data, "fetch", lambda *a: (_ for _ in ()).throw(data.missing_error([entry], "offline")))
    with pytest.raises(DipError) as exc:
        render.render("smoke", out_dir=tmp_path / "report" / "smoke", results_dir=tmp_path / "results")
    assert "ground truths" in str(exc.value) and entry.name in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "report").exists()
