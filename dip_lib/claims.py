"""Score the six claims of the seed report from stored results, each with its numbers and a verdict.

Verdicts are "supported", "not supported", "mixed", "no data", or "undecided at this scale" when
fewer than REGIME_SHARE of the claim's DIP runs reached their regime (``scores.reached_regime``: the
last 20% of iterations gained < 0.2 dB). They are computed here, never typed in; each threshold is
a named constant that the rule's text is formatted from.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from .scores import FLAT_DB, LATE_SHARE, Records, fig2_quarter_losses, oracle, regime_share

REGIME_SHARE = 0.9  # a claim is decided only when this share of its DIP runs reached their regime
UNDECIDED = "undecided at this scale"
PARTIAL = "undecided: partial results"

GAP_DB, LOSS_DB, LOSS_SHARE, SOME_SHARE = 0.5, 1.0, 0.25, 0.05  # 1. early stopping
WIN_SHARE, LOSE_SHARE = 0.7, 0.3  # 2. DIP vs the CSC peer
SPREAD_DB = 1.0  # 3. structure
PRIOR_GAIN_DB, BIHARMONIC_SHARE = 5.0, 0.5  # 4. the network is the prior
RHO = 0.5  # 5. deeper is better
SHALLOW_DEPTH, SKIP_DB = 3, 0.5  # 6. skips hurt shallow nets


def _dip(records: Records) -> Records:
    return [(r, x) for r, x in records if r.method == "dip"]


def _decided(records: Records, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the regime check: its verdict replaced by UNDECIDED when too few runs flattened."""
    ok, n = regime_share(records)
    result["regime"] = f"{ok} of {n} DIP runs reached their regime"
    if n and ok < REGIME_SHARE * n and result["verdict"] != "no data":
        result["evidence"] += (
            f" Only {ok} of {n} runs flattened (last {LATE_SHARE:.0%} of iterations gaining "
            f"< {FLAT_DB} dB), so the verdict would be '{result['verdict']}' but is not given."
        )
        result["verdict"] = UNDECIDED
    return result


def early_stopping(all_records: Records, optim: Records) -> dict[str, Any]:
    dip = _dip(all_records)
    gaps = np.array([oracle(x) - x["summary"]["final_psnr"] for _, x in dip])
    rule = (
        f"supported if the median oracle-final gap > {GAP_DB} dB or > {LOSS_SHARE:.0%} of runs lose > {LOSS_DB} dB "
        f"by the end; mixed if > {SOME_SHARE:.0%} do"
    )
    if gaps.size == 0:
        return {"verdict": "no data", "evidence": "no DIP runs", "rule": rule}
    share = float(np.mean(gaps > LOSS_DB))
    verdict = (
        "supported"
        if np.median(gaps) > GAP_DB or share > LOSS_SHARE
        else ("mixed" if share > SOME_SHARE else "not supported")
    )
    fb = "; ".join(f"{r.label} (seed {r.seed}): {oracle(x) - x['summary']['final_psnr']:.2f} dB" for r, x in optim)
    return _decided(
        dip,
        {
            "verdict": verdict,
            "key": f"median gap {np.median(gaps):.2f} dB",
            "evidence": f"Over {gaps.size} DIP runs the oracle beats the final output by a median "
            f"{np.median(gaps):.2f} dB "
            f"(max {gaps.max():.2f}); {share:.0%} of runs lose more than {LOSS_DB} dB by the end. "
            f"Optimiser sweep (oracle - final): {fb or 'no runs'}.",
            "rule": rule,
        },
    )


def dip_vs_papyan(table1: Records, comparable: bool) -> dict[str, Any]:
    from .data import TABLE1_ORDER, paper_table1

    names = dict(TABLE1_ORDER)
    papyan = {row["image"]: float(row["papyan_psnr"]) for row in paper_table1()}
    csc = {r.image: x["summary"]["final_psnr"] for r, x in table1 if r.method == "csc"}
    rule = (
        f"supported if DIP (oracle) beats the CSC peer on >= {WIN_SHARE:.0%} of images with a positive mean "
        f"difference, per recipe; not supported if on <= {LOSE_SHARE:.0%}"
    )
    out, verdicts, key = [], [], ""
    for preset in ("table1-paper", "table1-seed"):
        per_image: dict[str, list[float]] = defaultdict(list)
        for r, x in _dip(table1):
            if r.preset == preset:
                per_image[r.image].append(oracle(x))
        imgs = [i for i in per_image if i in csc]
        if not imgs:
            continue
        d_csc = np.array([np.mean(per_image[i]) - csc[i] for i in imgs])
        text = (
            f"{preset}: oracle DIP beats our CSC peer on {int((d_csc > 0).sum())}/{len(imgs)} images "
            f"(mean {d_csc.mean():+.2f} dB)"
        )
        key = key or f"{preset}: {int((d_csc > 0).sum())}/{len(imgs)} images, {d_csc.mean():+.2f} dB"
        if comparable:
            d_pap = np.array([np.mean(v) - papyan[names[i]] for i, v in per_image.items() if names.get(i) in papyan])
            text += (
                f"; vs the published Papyan et al. values: {int((d_pap > 0).sum())}/{d_pap.size} "
                f"(mean {d_pap.mean():+.2f} dB)"
            )
        out.append(text)
        wins = float((d_csc > 0).mean())
        verdicts.append(
            "supported"
            if wins >= WIN_SHARE and d_csc.mean() > 0
            else ("not supported" if wins <= LOSE_SHARE else "mixed")
        )
    if not out:
        return {"verdict": "no data", "evidence": "no Table-1 runs with the CSC peer", "rule": rule}
    verdict = verdicts[0] if len(set(verdicts)) == 1 else "mixed"
    return _decided(_dip(table1), {"verdict": verdict, "key": key, "evidence": ". ".join(out) + ".", "rule": rule})


def _arch_means(arch: Records, pick) -> dict[str, dict[Any, float]]:
    """mask -> {key: mean oracle over seeds} for the runs ``pick(run)`` maps to a key (None: skip)."""
    vals: dict[str, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r, x in _dip(arch):
        k = pick(r)
        if k is not None:
            vals[r.mask][k].append(oracle(x))
    return {
        m: {k: float(np.mean(v)) for k, v in sorted(ks.items(), key=lambda kv: str(kv[0]))} for m, ks in vals.items()
    }


def structure_fits_task(table1: Records, arch: Records) -> dict[str, Any]:
    rule = f"supported if on every task the choice of architecture moves PSNR by more than {SPREAD_DB} dB"
    parts, spreads, best_by_mask = [], [], {}
    for mask, means in _arch_means(arch, lambda r: r.label).items():
        best = max(means, key=means.get)
        best_by_mask[mask] = best
        spread = max(means.values()) - min(means.values())
        spreads.append(spread)
        parts.append(
            f"mask {mask}: best {best} ({means[best]:.2f} dB), spread over {len(means)} architectures {spread:.2f} dB"
        )
    presets: dict[str, list[float]] = defaultdict(list)
    for r, x in _dip(table1):
        presets[r.preset].append(oracle(x))
    if len(presets) == 2:
        a, b = (float(np.mean(v)) for v in presets.values())
        parts.append(f"Table 1, same images: {' vs '.join(presets)} = {a:.2f} vs {b:.2f} dB")
    if not spreads:
        return {"verdict": "no data", "evidence": "no architecture runs", "rule": rule}
    differs = len(set(best_by_mask.values())) > 1
    parts.append("the best architecture " + ("differs between masks" if differs else "is the same for every mask"))
    verdict = "supported" if min(spreads) > SPREAD_DB else "mixed"
    return _decided(
        _dip(arch),
        {"verdict": verdict, "key": f"spread {min(spreads):.2f} dB", "evidence": "; ".join(parts) + ".", "rule": rule},
    )


def network_is_prior(table1: Records, arch: Records, fig2: Records = ()) -> dict[str, Any]:
    rule = (
        f"supported if the median gain over the masked input is > {PRIOR_GAIN_DB:g} dB and DIP beats biharmonic "
        f"on at least {BIHARMONIC_SHARE:.0%} of the images"
    )
    dip = _dip(table1 + arch)
    gains = [oracle(x) - x["summary"]["masked_psnr"] for _, x in dip]
    if not gains:
        return {"verdict": "no data", "evidence": "no DIP runs", "rule": rule}
    bih = {r.image: x["summary"]["final_psnr"] for r, x in table1 if r.method == "biharmonic"}
    per_image: dict[str, list[float]] = defaultdict(list)
    for r, x in _dip(table1):
        per_image[r.image].append(oracle(x))
    wins = [np.mean(v) > bih[i] for i, v in per_image.items() if i in bih]
    g = float(np.median(gains))
    verdict = "supported" if g > PRIOR_GAIN_DB and (not wins or np.mean(wins) >= BIHARMONIC_SHARE) else "mixed"
    return _decided(
        dip,
        {
            "verdict": verdict,
            "key": f"median gain {g:.2f} dB",
            "evidence": f"With no training data, fitting the network alone lifts PSNR a median {g:.2f} dB "
            "above the masked "
            f"input over {len(gains)} runs; DIP (oracle) beats biharmonic interpolation on "
            f"{int(np.sum(wins))}/{len(wins)} Table-1 images." + _fig2_evidence(fig2),
            "rule": rule,
        },
    )


def _fig2_evidence(fig2: Records) -> str:
    """The paper's Fig. 2 in one sentence: the loss after a quarter of the iterations, per target,
    as a multiple of the natural image's (mean over seeds)."""
    at = fig2_quarter_losses(fig2)
    if "image" not in at or len(at) < 2:
        return ""
    ratios = ", ".join(f"{t} {v / at['image']:.0f}x" for t, v in at.items() if t != "image")
    return (
        " Fig. 2: after a quarter of the iterations the loss of the other targets is, relative to the "
        f"natural image's: {ratios}."
    )


def deeper_is_better(arch: Records) -> dict[str, Any]:
    from scipy.stats import spearmanr

    rule = (
        f"supported if Spearman rho(depth, PSNR) > {RHO} and the best depth is the deepest or next to it; "
        f"mixed if rho > 0 but PSNR peaks earlier"
    )
    depth_runs = [(r, x) for r, x in _dip(arch) if r.label.startswith("depth")]
    parts, verdicts, key = [], [], ""
    for mask, means in _arch_means(depth_runs, lambda r: r.depth if r.skip else None).items():
        ds, ps = list(means), list(means.values())
        if len(ds) < 3:
            continue
        rho = float(spearmanr(ds, ps).statistic)
        best = ds[int(np.argmax(ps))]
        key = key or f"rho {rho:.2f}, best depth {best}"
        parts.append(
            f"mask {mask} (with skips): Spearman rho(depth, PSNR) = {rho:.2f}, best depth {best} of "
            f"{ds[0]}..{ds[-1]}; depth {ds[-1]} vs {ds[0]}: {ps[-1]:.2f} vs {ps[0]:.2f} dB"
        )
        verdicts.append("supported" if rho > RHO and best >= ds[-1] - 1 else ("mixed" if rho > 0 else "not supported"))
    if not verdicts:
        return {"verdict": "no data", "evidence": "no depth sweep", "rule": rule}
    verdict = verdicts[0] if len(set(verdicts)) == 1 else "mixed"
    return _decided(depth_runs, {"verdict": verdict, "key": key, "evidence": "; ".join(parts) + ".", "rule": rule})


def skips_hurt_shallow(arch: Records) -> dict[str, Any]:
    rule = f"supported if removing skips gains > {SKIP_DB} dB on average at depths 1-{SHALLOW_DEPTH}"
    depth_runs = [(r, x) for r, x in _dip(arch) if r.label.startswith("depth")]
    with_skip = _arch_means(depth_runs, lambda r: r.depth if r.skip else None)
    without = _arch_means(depth_runs, lambda r: None if r.skip else r.depth)
    parts, shallow, deep = [], [], []
    for mask in with_skip:
        common = sorted(set(with_skip[mask]) & set(without.get(mask, {})))
        for d in common:
            (shallow if d <= SHALLOW_DEPTH else deep).append(without[mask][d] - with_skip[mask][d])
        if common:
            parts.append(
                f"mask {mask}: no-skip minus skip by depth "
                + ", ".join(f"{d}: {without[mask][d] - with_skip[mask][d]:+.2f}" for d in common)
            )
    if not shallow:
        return {"verdict": "no data", "evidence": "no shallow depths with and without skips", "rule": rule}
    m = float(np.mean(shallow))
    verdict = "supported" if m > SKIP_DB else ("not supported" if m < -SKIP_DB else "mixed")
    md = f"{np.mean(deep):+.2f}" if deep else "n/a"
    return _decided(
        depth_runs,
        {
            "verdict": verdict,
            "key": f"{m:+.2f} dB at depth <= {SHALLOW_DEPTH}",
            "evidence": "; ".join(parts) + f" dB. Mean at depth <= {SHALLOW_DEPTH}: {m:+.2f} dB; deeper: {md} dB.",
            "rule": rule,
        },
    )


CLAIMS = (
    "1. Early stopping matters",
    "2. DIP beats Papyan et al.",
    "3. Structure should fit the task",
    "4. The network is the prior",
    "5. Deeper is better",
    "6. Skip connections hurt shallow nets",
)


# the experiments each claim's evidence comes from (in CLAIMS order)
NEEDS = (("table1", "arch", "optim"), ("table1",), ("table1", "arch"), ("table1", "arch"), ("arch",), ("arch",))


def score(
    table1: Records,
    arch: Records,
    optim: Records,
    comparable: bool,
    figures: Records = (),
    partial: dict[str, str] | None = None,
):
    """A DataFrame: claim, verdict, key number, evidence (computed from the records), rule, regime.

    ``partial``: experiment -> its coverage line, for the experiments not completely stored; a claim
    that needs one of them is "undecided: partial results", its numbers shown for what is stored."""
    import pandas as pd

    kate = [(r, x) for r, x in figures if r.mask != "none"]  # kate's inpainting figure; Fig. 2 is no inpainting
    results = [
        early_stopping(table1 + arch + optim + kate, optim),
        dip_vs_papyan(table1, comparable),
        structure_fits_task(table1, arch),
        network_is_prior(table1, arch, figures),  # the Fig. 2 runs among them
        deeper_is_better(arch),
        skips_hurt_shallow(arch),
    ]
    for result, needs in zip(results, NEEDS):
        waiting = [partial[e] for e in needs if partial and e in partial]
        if waiting and result["verdict"] != "no data":
            result["evidence"] += f" Partial results ({' '.join(waiting)}): the verdict waits for the rest."
            result["verdict"] = PARTIAL
    return pd.DataFrame(
        [
            {
                "claim": c,
                "verdict": v["verdict"],
                "key": v.get("key", ""),
                "evidence": v["evidence"],
                "rule": v["rule"],
                "regime": v.get("regime", ""),
            }
            for c, v in zip(CLAIMS, results)
        ]
    )
