"""The report speaks to readers: every HTML page of the Sphinx site has a real title, no visible
plumbing, a way back to the index and loads nothing from elsewhere; the landing page carries the
claims table with its numbers glued from the notebooks; pages render from partial results."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from dip_lib.report import book, pages
from dip_lib.report import runs as ex
from dip_lib.report.facts import DASH
from dip_lib.report.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("myst_nb")


def _executed_notebook(path: Path) -> Path:
    """A notebook as papermill leaves it: parameters, injected parameters, an NBVAL marker, outputs."""
    params = new_code_cell('profile = "quick"\ncompute = True', metadata={"tags": ["parameters"]})
    injected = new_code_cell(
        'profile = "smoke"\ncompute = False\nresults_dir = "/tmp/r"', metadata={"tags": ["injected-parameters"]}
    )
    table = new_code_cell(
        "# NBVAL_CHECK_OUTPUT\ndisplay(t)",
        outputs=[
            new_output(
                "display_data",
                data={"text/html": "<table><tr><td>31.30\u00a0\u00b1\u00a00.51</td></tr></table>", "text/plain": "t"},
            ),
            new_output("stream", name="stderr", text="UserWarning: compute = True\n"),
        ],
    )
    nb = new_notebook(cells=[new_markdown_cell("# Table 1: a test page\nSome prose."), params, injected, table])
    nbformat.write(nb, path)
    return path


def _glue_cell(key: str, value: str):
    """A code cell as ``myst_nb.glue(key, value, display=False)`` leaves it in an executed notebook."""
    prefix = "application/papermill.record/"
    out = new_output(
        "display_data",
        data={prefix + "text/plain": repr(value)},
        metadata={"scrapbook": {"name": key, "mime_prefix": prefix}},
    )
    return new_code_cell(f"glue({key!r}, {value!r}, display=False)", outputs=[out])


def _book(tmp_path: Path) -> Path:
    """A book folder: a landing page that pastes a glued number and a table from 01_x, and a bibliography."""
    folder = tmp_path / "book"
    folder.mkdir()
    (folder / "index.md").write_text(
        "# A test report\n\n<!-- summary -->\n- Table 1: {glue:text}`01_x.ipynb::mean:s` dB {cite:p}`dip`.\n"
        "<!-- /summary -->\n\n```{glue} claims\n:doc: 01_x.ipynb\n```\n\n"
        "```{toctree}\n01_x\n```\n\n```{bibliography}\n```\n"
    )
    (folder / "references.bib").write_text("@misc{dip, author={Ulyanov, D.}, title={Deep Image Prior}, year={2018}}\n")
    return folder


def test_site_pages_have_titles_navigation_no_plumbing_and_open_offline(tmp_path):
    nb = _executed_notebook(tmp_path / "01_x.ipynb")
    page = nbformat.read(nb, as_version=4)
    page.cells += [_glue_cell("mean", "33.81")]
    claims = new_code_cell(
        "glue('claims', t, display=False)",
        outputs=[
            new_output(
                "display_data",
                data={
                    "application/papermill.record/text/html": '<table class="dip-claims"><tr><td>1.</td></tr></table>',
                    "application/papermill.record/text/plain": "t",
                },
                metadata={"scrapbook": {"name": "claims", "mime_prefix": "application/papermill.record/"}},
            )
        ],
    )
    page.cells.append(claims)
    nbformat.write(page, nb)
    out = tmp_path / "site"
    index = book.build([nb], out, "smoke", _book(tmp_path))
    text = (out / "01_x.html").read_text()
    assert book.check_folder(out) == {}
    assert "<title>Table 1: a test page" in text and "31.30" in text
    assert "UserWarning" not in text  # stderr is not for readers
    landing = index.read_text()
    assert "33.81" in landing and "dip-claims" in landing and "Ulyanov" in landing  # glued, pasted, cited
    assert not (out / "_sources").exists() and not list(out.glob("_static/**/*.map"))
    # the README's findings: the landing summary with the glued value pasted
    assert book.findings(tmp_path / "book" / "index.md", tmp_path, "smoke").startswith("- Table 1: 33.81 dB")


def test_paste_fills_glue_roles_and_refuses_an_unknown_key(tmp_path):
    from dip_lib.core.errors import DipError

    nbformat.write(new_notebook(cells=[_glue_cell("n", "4"), _glue_cell("name", "table1-paper")]), tmp_path / "a.ipynb")
    text = "{glue:text}`a.ipynb::n:s` of {glue:text}`a.ipynb::name:s`, {glue:text}`a::n:.1f`"
    assert book.paste(text, tmp_path) == "4 of table1-paper, 4.0"
    with pytest.raises(DipError, match="glued no 'other'"):
        book.paste("{glue:text}`a.ipynb::other:s`", tmp_path)
    assert book.paste("{glue:text}`b.ipynb::n:s`", tmp_path) == DASH  # a report without notebook b


def test_check_page_catches_what_readers_should_not_see():
    bad = (
        '<html><head><title>Notebook</title><script src="https://cdn.example/require.js"></script></head>'
        "<body><pre># NBVAL_CHECK_OUTPUT\ncompute = False</pre></body></html>"
    )
    problems = book.check_page(bad)
    assert any("title" in p for p in problems) and any("NBVAL" in p for p in problems)
    assert any("compute" in p for p in problems) and any("index" in p for p in problems)
    assert any("another site" in p for p in problems)
    assert any("claims" in p for p in book.check_page(bad, landing=True))
    assert book.check_page('<title>A real page</title><a href="index.html">home</a>') == []


def _fake_records(image: str, preset: str, seed: int, oracle_psnr: float):
    run = ex.Run("table1", "smoke", image, preset=preset, seed=seed)
    rec = {
        "summary": {
            "best_psnr": oracle_psnr,
            "oracle_psnr": oracle_psnr,
            "final_psnr": oracle_psnr - 1,
            "ema_psnr": oracle_psnr - 0.5,
            "best_iteration": 10,
            "oracle_iteration": 10,
            "iterations_run": 40,
            "guard_restores": 0,
            "wall_time": 2.0,
            "masked_psnr": 8.0,
        },
        "eswmv": {"psnr": oracle_psnr - 2, "psnr_clean": oracle_psnr - 1.5},
    }
    return run, rec


def test_tables_for_people():
    from dip_lib.report import table1

    records = [_fake_records("house", "table1-seed", s, 30.0 + s) for s in (0, 1)]
    table = table1.people(records, "table1-seed", comparable=False)
    html = table._repr_html_()
    assert "NaN" not in html and "nan" not in repr(table)
    assert "30.50\u00a0\u00b1\u00a00.71" in html  # spread (sample std of 30 and 31) on one line
    assert ">10<" in html and "10.0" not in html  # integers as integers
    compared = table1.people(records, "table1-seed", comparable=False, view="compared")._repr_html_()
    assert "group 71" in compared and "paper DIP (full scale)" in compared and "group 71" not in html
    assert "<th></th>" not in html  # no index column
    facts = table1.recipe_facts(records, "table1-seed")
    assert facts["images"] == 1 and facts["oracle"] == "30.50" and facts["csc_n"] == 0 and facts["csc_diff"] == "–"
    head = table1.headline_facts(records)
    assert (head["recipe"], head["oracle"], head["images"], head["csc"]) == ("table1-seed", "30.50", 1, "–")
    assert table1.headline_facts([])["recipe"] == "–"


def test_coverage_is_labelled(tmp_path):
    store = ResultStore(tmp_path)
    loaded = pages.load("optim", "smoke", store)
    assert loaded.records == [] and not loaded.complete
    assert "0 of 6 runs stored" in pages.coverage_line(loaded)
    assert "make reproduce" in pages.coverage_note(loaded)


def test_notebook_sources_default_to_no_compute():
    for path in sorted((ROOT / "notebooks").glob("0[1235]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert "compute = False" in params.source, path.name


@pytest.mark.slow
def test_a_notebook_renders_from_missing_runs(tmp_path):
    """compute=False on an empty store: the page renders and says what is missing."""
    pytest.importorskip("papermill")
    from dip_lib.report.render import execute_notebook

    out = tmp_path / "03_optimizer_lr_sweep.ipynb"
    execute_notebook(
        ROOT / "notebooks" / out.name,
        out,
        {"profile": "smoke", "results_dir": str(tmp_path / "r"), "compute": False, "device": "cpu"},
        cwd=tmp_path,
        timeout=300,
    )
    assert "0 of 6 runs stored" in out.read_text()


def test_committed_report_pages_pass_the_reader_checks():
    """The committed report's site passes the reader checks and opens offline."""
    for folder in sorted((ROOT / "report").glob("*")):
        if (folder / "index.html").exists():
            assert book.check_folder(folder) == {}, folder


def test_a_partial_paper_report_is_labelled_honestly(tmp_path, data_files):
    """The paper profile (a GPU job) renders from whatever runs a loan left: here one Table-1 run of
    seed 0, computed for the test at a tiny size under the paper profile's name and numerics."""
    from dataclasses import replace

    from dip_lib.report import runner
    from dip_lib.report.registry import plan
    from dip_lib.report.runs import numerics_for, pairs, spec

    store = ResultStore(tmp_path)
    first = plan("table1", "paper")[0]
    tiny = replace(
        first,
        crop=48,
        iterations=20,
        log_every=5,
        numerics=numerics_for("cpu"),
        net=pairs(channels_down=(8, 8, 8), channels_up=(8, 8, 8), channels_skip=(4, 4, 4)),
    )
    runner.run_all([tiny], store, progress=False)
    rec = store.load(tiny)
    # stored under the planned paper run's id, as a loan would leave it (the numbers are the tiny run's)
    store.save(first, {**rec, "run_id": first.run_id, "config": first.to_dict(), "spec": spec(first)}, {})
    loaded = pages.load("table1", "paper", store)
    assert loaded.coverage["stored"] == 1 and loaded.coverage["seeds"] == [0]
    line = pages.coverage_line(loaded)
    assert f"1 of {len(plan('table1', 'paper'))} runs stored" in line and "seed 0 only" in line


REPORT = """
import sys
from pathlib import Path
from dip_lib.report.render import render
pages = ("01_table1_bernoulli.ipynb", "05_claims.ipynb")
render("smoke", out_dir=Path(sys.argv[1]), results_dir=sys.argv[2], notebooks=pages)
"""


@pytest.mark.slow
def test_two_reports_at_once_and_a_failed_one_leave_a_whole_report(tmp_path, data_files):
    """Unique temp names and a folder swapped in whole: two renders at once both succeed, and a
    render that fails leaves the previous pages exactly as they were."""
    import subprocess
    import sys

    from dip_lib.core.errors import DipError
    from dip_lib.report.render import render

    out = tmp_path / "report"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REPORT, str(out), str(tmp_path / "r")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()

    def files():
        return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    before = files()
    assert "05_claims.html" in before and "index.html" in before
    with pytest.raises(DipError, match="no such notebook"):  # refused before any work
        render("smoke", out_dir=out, results_dir=str(tmp_path / "r"), notebooks=("05_claims.ipynb", "no_such.ipynb"))
    assert book.check_folder(out) == {} and "05_claims.ipynb" in before  # the executed notebook beside its page
    with pytest.raises(DipError, match="failed"):  # a notebook fails while building: the old report stays
        render(
            "smoke",
            out_dir=out,
            results_dir=str(tmp_path / "r"),
            notebooks=("01_table1_bernoulli.ipynb", "05_claims.ipynb", "07_paper_figures.ipynb"),
            device="no-such-device",
        )
    assert files() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # no build folder left behind


def test_sweep_facts_count_the_flattened_settings_and_the_skip_effect():
    """The numbers notebook 02 cites: widths that flattened, at how many iterations against the text
    recipe's own, and the depth sweep's best depths and the change from removing the skips."""
    import pandas as pd

    from dip_lib.report import arch

    df = pd.DataFrame(
        {"mask": ["text-seed"] * 2, "filters": [8, 16], "_best": [30.0, 31.0], "last 20% gain": [0.1, 0.05]}
    )
    assert arch.regime_facts(df, 3001) | {"late_share": "", "flat_db": 0} == {
        "iterations": 3001,
        "own": 6001,
        "settings": 2,
        "flat": 2,
        "rising": 0,
        "late_share": "",
        "flat_db": 0,
    }
    df["last 20% gain"] = [0.1, 0.5]
    assert arch.regime_facts(df, 3001)["rising"] == 1
    assert arch.width_facts(df) | {} == {
        "lo_filters": 8,
        "lo": "30.00",
        "hi_filters": 16,
        "hi": "31.00",
        "best_filters": 16,
        "best": "31.00",
    }
    assert arch.width_facts(df, mask="file")["best"] == pages.DASH
    ddf = pd.DataFrame(
        {
            "mask": ["text-seed"] * 4,
            "skip": [True, True, False, False],
            "depth": [1, 2, 1, 2],
            "_best": [16.6, 16.1, 16.0, 16.2],
            "last 20% gain": [0.9] * 4,
        }
    )
    d = arch.depth_facts(ddf)
    assert (d["skip_best_depth"], d["skip_best"], d["noskip_best_depth"], d["noskip_first"]) == (1, "16.60", 2, "16.00")
    assert d["shallow_change"] == "-0.25" and d["deep_change"] == pages.DASH  # no depth above 3


def test_the_kate_zoom_finds_the_filters_sweep_in_the_committed_results(shared_data):
    """The narrowest and the best width of the stored quick filters sweep, side by side."""
    from dip_lib.report import registry, runner

    store = ResultStore(ROOT / "results")
    records = runner.load_records(registry.plan("arch", "quick"), store, partial=True)
    fig = pages.arch_zoom(records, store)
    assert fig is not None and pages.arch_zoom(records[:1], store) is None
    titles = [a.get_title() for a in fig.axes]
    assert any(t.startswith("4 filters, best") for t in titles), titles


def test_figures_carry_a_text_alternative():
    """A screen reader hears the figure's title and what each panel plots, not nbconvert's placeholder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2)
    fig.suptitle("Fig. 2 at quick scale")
    a.set_xlabel("iteration")
    a.set_ylabel("loss")
    b.set_title("kate\nseed 0")
    assert pages.figure_alt(fig) == "Figure: Fig. 2 at quick scale | loss against iteration | kate, seed 0"
    plt.close(fig)
    empty = plt.figure()
    assert pages.figure_alt(empty) == "Figure"
    plt.close(empty)


def _point(**kw):
    from dip_lib.report.cost import Point

    base = dict(recipe="table1-seed", width=16, lr=0.01, iterations=40, gflop=9.0, seconds=1.0, psnr=28.69)
    return Point(**{**base, "std": 0.0, "n": 1, "hole": 28.1, "full": True, **kw})


def test_the_cost_facts_say_when_the_best_point_is_the_cheapest():
    """The numbers notebook 06 cites: no saving (1.0 times, goal not met) when the best point is itself
    the cheapest within the tolerance, the saving and the change otherwise, and the baseline beside it."""
    from dip_lib.report import cost

    best, cheap = _point(), _point(width=4, gflop=0.6, psnr=28.4)
    baseline = _point(recipe="table1-paper", width=8, gflop=2.0, psnr=17.98)
    alone = cost.choice_facts(cost.choose([best]), baseline)
    assert (alone["saving"], alone["over_base"], alone["pick_change"]) == ("1.0", "+10.71", "+0.00")
    both = cost.choice_facts(cost.choose([best, cheap]))
    assert (both["pick_width"], both["saving"], both["pick_change"]) == (4, "15.0", "-0.29")
    assert both["base_recipe"] == pages.DASH and cost.choice_facts(None)["saving"] == pages.DASH


def test_notebook_runs_print_no_transport_warning_and_still_fail_loudly(tmp_path, capfd):
    """The kernel gets CurveZMQ keys where pyzmq has Curve, so ipykernel has no 'running over TCP
    without encryption' to print on every run; an error in a cell is still an error."""
    zmq = pytest.importorskip("zmq")
    if not zmq.has("curve"):
        pytest.skip("pyzmq without CurveZMQ: the kernel's warning is true here")
    from dip_lib.core.errors import DipError
    from dip_lib.report.render import execute_notebook

    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    src = tmp_path / "ok.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("print('fine')")], metadata=kernel), src)
    execute_notebook(src, tmp_path / "out" / "ok.ipynb", {})
    assert nbformat.read(tmp_path / "out" / "ok.ipynb", as_version=4).cells[0].outputs[0]["text"] == "fine\n"
    assert "without encryption" not in capfd.readouterr().err
    nbformat.write(new_notebook(cells=[new_code_cell("raise ValueError('boom')")], metadata=kernel), src)
    with pytest.raises(DipError, match="ok.ipynb failed: ValueError: boom"):
        execute_notebook(src, tmp_path / "out" / "ok.ipynb", {})
