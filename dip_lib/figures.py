"""The paper's figures at a profile's scale, in numbers for the narrative of notebook 07: the values
each paragraph cites, formatted for the page (a dash where nothing is stored), for ``myst_nb.glue``.
The figures come from ``plots.fig2_curves`` and ``plots.kate_figure``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .facts import num
from .scores import Records, fig2_quarter_losses

TARGETS = ("image", "noisy", "shuffled", "noise")


def fig2_facts(records: Records) -> dict[str, Any]:
    """The loss each Fig. 2 target reaches at a quarter of the budget (mean over seeds), each other
    target's as a multiple of the natural image's, and how many of them the image is fitted faster than."""
    at = fig2_quarter_losses(records)
    base = at.get("image")
    out: dict[str, Any] = {f"{t}_loss": num(at.get(t), ".2e") for t in TARGETS}
    for t in TARGETS[1:]:
        out[f"{t}_ratio"] = num(at[t] / base if base and t in at else None, ".1f")
    out["slower"] = sum(1 for t in TARGETS[1:] if base and t in at and at[t] > base)
    out["others"] = sum(1 for t in TARGETS[1:] if t in at)
    return out


def kate_facts(records: Records) -> dict[str, Any]:
    """DIP on kate's original text mask at its oracle check (mean over seeds, whole image and hole)
    beside biharmonic inpainting of the same mask, and DIP's margin on the hole."""
    dip = [x for r, x in records if r.method == "dip" and r.mask == "file"]
    peer = [x for r, x in records if r.method == "biharmonic" and r.mask == "file"]
    o = float(np.mean([x["summary"]["oracle_psnr"] for x in dip])) if dip else None
    hole = float(np.mean([x["summary"]["oracle_hole_psnr"] for x in dip])) if dip else None
    p = peer[0]["summary"]["final_psnr"] if peer else None
    ph = peer[0]["summary"]["final_hole_psnr"] if peer else None
    return {
        "seeds": len(dip),
        "dip": num(o),
        "dip_hole": num(hole),
        "biharmonic": num(p),
        "biharmonic_hole": num(ph),
        "hole_margin": num(hole - ph if hole is not None and ph is not None else None, "+.2f"),
    }
