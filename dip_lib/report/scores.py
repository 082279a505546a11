"""Numbers from stored records: the oracle, whether a run reached its regime, per-image aggregates.

Every function takes records as returned by ``experiments.load_records``: (Run, record dict).
Spreads are sample standard deviations (ddof = 1) over seeds, with n stated beside them.
Nothing here draws (that is ``plots``) or computes a fit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from .runs import Run

Records = list[tuple[Run, dict[str, Any]]]

# a run has reached its regime when its last LATE_SHARE of iterations gained less than FLAT_DB of
# clean-output PSNR over the best before them (it has flattened, or peaked and fallen)
LATE_SHARE = 0.2
FLAT_DB = 0.2


def oracle(rec: dict[str, Any]) -> float | None:
    """Oracle PSNR of a DIP run: the best clean-output PSNR over its checks, the final output being
    the last check (so oracle >= final). A peer's record has no checks: its final PSNR."""
    s = rec["summary"]
    return s.get("oracle_psnr", s.get("final_psnr"))


def oracle_iteration(rec: dict[str, Any]) -> int | None:
    """The iteration of the oracle check (the iterations run when the final output is the best)."""
    return rec["summary"].get("oracle_iteration")


def hole_psnr(rec: dict[str, Any], which: str = "oracle") -> float | None:
    """PSNR over the missing pixels only, of the oracle or the final output."""
    return rec["summary"].get(f"{which}_hole_psnr")


def late_gain(rec: dict[str, Any]) -> float | None:
    """Clean-PSNR gain of the last LATE_SHARE of a DIP run's iterations: best over all checks minus
    the best at or before (1 - LATE_SHARE) of the iterations; None without a clean history."""
    h = rec.get("history") or {}
    its, vals = h.get("iteration") or [], h.get("psnr_clean") or []
    pts = [(i, v) for i, v in zip(its, vals) if v is not None]
    if len(pts) < 2:
        return None
    cut = (1 - LATE_SHARE) * pts[-1][0]
    early = [v for i, v in pts if i <= cut]
    if not early:
        return None
    return max(v for _, v in pts) - max(early)


def reached_regime(rec: dict[str, Any]) -> bool | None:
    gain = late_gain(rec)
    return None if gain is None else gain < FLAT_DB


def regime_share(records: Records) -> tuple[int, int]:
    """(runs that reached their regime, DIP runs with a clean history)."""
    flags = [reached_regime(x) for r, x in records if r.method == "dip"]
    flags = [f for f in flags if f is not None]
    return sum(flags), len(flags)


def mean_std(values: Iterable[float | None]) -> tuple[float, float, int]:
    """(mean, sample std with ddof 1 (0 for one value), n) over the finite values; (nan, nan, 0) if none."""
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return float("nan"), float("nan"), 0
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def by(records: Records, key) -> dict[Any, Records]:
    out: dict[Any, Records] = defaultdict(list)
    for run, rec in records:
        out[key(run)].append((run, rec))
    return out


def table1_values(records: Records, preset: str) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per image: (mean, std, n) over seeds of the oracle, final, EMA and ES-WMV PSNRs (clean
    outputs), the hole PSNRs, the oracle iteration, guard restores, time, and the peers' PSNRs."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for image, rows in by(records, lambda r: r.image).items():
        dip = [rec for run, rec in rows if run.method == "dip" and run.preset == preset]
        s = [r["summary"] for r in dip]
        cell = {
            "oracle": mean_std(oracle(r) for r in dip),
            "final": mean_std(x["final_psnr"] for x in s),
            "ema": mean_std(x["ema_psnr"] for x in s),
            "eswmv": mean_std(r["eswmv"].get("psnr_clean") for r in dip),
            "oracle_hole": mean_std(x.get("oracle_hole_psnr") for x in s),
            "final_hole": mean_std(x.get("final_hole_psnr") for x in s),
            "best_it": mean_std(oracle_iteration(r) for r in dip),
            "iterations": mean_std(x["iterations_run"] for x in s),
            "restores": mean_std(x["guard_restores"] for x in s),
            "seconds": mean_std(x["wall_time"] for x in s),
            "masked": mean_std(x["masked_psnr"] for x in s),
            "late_gain": mean_std(late_gain(r) for r in dip),
        }
        for method in ("biharmonic", "csc"):
            peer = [rec for run, rec in rows if run.method == method]
            cell[method] = mean_std(r["summary"]["final_psnr"] for r in peer)
            cell[method + "_s"] = mean_std(r["summary"]["wall_time"] for r in peer)
        out[image] = cell
    return out


def quarter_loss(rec: dict[str, Any]) -> float:
    """A Fig. 2 run's fitting loss at its first check a quarter into the fit."""
    h = rec["history"]
    return h["loss"][next(i for i, it in enumerate(h["iteration"]) if it >= h["iteration"][-1] / 4)]


def fig2_quarter_losses(records: Records) -> dict[str, dict[str, float]]:
    """The paper's Fig. 2 in numbers: per image and target (image, noisy, shuffled, noise), the fitting
    loss after a quarter of the iterations, mean over seeds, from the unmasked (Fig. 2) DIP runs."""
    at: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r, x in records:
        if r.method != "dip" or r.mask != "none":
            continue
        at[r.image][r.target].append(quarter_loss(x))
    return {image: {t: float(np.mean(v)) for t, v in by.items()} for image, by in at.items()}


def interval_drops(
    iterations: list[int], psnr: list[float | None], threshold_db: float = 1.0
) -> list[tuple[int, int, float]]:
    """Every fall of more than ``threshold_db`` between two consecutive checks of a curve, as
    (iteration before, iteration after, dB fallen); checks without a value (None) are skipped."""
    points = [(it, v) for it, v in zip(iterations, psnr) if v is not None and np.isfinite(v)]
    return [(a, b, va - vb) for (a, va), (b, vb) in zip(points, points[1:]) if va - vb > threshold_db]
