"""Statistical parity of a speed lever that changes the arithmetic (bf16, another memory format).

A lever may be adopted only when the PSNRs it reaches are statistically indistinguishable, within
a stated tolerance, from the baseline's (fp32). ``parity_verdict`` is the rule, on numbers;
``measure_parity`` runs the fits that feed it (same images, masks, seeds and noise streams for
every arm, so the differences are paired).

The rule (an equivalence test, two one-sided tests at level alpha):

* inputs: PSNR per (image, seed) for the baseline and the candidate, >= 3 seeds for every image,
  and optionally a *control*: the baseline run again with a perturbation that changes only the
  rounding (fp32 with the other memory format), i.e. the baseline's own run-to-run spread;
* d_i = PSNR_candidate - PSNR_baseline for each pair; tolerance
  delta = max(tol_db, RMS of control - baseline): bf16 is not asked to be closer to fp32 than fp32
  is to itself under a change of rounding;
* parity iff the (1 - 2 alpha) confidence interval of mean(d) (Student t over the pairs) lies in
  [-delta, +delta], and no image's own mean difference falls below -delta (a lever must not
  cost one image systematically while gaining on another).

The seed-to-seed spread of the baseline per image (how much the seed alone moves PSNR) is
reported beside the verdict for scale; a difference far below it is irrelevant in practice.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

TOLERANCE_DB = 0.2
ALPHA = 0.05
MIN_SEEDS = 3

RULE = (
    "parity iff the 90% CI (Student t, paired over (image, seed)) of mean(PSNR_candidate - PSNR_fp32) lies "
    "within +-delta, delta = max(0.2 dB, RMS of the fp32 control's difference), and no image's mean difference "
    "is below -delta; >= 3 seeds per image"
)

Key = tuple[str, int]  # (image, seed)


@dataclass
class ParityVerdict:
    """The outcome of ``parity_verdict`` (differences are candidate minus baseline, in dB)."""

    passed: bool
    n_pairs: int
    mean_diff_db: float
    ci_low_db: float
    ci_high_db: float
    tolerance_db: float
    control_rms_db: float | None
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    reason: str = ""
    rule: str = RULE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _t_quantile(p: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


def parity_verdict(
    baseline: Mapping[Key, float],
    candidate: Mapping[Key, float],
    control: Mapping[Key, float] | None = None,
    tol_db: float = TOLERANCE_DB,
    alpha: float = ALPHA,
    min_seeds: int = MIN_SEEDS,
) -> ParityVerdict:
    """Decide parity of ``candidate`` with ``baseline`` (see the module docstring for the rule).

    Each mapping goes from (image, seed) to a PSNR in dB; ``candidate`` and ``control`` must have
    exactly the baseline's keys. Raises ValueError on mismatched keys, non-finite values or fewer
    than ``min_seeds`` seeds for an image.
    """
    keys = sorted(baseline)
    if set(candidate) != set(keys) or (control is not None and set(control) != set(keys)):
        raise ValueError("baseline, candidate and control need the same (image, seed) pairs")
    images = sorted({img for img, _ in keys})
    for img in images:
        seeds = {s for i, s in keys if i == img}
        if len(seeds) < min_seeds:
            raise ValueError(f"image {img!r} has {len(seeds)} seeds; the rule needs >= {min_seeds}")
    arms = [baseline, candidate] + ([control] if control is not None else [])
    if not all(math.isfinite(a[k]) for a in arms for k in keys):
        raise ValueError("a PSNR is not finite (a diverged run cannot be at parity)")
    diffs = [candidate[k] - baseline[k] for k in keys]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if n > 1 else 0.0
    half = _t_quantile(1 - alpha, n - 1) * sd / math.sqrt(n)
    control_rms = None
    delta = tol_db
    if control is not None:
        control_rms = math.sqrt(statistics.fmean((control[k] - baseline[k]) ** 2 for k in keys))
        delta = max(tol_db, control_rms)
    per_image = {}
    for img in images:
        ks = [k for k in keys if k[0] == img]
        d = [candidate[k] - baseline[k] for k in ks]
        base = [baseline[k] for k in ks]
        per_image[img] = {
            "mean_diff_db": statistics.fmean(d),
            "min_diff_db": min(d),
            "max_diff_db": max(d),
            "baseline_mean_db": statistics.fmean(base),
            "baseline_seed_sd_db": statistics.stdev(base),
        }
    lo, hi = mean - half, mean + half
    worst = min(images, key=lambda i: per_image[i]["mean_diff_db"])
    ci_inside = -delta <= lo and hi <= delta
    image_ok = per_image[worst]["mean_diff_db"] >= -delta
    if not ci_inside:
        reason = f"the CI [{lo:+.3f}, {hi:+.3f}] dB of the mean difference is not within +-{delta:.3f} dB"
    elif not image_ok:
        reason = f"image {worst} loses {-per_image[worst]['mean_diff_db']:.3f} dB on average (> {delta:.3f} dB)"
    else:
        reason = f"the CI [{lo:+.3f}, {hi:+.3f}] dB lies within +-{delta:.3f} dB"
    passed = ci_inside and image_ok
    return ParityVerdict(
        passed=passed,
        n_pairs=n,
        mean_diff_db=mean,
        ci_low_db=lo,
        ci_high_db=hi,
        tolerance_db=delta,
        control_rms_db=control_rms,
        per_image=per_image,
        reason=reason,
    )


# ---------------------------------------------------------------------------------------------
# the measurement

# arm name -> FitConfig overrides on top of the preset's plain fp32 loop (fused Adam everywhere:
# it is adopted on every device and changes nothing but rounding)
ARMS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "fp32-control": {"channels_last": True},  # fp32 with other kernels: the baseline's rounding spread
    "bf16": {"precision": "bf16"},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True},
}
PARITY_IMAGES = ("barbara", "boat", "house")


def parity_problem(image: str, size: int, mask_seed: int = 0) -> tuple[Any, Any, str]:
    """A ``size`` x ``size`` center crop of a Table-1 image (or, without the data, of an embedded
    image) with a 50% Bernoulli mask: (truth (1, s, s), mask (1, s, s), source)."""
    import numpy as np

    from ..core import data
    from ..core.errors import DipError
    from ..core.masks import bernoulli_mask

    try:
        img, source = data.load_table1([image])[0][1], "table1"
    except DipError:
        img, source = data.load_embedded(["camera"])[0][1], "embedded camera"
    h, w = img.shape[-2:]
    if min(h, w) < size:
        raise DipError(f"image {image} is {w}x{h}, smaller than {size}")
    top, left = (h - size) // 2, (w - size) // 2
    truth = np.ascontiguousarray(img[:, top : top + size, left : left + size])
    return truth, bernoulli_mask((size, size), 0.5, seed=mask_seed), source


def _fit_job(job: dict[str, Any]) -> dict[str, Any]:
    """One fit of the parity study (a top-level function: it runs in worker processes)."""
    from dataclasses import replace

    import torch

    from ..core.inputs import make_input
    from ..core.nets import SkipNet
    from ..core.presets import get_preset
    from ..core.solver import fit

    torch.set_num_threads(job["threads"])
    preset = get_preset(job["preset"])
    truth, mask, source = parity_problem(job["image"], job["size"])
    net_cfg = replace(preset.net, out_channels=truth.shape[0], **job.get("net", {}))
    torch.manual_seed(job["seed"])
    net = SkipNet(net_cfg)
    z = make_input(preset.input_kind, net_cfg.in_channels, job["size"], job["size"], job["seed"])
    cfg = preset.fit_config(
        iterations=job["iterations"],
        seed=job["seed"],
        device="cpu",
        progress=False,
        log_every=max(1, job["iterations"] // 10),
        adam_impl="fused",
        threads=job["threads"],
    )
    res = fit(net, z, truth * mask, mask, replace(cfg, **{**job.get("common", {}), **ARMS[job["arm"]]}), truth)
    return {
        "image": job["image"],
        "seed": job["seed"],
        "arm": job["arm"],
        "source": source,
        "final_psnr": res.final_psnr,
        "best_psnr": res.best_psnr,
        "wall_s": res.wall_time,
        "guard_restores": res.guard_restores,
    }


def measure_parity(
    preset: str = "table1-paper",
    images: tuple[str, ...] = PARITY_IMAGES,
    seeds: tuple[int, ...] = (0, 1, 2),
    size: int = 64,
    iterations: int = 300,
    arms: tuple[str, ...] = tuple(ARMS),
    workers: int = 1,
    threads: int = 1,
    common: dict[str, Any] | None = None,
    **net_overrides: Any,
) -> dict[str, Any]:
    """Fit every (image, seed, arm) on the CPU and judge each non-fp32 arm against fp32 with
    ``parity_verdict`` (final and best PSNR; the final one decides). ``workers`` processes of
    ``threads`` threads each run the fits side by side. ``common``: FitConfig overrides for every
    arm, baseline included (e.g. noise_rng="numpy": the candidates are judged against an fp32
    baseline with the same noise source)."""
    common = dict(common or {})
    from concurrent.futures import ProcessPoolExecutor

    if "fp32" not in arms:
        raise ValueError("the parity study needs the fp32 arm")
    jobs = [
        {
            "preset": preset,
            "image": img,
            "seed": s,
            "arm": a,
            "size": size,
            "iterations": iterations,
            "threads": threads,
            "net": net_overrides,
            "common": common,
        }
        for img in images
        for s in seeds
        for a in arms
    ]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            runs = list(pool.map(_fit_job, jobs))
    else:
        runs = [_fit_job(j) for j in jobs]
    for r in runs:
        log.info("parity %s seed %d %s: final %.3f dB", r["image"], r["seed"], r["arm"], r["final_psnr"])
    table = {
        a: {m: {(r["image"], r["seed"]): r[m] for r in runs if r["arm"] == a} for m in ("final_psnr", "best_psnr")}
        for a in arms
    }
    control = "fp32-control" if "fp32-control" in arms else None
    verdicts = {}
    for a in arms:
        if a in ("fp32", control):
            continue
        verdicts[a] = {
            m: parity_verdict(table["fp32"][m], table[a][m], table[control][m] if control else None).to_dict()
            for m in ("final_psnr", "best_psnr")
        }
        verdicts[a]["passed"] = verdicts[a]["final_psnr"]["passed"]
    return {
        "parity": {
            "preset": preset,
            "size": size,
            "iterations": iterations,
            "images": list(images),
            "seeds": list(seeds),
            "arms": {a: ARMS[a] for a in arms},
            "common_overrides": common,
            "threads_per_fit": threads,
            "net_overrides": net_overrides,
            "rule": RULE,
            "decided_on": "final_psnr",
            "verdicts": verdicts,
            "runs": runs,
        }
    }
