"""The claims at the paper's setting: the image is the unit (seeds averaged within it), intervals over
images, fewer than min_images images described not decided, a claim waits for every run it reads,
and a rule registered or changed after its runs were stored is flagged."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dip_lib.report import registered
from dip_lib.report.claims import NOT_SUPPORTED, PARTIAL, SUPPORTED, UNDECIDED
from dip_lib.report.registry import plan

ROOT = Path(__file__).resolve().parents[1]
FIG8 = plan("fig8", "paper")


def rec(hole: float, date: str = "2030-01-01T00:00:00+00:00") -> dict:
    return {"summary": {"final_hole_psnr": hole, "final_psnr": hole}, "history": {}, "environment": {"date": date}}


def fig8_records(gain: float, images: tuple[str, ...] = ("house", "peppers", "cameraman", "montage", "library")):
    """Every planned fig8 run of ``images``: fig8-skip6 ``gain`` dB above every other network, a seed
    spread of 1 dB around it, biharmonic 5 dB below."""
    out = []
    for r in FIG8:
        if r.image not in images:
            continue
        base = 20.0 + 2 * images.index(r.image) + r.seed - 1
        if r.method == "biharmonic":
            out.append((r, rec(base - 5)))
        else:
            out.append((r, rec(base + (gain if r.preset == "fig8-skip6" and not r.net else 0.0))))
    return out


def test_seeds_are_averaged_within_an_image_and_the_interval_is_over_images():
    claim = next(c for c in registered.registration()["claims"] if c["id"] == 5)
    contrasts, _, values = registered.measures(claim, {"fig8": fig8_records(1.0)})
    assert [c.effect.n for c in contrasts] == [5, 5]  # 5 images, not 15 image x seed pairs
    assert all(c.effect.mean == pytest.approx(1.0) and c.k == 5 for c in contrasts)
    assert values.n["house"] == 3 and values.sd["house"] == pytest.approx(1.0)


def test_a_claim_is_decided_either_way_only_when_all_its_runs_are_stored():
    stored = {r.run_id for r in FIG8} | {r.run_id for r in plan("table1-cpu", "paper")}
    for gain, verdict in ((1.0, SUPPORTED), (-1.0, NOT_SUPPORTED)):
        out = {s.id: s for s in registered.score({"fig8": fig8_records(gain)}, stored)}
        assert out[5].verdict == out[6].verdict == verdict, out[5].evidence
        assert "higher on" in out[5].evidence and out[5].scale.startswith(
            "native size; skip d2 w16-32 no-skip, skip d4 w16-128 no-skip, skip d6 w16-128 no-skip; 3001 iterations; "
            "5 images"
        )
    skip4 = next(r for r in reversed(FIG8) if r.preset == "fig8-skip4")
    waiting = {s.id: s for s in registered.score({"fig8": fig8_records(1.0)}, stored - {skip4.run_id})}
    assert waiting[5].verdict == PARTIAL and waiting[5].missing == [skip4]
    # claim 3's variant of the depth-6 hourglass (skip channels) is its own: claims 5 and 6 do not wait for it
    variant = next(r for r in reversed(FIG8) if r.net)
    others = {s.id: s for s in registered.score({"fig8": fig8_records(1.0)}, stored - {variant.run_id})}
    assert others[3].verdict == PARTIAL and others[5].verdict == others[6].verdict == SUPPORTED


def test_fewer_than_min_images_is_described_not_decided():
    claim = next(c for c in registered.registration()["claims"] if c["id"] == 6)
    contrasts, _, _ = registered.measures(claim, {"fig8": fig8_records(3.0, images=("house", "peppers", "library"))})
    assert registered._verdict(contrasts, 0.0, 4) == registered.DESCRIBED


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_rule_changed_after_its_runs_were_stored_is_flagged(tmp_path):
    (tmp_path / "data").mkdir()
    reg = registered.registration()
    path = tmp_path / registered.REGISTRATION
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "start")
    path.write_text(json.dumps(reg))
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "register")
    first = registered.registered_at(tmp_path)
    reg["claims"][4]["thresholds"] = {"depth_db": 0.5}  # claim 5's rule changes
    reg["claims"][5]["question"] = reg["claims"][5]["question"].replace("On", "For")  # wording only
    path.write_text(json.dumps(reg))
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "change")
    after = registered.registered_at(tmp_path)
    assert after[6] == first[6] and after[5][0] != first[5][0]
    stored = {r.run_id for r in FIG8}
    old = [(r, {**x, "environment": {"date": "2000-01-01T00:00:00+00:00"}}) for r, x in fig8_records(1.0)]
    out = {s.id: s for s in registered.score({"fig8": old}, stored, root=tmp_path)}
    assert out[5].flagged and out[6].flagged  # both registered after runs dated 2000
    new = {s.id: s for s in registered.score({"fig8": fig8_records(1.0)}, stored, root=tmp_path)}
    assert not new[5].flagged and new[5].registered.startswith(after[5][0]) and new[5].fresh == ""
    assert out[6].fresh == "no run it reads has been stored since its registration yet"
    # a flagged claim is also scored on the runs stored since its registration alone: here the new
    # images' runs, where the depth-6 hourglass loses
    images = ("house", "peppers", "cameraman", "montage", "library")
    mixed = [rx for rx in old if rx[0].image in images[:1]] + [
        rx for rx in fig8_records(-1.0, images) if rx[0].image in images[1:]
    ]
    both = {s.id: s for s in registered.score({"fig8": mixed}, stored, root=tmp_path)}
    assert both[6].flagged and both[6].fresh.startswith("on the runs stored since its registration alone: ")
    assert "higher on 0 of 4 images" in both[6].fresh and both[6].fresh.endswith(f"({registered.NOT_SUPPORTED})")
    cell = registered.table(list(both.values())).df.set_index("claim").loc["6. Skip connections hurt on large holes"]
    assert cell["evidence (per image, seeds averaged)"].endswith(
        " On the runs stored since its registration alone: " + both[6].fresh.split(": ", 1)[1] + "."
    )


def test_the_page_shows_each_registered_statement_question_and_rule_with_its_thresholds():
    """The paper's Fig. 8 wording is quoted as the paper has it, and each rule's thresholds are shown by
    value, not only by name."""
    scored = registered.score({"fig8": fig8_records(1.0)}, set())
    df = registered.statements(scored).df.set_index("claim")
    assert '"highly detrimental"' in df.loc["6. Skip connections hurt on large holes", "the paper"]
    assert df.loc["1. Early stopping matters", "rule"].endswith("(gap_db = 1, jump_factor = 10)")
    assert all(df["question"].str.endswith("?"))


def test_the_cost_of_the_missing_runs_is_scaled_by_the_stored_ones():
    """Stored runs that took twice the FLOP prior's time make the missing ones' estimate twice the prior's."""
    from dip_lib.report import compute

    stored = [(r, x) for r, x in fig8_records(1.0, images=("house",)) if r.method == "dip"]
    slow = [(r, {**x, "summary": {**x["summary"], "wall_time": 2 * compute.prior_seconds(r)}}) for r, x in stored]
    scored = registered.score({"fig8": slow}, {r.run_id for r, _ in slow})
    missing = list({r.run_id: r for s in scored for r in s.missing}.values())
    prior = compute.duration(compute.estimate_seconds(missing, []))
    twice = compute.duration(compute.estimate_seconds(missing, slow))
    assert registered.facts(scored)["missing_cost"] == prior != twice
    assert registered.facts(scored, {"fig8": slow})["missing_cost"] == twice


def test_the_best_check_of_claim_1_is_one_the_run_held_not_an_iterate_the_guard_threw_away():
    rec = {
        "summary": {"final_hole_psnr": 20.0},
        "history": {"psnr_hole": [18.0, 23.0, 30.0, 20.0], "restored": [False, False, True, False]},
    }
    assert registered.hole_gap(rec) == pytest.approx(3.0)  # 23 - 20: the 30 dB iterate was thrown away
    assert registered.hole_gap({"summary": rec["summary"], "history": {"psnr_hole": [18.0, 23.0]}}) == 3.0


def test_claim_1_tells_a_destabilisation_from_a_gradual_decline_and_from_a_kept_best():
    claim = next(c for c in registered.registration()["claims"] if c["id"] == 1)
    runs = [r for r in FIG8 if r.method == "dip"][:3]

    def rec(holes, loss):
        return {"summary": {"final_hole_psnr": holes[-1]}, "history": {"psnr_hole": holes, "loss": loss}}

    recs = [
        (runs[0], rec([20.0, 25.0, 15.0], [1e-2, 1e-3, 5e-2])),  # the loss jumps 50x
        (runs[1], rec([20.0, 25.0, 23.0], [1e-2, 1e-3, 5e-4])),  # 2 dB lost, the loss still falling
        (runs[2], rec([20.0, 25.0, 24.8], [1e-2, 1e-3, 5e-4])),  # within 1 dB of the best check
    ]
    _, note, _ = registered.measures(claim, {"fig8": recs})
    assert note.startswith("1 of 3 runs destabilised") and "1 declined gradually by more than 1 dB" in note
    assert "1 ended within 1 dB of their best check" in note


def test_the_page_names_the_next_seed_of_the_native_table1_runs_and_its_cost():
    f = registered.facts(registered.score({}, set()))
    assert (f["fresh_seed"], f["fresh_runs"], f["missing_plans"]) == (1, 4, "table1-cpu, fig8")
    assert f["fresh_cost"].startswith("about ")


def test_an_undecided_claim_says_how_many_images_would_decide_it_and_where_they_come_from():
    """The depth-6 hourglass's gain differs by image so that the interval over the 5 images straddles 0:
    the claim names the images its mean and spread would need and the runs on Table 1's other seven
    images (not part of its rule: reading them would be flagged), with their GPU cost and command."""
    gains = {"house": 2.0, "peppers": -1.0, "cameraman": 1.5, "montage": -0.5, "library": 0.5}
    images = tuple(gains)
    recs = []
    for r, x in fig8_records(0.0, images):
        if r.preset == "fig8-skip6" and not r.net:
            x = rec(x["summary"]["final_hole_psnr"] + gains[r.image])
        recs.append((r, x))
    stored = {r.run_id for r in FIG8}
    out = {s.id: s for s in registered.score({"fig8": recs}, stored)}
    assert out[5].verdict == out[6].verdict == UNDECIDED
    n = registered.measures(registered.registration()["claims"][4], {"fig8": recs})[0][0].effect.images_to_decide(0.0)
    assert n > 5 and f"fig8-skip6 - fig8-skip4, hole PSNR: about {n} images at this mean and spread" in out[5].decide
    assert "7 more images (barbara, boat, couple, fingerprint, hill, lena, man)" in out[5].decide
    assert "reproduce --profile paper --only fig8-more" in out[5].decide and "on a GPU" in out[5].decide
    assert out[4].verdict == SUPPORTED and out[4].decide == ""
    row = registered.table(list(out.values())).df.set_index("claim").loc["5. Deeper is better"]
    assert row["to decide it"] == out[5].decide
    assert registered.more_images(registered.registration()["claims"][4])[0].experiment == "fig8"  # its runs' own
