"""Every page consistent with its records (issue 33): each test reads the stored records (or records
built like them) and the page's logic or source, so that the same class of error cannot return: a
table column recomputed by its stated definition, hardware named from the records, no GPU text where
no run used one, figures that show the iterate they were chosen on, curves that end at the number the
table reports, fronts drawn only where their points lie, no internal targets, runs that did not fit
left out of the evidence, and the landing page as a reproducibility report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import tomllib

from dip_lib.report import book, cost, pages, plots, table1_cpu
from dip_lib.report import runs as ex
from dip_lib.report.store import ResultStore

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"
STORE = ResultStore(ROOT / "results")


def _markdown(name: str) -> str:
    """The Markdown of a source notebook (or a Markdown page), as one text."""
    path = NB / name
    if path.suffix == ".md":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def _code(name: str) -> str:
    cells = json.loads((NB / name).read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def _stored(experiment: str, profile: str = "quick"):
    return pages.load(experiment, profile, STORE).records


def _run(label="x", seed=0, guard=None, **kw):
    return ex.Run("optim", "smoke", "kate", source="dip", label=label, seed=seed, guard=guard, **kw)


def _rec(final, oracle, masked=10.0, history=None):
    h = history or {"iteration": [0, 10], "psnr_clean": [masked, final], "restored": [False, False]}
    return {
        "summary": {"final_psnr": final, "oracle_psnr": oracle, "best_psnr": oracle, "masked_psnr": masked},
        "history": h,
        "environment": {"device": "cpu", "device_name": "Some CPU"},
        "config": {"numerics": {"threads": 1, "precision": "fp32"}},
    }


# ---------------------------------------------------------------- native Table 1


def test_native_eswmv_is_the_clean_output_at_the_stopping_check_and_restores_are_shown():
    native = table1_cpu.load(STORE)
    if not native:
        pytest.skip("no native Table-1 runs stored")
    table = table1_cpu.table(native)
    for (_, rec), row in zip([(r, x) for r, x in native if r.method == "dip"], table.itertuples()):
        h, it = rec["history"], rec["eswmv"]["iteration"]
        k = next(i for i, x in enumerate(h["iteration"]) if x >= it)  # the first check at or after the stop
        assert table["DIP ES-WMV"][row.Index] == pytest.approx(round(h["psnr_clean"][k], 2))
        assert table["guard restores"][row.Index] == str(rec["summary"]["guard_restores"])


def test_hardware_is_named_from_the_records_and_never_typed():
    native = table1_cpu.load(STORE)
    named = table1_cpu.facts(native)["device"]
    for run, rec in native:
        if run.method == "dip":
            assert rec["environment"]["device_name"] in named
    for text in (_markdown("index.md"), *(_markdown(n) + _code(n) for n in _notebooks())):
        assert not re.search(r"EPYC|Xeon|Ryzen|Core i\d|H100|H200|A100", text), "hardware is glued from the records"


def _notebooks() -> list[str]:
    return [
        "01_table1_bernoulli.ipynb",
        "02_architecture_sweep.ipynb",
        "03_optimizer_lr_sweep.ipynb",
        "06_cost_quality.ipynb",
        "07_paper_figures.ipynb",
    ]


def test_no_gpu_text_where_no_run_used_a_gpu():
    """A page's own Markdown says nothing about GPUs (what ran where comes from the records); the
    landing page names no device class the records do not."""
    for name in _notebooks():
        text = re.sub(r"GPU-hours", "", _markdown(name))
        assert "GPU" not in text, name
    rows = pages.report_compute("quick", STORE)
    if not any(r["GPU-hours"] for r in rows):
        landing = _markdown("index.md")
        assert not re.search(r"(runs|ran|computed) on (a|the) GPU", landing)
        assert "06_cost_quality.ipynb::compute_gpu_hours" in landing and "compute_devices" in landing


# ---------------------------------------------------------------- the iterate shown is the one chosen on


def test_best_and_worst_are_chosen_on_the_iterate_they_show():
    a = (_run("a"), _rec(final=30.0, oracle=42.0))  # best on the oracle, worst on the final output
    b = (_run("b"), _rec(final=41.0, oracle=41.5))
    best, worst = pages.extremes([a, b])
    assert best[0].label == "b" and worst[0].label == "a"
    src = pages.optim_zoom.__code__.co_names
    assert "final_psnr" in src and "oracle" not in src


def test_the_optimiser_zoom_titles_are_the_extremes_of_the_final_output(shared_data):
    records = _stored("optim")
    if len(records) < 2:
        pytest.skip("too few optimiser runs stored")
    fig = pages.optim_zoom(records, STORE)
    titles = [ax.get_title() for ax in fig.axes[:4]]
    shown = [float(re.search(r"([\d.]+) dB", t).group(1)) for t in titles[2:4]]
    finals = [x["summary"]["final_psnr"] for _, x in records]
    assert shown == [round(max(finals), 2), round(min(finals), 2)]
    assert all("final" in t for t in titles[2:4])


def test_the_curve_ends_at_the_final_psnr_the_table_reports():
    """With the guard on, a check's psnr_clean is that of the iterate it threw away; the curve shows the
    output the run holds, so it ends at the record's final PSNR."""
    checked = 0
    for records in (_stored("optim"), _stored("table1"), table1_cpu.load(STORE)):
        for run, rec in records:
            h = rec.get("history")
            if run.method != "dip" or not h or not any(h.get("restored") or ()):
                continue
            held = plots.held_psnr(h)
            assert held[-1] == pytest.approx(rec["summary"]["final_psnr"])
            for k, restored in enumerate(h["restored"]):
                if restored:
                    assert held[k] == held[k - 1]
            checked += 1
    h = {"iteration": [0, 1, 2, 3], "psnr_clean": [5.0, 30.0, 9.0, 30.0], "restored": [False, False, True, False]}
    assert plots.held_psnr(h) == [5.0, 30.0, 30.0, 30.0] and plots.rejected(h) == ([2], [9.0])
    assert checked or not _stored("optim")


# ---------------------------------------------------------------- figures


def test_the_zoom_box_sits_where_the_methods_differ_most():
    gt = np.zeros((1, 60, 60), np.float32)
    a, b = gt.copy(), gt.copy()
    a[:, 40:55, 5:20] = 0.8  # one method errs in the lower left; both err alike at the top right
    a[:, 0:10, 50:60] = b[:, 0:10, 50:60] = 0.9
    top, left, side = plots.zoom_box(gt, [a, b], side=15)
    assert (top, left, side) == (40, 5, 15)


def test_the_curves_have_one_legend_at_the_top_and_lines_a_reader_tells_apart():
    records = []
    for image in ("a", "b", "c", "d"):
        for preset in ("table1-paper", "table1-seed"):
            for seed in (0, 1):
                run = ex.Run("table1", "smoke", image, preset=preset, seed=seed)
                records.append((run, _rec(30.0, 31.0)))
    fig = plots.psnr_curves(
        records, lambda r: r.image, "t", label=lambda r: f"{r.preset} s{r.seed}", style=plots.recipe_seed_style
    )
    assert len(fig.legends) == 1
    legend_top = fig.legends[0].get_window_extent().y0
    assert all(legend_top >= ax.get_window_extent().y1 for ax in fig.axes if ax.has_data())
    styles = {
        (line.get_color(), line.get_linestyle()) for line in fig.axes[0].get_lines() if line.get_label()[0] != "_"
    }
    assert len(styles) == 4
    colours = {matplotlib.colors.to_rgb(c) for c, _ in styles}
    assert all(np.abs(np.subtract(p, q)).sum() > 0.5 for p in colours for q in colours if p != q)


def test_panel_titles_do_not_repeat_their_row_title():
    img = np.zeros((1, 8, 8), np.float32)
    fig = plots.image_grid([("filters", [("4 filters", img), ("8 filters", img)]), ("input", [("gt", img)])])
    for ax in fig.axes:
        lines = ax.get_title().split("\n")
        assert len(lines) == 1 or lines[0] not in lines[1]
    assert "len(prof.sweep_masks) > 1" in _code("02_architecture_sweep.ipynb")  # no one-option mask heading


def test_the_pareto_front_is_drawn_only_where_its_points_lie():
    study = pages.cost_study("quick", STORE)
    cells = plots.cost_cells(study.panels)
    for title, shown, _, fr, _, (lo, hi) in cells:
        if fr:
            assert any(p in shown and lo <= p.psnr <= hi for p in fr), title
    fig = plots.cost_quality(study.panels)
    for ax, cell in zip(fig.axes, cells):
        has = any(line.get_label() == "Pareto front" for line in ax.get_lines())
        assert has == bool(cell[3])


def test_no_internal_target_is_printed():
    facts = cost.choice_facts(None)
    assert "goal" not in facts and "met" not in facts
    for name in _notebooks():
        assert not re.search(r"\bgoal\b|\bmet: ", _markdown(name)), name


# ---------------------------------------------------------------- the architecture sweep


def test_runs_that_end_below_their_masked_input_are_not_evidence():
    fit = (_run("depth 2, skip"), _rec(final=21.0, oracle=21.1, masked=19.7))
    unfit = (_run("depth 1, skip"), _rec(final=15.4, oracle=15.6, masked=19.7))
    shown, dropped = pages.fitted([fit, unfit])
    assert shown == [fit] and dropped == [unfit]
    facts = pages.dropped_facts(dropped)
    assert (facts["n"], facts["lo"], facts["masked"]) == (1, "15.40", "19.70")
    shown, dropped = pages.fitted(_stored("arch"))
    assert all(x["summary"]["final_psnr"] > x["summary"]["masked_psnr"] for _, x in shown)
    assert "pages.fitted(" in _code("02_architecture_sweep.ipynb")


def test_every_seed_beside_ours_sentence_gives_the_scale_and_both_iterates():
    for name in ("02_architecture_sweep.ipynb", "03_optimizer_lr_sweep.ipynb"):
        for para in _markdown(name).split("\n\n"):
            if re.search(r"seed report (found|ran)", para):
                assert "oracle" in para and "final output" in para, para[:80]
                assert re.search(r"scale|iterations", para) and "{glue:text}" in para, para[:80]
    lr = pages.iterate_facts(
        [(_run("adam lr=0.01"), _rec(final=30.6, oracle=42.2)), (_run("adam lr=0.001"), _rec(final=41.5, oracle=41.8))],
        lambda r: r.label,
    )
    assert (lr["oracle_best"], lr["final_best"], lr["oracle_best_final"]) == ("adam lr=0.01", "adam lr=0.001", "30.60")


# ---------------------------------------------------------------- the landing page and the site


def test_the_landing_page_is_a_reproducibility_report():
    text = _markdown("index.md")
    heads = re.findall(r"^#+ (.+)$", text, flags=re.M) + re.findall(r"^\*\*(.+?)\*\*", text, flags=re.M)
    for needed in (
        "Summary",
        "Scope of reproducibility",
        "Methodology",
        "Results per claim",
        "Discussion",
        "Limitations.",
        "Negative results.",
        "What was easy.",
        "What was difficult.",
        "Communication with the original authors.",
    ):
        assert needed in heads, needed
    assert re.search(r"super-resolution", text) and re.search(r"denoising", text, re.I)
    assert "```{glue} compute_table\n:doc: 06_cost_quality.ipynb" in text
    assert "paper profile on a GPU" not in text
    summary = book.section(text, "summary")
    assert "06_cost_quality.ipynb::compute_runs" in summary and "06_cost_quality.ipynb::compute_hours" in summary


def test_the_compute_table_adds_up_to_the_profiles_total_and_names_the_devices():
    loaded = {e: pages.load(e, "quick", STORE) for e in ("table1", "arch")}
    rows = pages.compute_rows(loaded, {"table1-cpu": table1_cpu.load(STORE)})
    n, hours = pages.compute_total(loaded)
    facts = pages.compute_facts(rows)
    assert facts["runs"] == n and facts["hours"] == f"{hours:.1f}"
    names = {x["environment"]["device_name"] for L in loaded.values() for _, x in L.records}
    assert all(any(name in r["devices"] for r in rows) for name in names)


def test_the_site_names_the_project_as_author_and_its_figures_apart_from_the_papers():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    config = book._config("quick")
    assert config["author"] == project
    assert not config["numfig_format"]["figure"].startswith("Fig")


def test_the_bibliography_keeps_its_capitals():
    bib = (NB / "references.bib").read_text(encoding="utf-8")
    for word in ("TU", "Delft", "Bayesian"):
        for title in re.findall(r"title\s*=\s*\{(.*)\},?\s*$", bib, flags=re.M):
            if re.search(rf"\b{word}\b", title):
                assert "{" + word + "}" in title, (word, title)
