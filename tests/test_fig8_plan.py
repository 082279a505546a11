"""Fig. 8 at the paper's setting: the plan of the five networks on large holes at native size, the
holes mask, and the claims' registration that these runs decide (registered before them)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from dip_lib.report import fig8, plots
from dip_lib.report.registry import plan
from dip_lib.report.runs import HOLES, TABLE1_CPU_IMAGES

ROOT = Path(__file__).resolve().parents[1]


def test_the_fig8_plan_runs_each_network_on_each_image_and_seed_once():
    runs = plan("fig8", "paper")
    dip = [r for r in runs if r.method == "dip"]
    assert len({r.run_id for r in runs}) == len(runs)
    for preset in fig8.NETS:
        mine = [r for r in dip if r.preset == preset and not r.net and r.mask != "bernoulli"]
        assert {(r.image, r.seed) for r in mine} == {(i, s) for i, _, _ in fig8.IMAGES for s in fig8.SEEDS}
    assert all(r.crop is None and r.resize is None for r in runs)  # native size
    assert {r.mask for r in dip if r.image == "library"} == {"file"}
    first_library = next(k for k, r in enumerate(dip) if r.image == "library")
    assert all(r.seed == 0 for r in dip[:first_library])  # the cheap images of seed 0 come first


def test_more_images_are_table1s_other_seven_with_the_same_runs_each_on_a_gpu():
    """``fig8-more``: every image of Table 1 that ``fig8`` lacks, each with the runs a 256 px image has
    there (five networks, claim 3's three depth-6 runs, three seeds, biharmonic), at the paper
    profile's GPU numerics; no run in common with ``fig8``, whose plan it leaves as it was."""
    more, base = plan("fig8-more", "paper"), plan("fig8", "paper")
    assert {r.image for r in more} == set(fig8.MORE_IMAGES) and len(fig8.MORE_IMAGES) == 7
    assert not {r.image for r in more} & {r.image for r in base}
    shape = lambda runs, image: sorted((r.method, r.preset, r.mask, r.net, r.seed) for r in runs if r.image == image)  # noqa: E731
    assert all(shape(more, i) == shape(base, "house") for i in fig8.MORE_IMAGES)
    assert {dict(r.numerics)["device"] for r in more if r.method == "dip"} == {"cuda"}
    assert all(dict(r.numerics)["device"] == "cpu" for r in base if r.method == "dip")
    assert len({r.run_id for r in more + base}) == len(more) + len(base)


def test_claim_3_changes_only_the_skip_channels_on_the_same_problems():
    runs = [r for r in plan("fig8", "paper") if r.preset == "fig8-skip6"]
    by = {(r.image, r.mask, r.seed, bool(r.net)): r for r in runs}
    for image in TABLE1_CPU_IMAGES:
        for mask in ("bernoulli", HOLES):
            a, b = by[(image, mask, 0, False)], by[(image, mask, 0, True)]
            assert a.problem_id == b.problem_id and dict(b.net) == {"channels_skip": (4,) * 6}
    table1 = {r.image: r.problem_id for r in plan("table1", "paper") if r.method == "biharmonic"}
    assert all(by[(i, "bernoulli", 0, False)].problem_id == table1[i] for i in TABLE1_CPU_IMAGES)


def test_the_holes_mask_is_library_scale_and_deterministic(shared_data, monkeypatch):
    monkeypatch.setenv("DIP_DATA_MIRROR", str(shared_data))
    from dip_lib.report.runs import library_holes

    a, b = library_holes((256, 256)), library_holes((256, 256))
    assert a.shape == (1, 256, 256) and (a == b).all() and set(np.unique(a)) == {0.0, 1.0}
    assert 0.15 < 1 - a.mean() < 0.30
    # the run ids name the mask, not its pixels: stored runs stay valid only while these bits do not move
    assert hashlib.sha256(a.astype(np.uint8).tobytes()).hexdigest()[:16] == "3eda538ae5f3e0af"


def test_every_registered_claim_reads_planned_runs():
    reg = json.loads((ROOT / "data" / "claims_registration.json").read_text())
    assert [c["id"] for c in reg["claims"]] == [1, 2, 3, 4, 5, 6] and reg["min_images"] >= 4
    for claim in reg["claims"]:
        assert claim["question"].endswith("?") and claim["thresholds"] and claim["rule"]
        for sel in claim["runs"]:
            planned = plan(sel["experiment"], sel["profile"])
            keep = [
                r
                for r in planned
                if all(
                    getattr(r, k) in (v if isinstance(v, list) else [v])
                    for k, v in sel.items()
                    if k not in ("experiment", "profile")
                )
            ]
            assert keep, (claim["id"], sel)


def _hole_records(images=("house", "library")):
    """Stored-looking records of every planned large-hole run of ``images``: the hole PSNR is 20 dB plus
    the seed for the networks, 15 dB for biharmonic; claim 3's runs (with skips, Bernoulli) at 0 dB."""
    out = []
    for r in plan("fig8", "paper"):
        if r.image in images:
            hole = 15.0 if r.method == "biharmonic" else 20.0 + r.seed
            if r.net or r.mask == "bernoulli":
                hole = 0.0
            out.append((r, {"summary": {"final_hole_psnr": hole, "final_psnr": hole}}))
    return out


def test_the_fig8_page_reads_the_five_networks_on_large_holes_only():
    df = plots.fig8_table(_hole_records()).df.set_index("image")
    assert df.loc["house", "depth 6"] == "21.00 ± 1.00 (3)" and df.loc["house", "biharmonic"] == "15.00 (1)"
    assert df.loc["peppers", "ResNet"] == "-"  # nothing stored for it
    f = fig8.facts(_hole_records())
    assert (f["stored"], f["planned"], f["complete"]) == (2 * 5 * 3, 5 * 5 * 3, "house, library")
    assert fig8.facts([])["complete"] == "none yet"


def test_the_fig8_figure_shows_the_first_seed_of_each_network_or_nothing(tmp_path, data_files):
    from dip_lib.report import registered
    from dip_lib.report.store import ResultStore

    assert plots.fig8_figure([], ResultStore(tmp_path)) is None
    assert plots.fig8_grid([], ResultStore(tmp_path), TABLE1_CPU_IMAGES) is None
    store = ResultStore(ROOT / "results")
    records = registered.load(store)[0]["fig8"]  # cameraman has all five networks stored
    titles = [ax.get_title() for ax in plots.fig8_figure(records, store, "cameraman").axes if ax.get_title()]
    assert titles[:3] == ["cameraman\nground truth", "masked input", titles[2]] and titles[2].startswith("biharmonic\n")
    assert [t.split("\n")[0] for t in titles[3:]] == list(fig8.NET_NAMES.values())
    assert all(t.endswith(" dB") for t in titles[2:])
