"""The paper's Fig. 2 (how fast the network fits an image, it with noise, its shuffled pixels and
noise): the paper profile fits it at the paper's width on at least 4 images, with the image as the
unit of its ratios; the quick profile keeps kate alone."""

from __future__ import annotations

from dataclasses import replace

from dip_lib.report import figures, pages, plots
from dip_lib.report.claims import MIN_IMAGES
from dip_lib.report.registry import plan
from dip_lib.report.runs import FIG2_TARGETS, TABLE1_CPU_IMAGES, net_config


def test_the_paper_profile_fits_fig2_at_its_width_on_enough_images_for_a_verdict():
    fig2 = [r for r in plan("figures", "paper") if r.mask == "none"]
    images = {r.image for r in fig2}
    assert images == {"kate", *TABLE1_CPU_IMAGES} and len(images) >= MIN_IMAGES
    assert all(r.resize is None and r.crop is None for r in fig2)  # native size
    assert {net_config(r).channels_down[0] for r in fig2} == {128}
    for image in images:
        assert sorted((r.target, r.seed) for r in fig2 if r.image == image) == sorted(
            (t, s) for t in FIG2_TARGETS for s in (0, 1)
        )
    assert {r.image for r in plan("figures", "quick") if r.mask == "none"} == {"kate"}
    f = pages.paper_fig2_facts()
    assert f["n_images"] == len(images) and f["runs"] == len(fig2) and f["width"] == "128"


def _fig2_records(losses: dict[str, dict[str, list[float]]]):
    """Fig. 2 records whose loss at a quarter of the budget is ``losses[image][target][seed]``."""
    base = next(r for r in plan("figures", "paper") if r.mask == "none")
    out = []
    for image, by_target in losses.items():
        for target, per_seed in by_target.items():
            for seed, v in enumerate(per_seed):
                run = replace(base, image=image, target=target, seed=seed)
                out.append((run, {"history": {"iteration": [100, 200, 300, 400], "loss": [v, v / 2, v / 4, v / 8]}}))
    return out


def test_fig2_ratios_are_per_image_then_their_geometric_mean():
    one = _fig2_records({"kate": {"image": [1.0, 3.0], "noise": [10.0, 30.0]}})
    f = figures.fig2_facts(one)
    assert f["noise_ratio"] == "10.0" and f["image_loss"] == "2.00e+00" and f["images"] == "kate"
    two = _fig2_records({"a": {"image": [1.0], "noise": [4.0]}, "b": {"image": [1.0], "noise": [16.0]}})
    f = figures.fig2_facts(two)
    assert f["noise_ratio"] == "8.0"  # sqrt(4 * 16), not (4 + 16) / 2
    assert f["slower"] == f["others"] == 1 and f["images"] == "a, b"


def test_fig2_draws_one_panel_per_image_with_every_seed():
    recs = _fig2_records({"a": {t: [1.0, 2.0] for t in FIG2_TARGETS}, "b": {t: [1.0, 2.0] for t in FIG2_TARGETS}})
    fig = plots.fig2_curves(recs)
    assert [ax.get_title() for ax in fig.axes] == ["a (2 seeds)", "b (2 seeds)"]
    assert all(len(ax.lines) == 2 * len(FIG2_TARGETS) for ax in fig.axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []
    assert labels == list(FIG2_TARGETS)
    assert fig.axes[0].lines[0].get_ydata()[0] == 1.0  # the first seed drawn first
