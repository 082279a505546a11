"""The claims' scoring: effect sizes with intervals, verdicts that can go either way, the two evidence
standards, the early-stopping mechanisms, and the runs named for an undecided or partial claim."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dip_lib.report import claims, registered
from dip_lib.report.registry import plan
from dip_lib.report.runs import SHALLOW


def record(curve, loss=None, masked=20.0, hole=None, every=100):
    """A DIP record whose clean PSNR follows ``curve`` (one value per check) and its loss ``loss``."""
    curve = list(map(float, curve))
    its = [every * (k + 1) for k in range(len(curve))]
    loss = list(loss) if loss is not None else list(np.geomspace(1e-2, 1e-3, len(curve)))
    best = int(np.argmax(curve))
    return {
        "summary": {
            "oracle_psnr": max(curve),
            "oracle_iteration": its[best],
            "final_psnr": curve[-1],
            "masked_psnr": masked,
            "final_hole_psnr": curve[-1] - 3 if hole is None else hole,
        },
        "history": {"iteration": its, "psnr_clean": curve, "loss": loss},
        "eswmv": {"psnr_clean": curve[-1]},
    }


def test_the_interval_is_students_t_over_the_pairs_and_decides_only_off_the_threshold():
    e = claims.effect([1.0, 2.0, 3.0])
    assert e.mean == 2.0 and e.n == 3
    assert e.lo == pytest.approx(2 - 2.919986 / np.sqrt(3)) and e.hi == pytest.approx(2 + 2.919986 / np.sqrt(3))
    assert e.side(0.0) == 1 and e.side(5.0) == -1 and e.side(2.0) == 0
    assert claims.effect([4.0]).side(0.0) == 0  # one pair has no interval: it decides nothing
    assert claims.effect([None, float("nan")]).n == 0


def test_a_lost_best_iterate_is_told_apart_by_how_it_was_lost():
    flat = record([20, 25, 26, 26, 25.9])
    decline = record([20, 28, 27, 26, 25])  # loss keeps falling: the fit creeps towards x0
    jump = record([20, 28, 28, 15, 16], loss=[1e-2, 1e-3, 1e-3, 5e-2, 4e-2])  # a 50x loss jump after the best
    assert claims.mechanism(flat) == "kept"
    assert claims.mechanism(decline) == "gradual decline"
    assert claims.mechanism(jump) == "destabilisation"


def _table1_runs():
    runs = plan("table1", "quick")  # at the recipes' full iteration counts
    return [r for r in runs if r.method == "dip"], [r for r in runs if r.method != "dip"]


def test_dip_against_the_csc_peer_can_be_supported_or_refuted():
    dip, peers = _table1_runs()
    csc = [(r, {"summary": {"final_psnr": 30.0, "final_hole_psnr": 27.0}}) for r in peers if r.method == "csc"]
    rng = np.random.default_rng(0)

    def scored(level):
        recs = [(r, record([20, level + rng.normal(0, 0.1), level + rng.normal(0, 0.1)])) for r in dip]
        return claims.dip_vs_papyan({"table1": recs + csc})

    assert scored(32.0).verdict == claims.SUPPORTED
    assert scored(28.0).verdict == claims.NOT_SUPPORTED
    assert "fixed dictionary" in claims.CLAIMS[1].question


def test_early_stopping_is_mixed_when_one_recipe_loses_its_best_and_another_does_not():
    dip, _ = _table1_runs()
    rng = np.random.default_rng(1)
    recs = []
    for r in dip:
        if r.preset == "table1-paper":
            recs.append((r, record([20, 30, 30 - abs(rng.normal(0, 0.05))])))
        else:
            recs.append((r, record([20, 30, 27 + rng.normal(0, 0.2)])))  # 3 dB lost, loss still falling
    s = claims.early_stopping({"table1": recs})
    assert s.verdict == claims.MIXED and s.standard == claims.ABSOLUTE
    assert "gradual decline" in s.evidence and s.key.startswith("table1-seed on Bernoulli holes")
    kept = [(r, record([20, 30, 30 - abs(rng.normal(0, 0.05))])) for r in dip]
    assert claims.early_stopping({"table1": kept}).verdict == claims.NOT_SUPPORTED


def _depth_records(shallow_gain, unstable=False, images=4):
    """Claims-experiment depth runs whose no-skip nets beat skip nets by ``shallow_gain`` dB at the end;
    ``unstable``: at half the budget the skip nets were still ahead. The plan's images (kate, library)
    are repeated under other names up to ``images`` images."""
    rng = np.random.default_rng(2)
    out = []
    for k in range(images // 2):
        for r in plan("claims", "quick"):
            if not r.label.startswith("depth"):
                continue
            r = replace(r, image=f"{r.image}{k}")
            end = 25 + 0.3 * r.depth + (0 if r.skip else shallow_gain) + rng.normal(0, 0.05)
            half = end - (2.0 if (unstable and not r.skip) else 0.0)
            out.append((r, record([20, half, half, end])))
    return out


def test_the_image_is_the_unit_and_seeds_are_replicates_within_it():
    """Seeds are averaged within an image before the interval, which is taken over images: three seeds of
    one image are one value, not three."""
    e = claims.over_images([("a", 1.0), ("a", 3.0), ("a", 2.0), ("b", 4.0), ("c", 6.0), ("d", None)])
    assert e.n == 3 and e.mean == pytest.approx(4.0) and e.text().endswith("(n = 3 images)")
    assert claims.over_images([("a", 1.0), ("a", 2.0), ("a", 3.0)]).n == 1
    assert claims.MIN_IMAGES == registered.registration()["min_images"]


def test_fewer_images_than_the_minimum_are_described_not_decided():
    """kate and library alone (the plan's two images) decide neither depth claim, however many seeds."""
    for score in (claims.skips_hurt_shallow, claims.deeper_is_better):
        s = score({"claims": _depth_records(1.0, images=2)})
        assert s.verdict == claims.DESCRIBED and s.effect.n == 2 and s.standard == claims.TOO_FEW
        assert "per image: kate0" in s.evidence and "over 3 seeds" in s.evidence
    dip, _ = _table1_runs()
    kate = [r for r in plan("claims", "quick") if r.label.endswith("text mask")]
    both = [(r, record([20, 30, 31 if r.preset == "table1-paper" else 30.5])) for r in dip + kate]
    s = claims.structure_fits_task({"table1": both[: len(dip)], "claims": both[len(dip) :]})
    assert s.verdict == claims.DESCRIBED  # the text task has one image
    df = claims.score({"claims": _depth_records(1.0, images=2)})
    assert claims.tally(df)["described"] == 2
    f = claims.section_facts(df, [])
    assert f["c6_verdict"] == claims.DESCRIBED and f["c6_missing"].startswith("More images")


def test_skips_hurt_shallow_nets_is_decided_either_way_and_only_when_the_budget_agrees():
    yes = claims.skips_hurt_shallow({"claims": _depth_records(1.0)})
    assert yes.verdict == claims.SUPPORTED and yes.standard.startswith("comparative")
    assert "end above their masked input" in yes.evidence
    no = claims.skips_hurt_shallow({"claims": _depth_records(-1.0)})
    assert no.verdict == claims.NOT_SUPPORTED
    moving = claims.skips_hurt_shallow({"claims": _depth_records(1.0, unstable=True)})
    assert moving.verdict == claims.UNDECIDED and moving.decide == claims._UNSTABLE  # not more of the same runs
    deeper = claims.deeper_is_better({"claims": _depth_records(0.0)})
    assert deeper.verdict == claims.SUPPORTED and deeper.effect.mean == pytest.approx(0.3, abs=0.05)


def test_a_claim_waiting_for_runs_is_partial_and_names_them():
    """A claim waits only for the missing runs it uses: claim 3 for the recipes on kate's text mask,
    claim 5 for the depths with skips, claim 6 for the shallow depths."""
    runs = plan("claims", "quick")
    kate = [r for r in runs if r.label.endswith("text mask")][:2]
    depth = [r for r in runs if r.label.startswith("depth")][:3]
    df = claims.score({}, partial={"claims": ("5 of 90 missing", kate + depth)}).set_index("claim")
    row = df.loc["6. Skip connections hurt shallow nets"]
    assert row["verdict"] == claims.PARTIAL and list(row["deciding"]) == depth
    assert list(df.loc["3. Structure should fit the task"]["deciding"]) == kate
    only_depth = claims.score({}, partial={"claims": ("3 of 90 missing", depth)}).set_index("claim")
    assert only_depth.loc["3. Structure should fit the task"]["verdict"] == claims.NO_DATA  # scored, not waiting
    assert df.loc["2. DIP beats Papyan et al."]["verdict"] == claims.NO_DATA
    deep = [r for r in runs if r.label.startswith("depth") and r.depth not in SHALLOW][:3]
    only_deep = claims.score({}, partial={"claims": ("3 of 90 missing", deep)}).set_index("claim")
    assert only_deep.loc["5. Deeper is better"]["verdict"] == claims.PARTIAL
    assert only_deep.loc["6. Skip connections hurt shallow nets"]["verdict"] == claims.NO_DATA  # not waiting


def test_the_claims_plan_computes_the_runs_that_decide_a_claim_first():
    """Claim 3's pairs, then the shallow depths with and without skips for every seed and image (claim 6),
    then the other depths with skips (claim 5); every run once, and no run that no claim reads (the
    deeper nets without skips)."""
    runs = plan("claims", "quick")
    depth = [r for r in runs if r.label.startswith("depth")]
    assert all(r.label.endswith("text mask") for r in runs[: len(runs) - len(depth)])
    tiers = [0 if r.depth in SHALLOW else 1 for r in depth]
    assert tiers == sorted(tiers) and set(tiers) == {0, 1}
    assert all(r.skip for r in depth if r.depth not in SHALLOW)
    assert {r.seed for r in depth[: tiers.count(0)]} == {0, 1, 2}
    assert len({r.run_id for r in runs}) == len(runs) == 60


def test_the_seed_reports_table1_mean_is_its_resized_images():
    """Its 35.00 dB mean: +3.96 dB over the paper on the four 256 px images it resized to 512, +0.13 on the others."""
    f = claims.seed_facts()
    assert f["g71"] == pytest.approx(35.00, abs=0.01)
    assert f["g71_resized"] == pytest.approx(3.96, abs=0.01) and f["g71_other"] == pytest.approx(0.13, abs=0.01)


def test_an_undecided_interval_says_how_many_images_would_decide_it():
    """The fewest images at which an interval with the same mean and spread over images would lie on one
    side of the threshold: its half width at n is below the distance to the threshold, at n - 1 not."""
    from scipy import stats

    values = [("a", 0.5), ("b", 1.5), ("c", 1.2), ("d", 0.4), ("e", 0.9), ("e", 5.0)]
    e = claims.over_images(values)
    assert e.side(1.0) == 0 and e.side(0.0) == 1
    sd = float(np.std([0.5, 1.5, 1.2, 0.4, 2.95], ddof=1))  # e's seeds averaged first: 2.95
    n = e.images_to_decide(0.5)
    half = lambda k: stats.t.ppf(0.95, k - 1) * sd / np.sqrt(k)  # noqa: E731
    assert half(n) < abs(e.mean - 0.5) <= half(n - 1)
    assert e.to_decide(0.5) == f"about {n} images at this mean and spread (5 images now)"
    assert claims.Effect(1.0, 0.0, 2.0, 5).images_to_decide(1.0) is None  # on the threshold: no number will do
    assert claims.Effect(1.0, float("nan"), float("nan"), 1).images_to_decide(0.0) is None


def test_an_undecided_claim_asks_for_images_not_seeds():
    """Table 1's 11 images all in, an interval over them straddling 0: the page asks for more images
    (Table 1 has none) and names no runs of more seeds, which narrow only each image's mean."""
    dip, csc = _table1_runs()
    rng = np.random.default_rng(0)
    gain = {img: rng.normal(0.3, 1.5) for img in {r.image for r in dip}}
    table1 = [(r, record([20, 30, 30 + gain[r.image]])) for r in dip] + [(r, record([30, 30, 30])) for r in csc]
    s = claims.dip_vs_papyan({"table1": table1})
    assert s.verdict == claims.UNDECIDED
    assert s.decide.startswith("More images (more seeds narrow only each image's mean): final: about ")
    assert "Table 1 has no more images" in s.decide
    row = claims.score({"table1": table1}).set_index("claim").loc["2. DIP beats Papyan et al."]
    assert list(row["deciding"]) == [] and row["decide"] == s.decide
    f = claims.section_facts(claims.score({"table1": table1}), [])
    assert f["c2_missing"] == s.decide + "."


def test_a_task_with_one_recipe_stored_is_no_data_not_a_crash():
    dip, _ = _table1_runs()
    table1 = [(r, record([20, 30, 31])) for r in dip]
    kate = [r for r in plan("claims", "quick") if r.label.endswith("text mask") and r.preset == "table1-paper"]
    s = claims.structure_fits_task({"table1": table1, "claims": [(r, record([20, 30, 31])) for r in kate]})
    assert s.verdict == claims.NO_DATA and "both Table-1 recipes" in s.evidence


def test_each_claim_section_is_glued_from_its_record_and_its_score():
    """The claims page writes one section per claim in Markdown; its numbered facts come from the
    score: a decided claim misses no runs, a waiting one names how many and what they cost."""
    runs = plan("claims", "quick")
    depth = [r for r in runs if r.label.startswith("depth")][:3]
    df = claims.score({}, partial={"claims": ("3 of 90 missing", depth)})
    f = claims.section_facts(df, [])
    assert {k.split("_")[0] for k in f} == {f"c{n}" for n in range(1, 7)}
    assert f["c2_missing"] == "Nothing more: the verdict is decided." and f["c2_standard"] == "None yet."
    assert f["c6_missing"].startswith("3 runs (claims), ") and f["c6_verdict"] == claims.PARTIAL
    assert all(f[f"c{n}_rule"].endswith(".") for n in range(1, 7))
    assert f["c1_rule"].startswith("Per recipe") and f["c2_rule"].startswith("table1-paper - CSC")


def test_the_claims_page_has_one_section_per_claim_record():
    import nbformat

    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "05_claims.ipynb", as_version=4)
    heads = [line[4:] for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()]
    heads = [h for h in heads if h[:1].isdigit()]
    assert heads == [c.title for c in claims.CLAIMS]


def test_the_seed_reports_findings_are_set_beside_our_best_settings():
    from types import SimpleNamespace

    from dip_lib.report.runs import Run

    def opt(lr, seed, psnr, guard=None):
        r = Run(experiment="optim", profile="quick", image="kate", source="dip", preset="text", lr=lr, seed=seed,
                optimizer="adam", guard=guard)  # fmt: skip
        return r, record([20, psnr, psnr - 1])

    optim = [opt(0.01, 0, 33), opt(0.01, 1, 35), opt(0.001, 0, 30), opt(0.1, 0, 25, guard=True)]
    native = SimpleNamespace(images=0, mean_final=None, mean_paper=None)
    f = claims.seed_comparison_facts([], optim, native)
    assert (f["lr"], f["lr_psnr"], f["lr_seeds"]) == ("0.01", "34.00", 2)
    assert f["width"] == claims.DASH and f["native_mean"] == claims.DASH
    assert f["g71"] == "35.00" and f["resized_images"] + f["other_images"] == 11
    assert f["trial3"] == "guard on with seed 0: 24.00 dB"


def test_the_claims_table_sets_the_verdict_at_the_papers_setting_beside_the_exploratory_one():
    from types import SimpleNamespace

    from dip_lib.report import pages

    df = pages.claims_sides(claims.score({}), [SimpleNamespace(id=6, verdict=claims.SUPPORTED)]).df
    assert list(df["ours, at the paper's setting"]) == [claims.DASH] * 5 + [claims.SUPPORTED]
    assert list(df.columns).index("ours, at the paper's setting") < list(df.columns).index(
        "ours, reduced scale (exploratory)"
    )


def test_the_seed_reports_own_depth_sweep_is_named_with_its_size_and_cost():
    """Its version of claims 5 and 6: kate at 128 filters, depths 1..8 with and without skips, both masks."""
    from dip_lib.report import pages

    f = pages.seed_version_facts()
    assert (f["width"], f["depths"], f["masks"]) == ("128", "1, 2, 3, 4, 5, 6, 7, 8", "file, text-seed")
    assert f["runs"] == 8 * 2 * 2 * 2 and f["cost"].startswith("about ")


def test_each_claim_row_says_the_scale_of_the_runs_it_reads():
    depth = [(r, record([20, 30])) for r in plan("claims", "quick") if r.label.startswith("depth")]
    row = claims.score({"claims": depth}).set_index("claim").loc["5. Deeper is better"]
    assert row["scale"] == (
        "reduced: 257 px, 448 px crops resized to 257 px; 16 filters; 3000 iterations; 2 images; seeds 0, 1, 2"
    )
    assert claims.scale([]) == "no run stored yet"
