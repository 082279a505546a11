"""The paper's figures at a profile's scale: their plan, and the numbers each paragraph of notebook
07 cites, formatted for the page (a dash where nothing is stored), for ``myst_nb.glue``.
The figures come from ``plots.fig2_curves`` and ``plots.kate_figure``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .facts import DASH, listing, num, side
from .runs import FIG2_TARGETS, Profile, Run, get_profile, widths
from .scores import Records, fig2_quarter_losses

TARGETS = ("image", "noisy", "shuffled", "noise")


def plan(prof: Profile, seeds: tuple[int, ...] | None = None) -> list[Run]:
    """The paper's figures at this scale: Fig. 2 (fitting a natural image, it plus noise, its pixels
    shuffled, and U(0, 1) noise, no mask) on kate and the profile's ``fig2_images``, and kate's
    inpainting with the original mask beside biharmonic."""
    seeds = seeds or prof.seeds_sweep
    runs: list[Run] = []
    base = dict(
        experiment="figures",
        profile=prof.name,
        image="kate",
        source="dip",
        resize=prof.kate_size,
        preset="table1-seed",
        net=widths(prof.figure_width),
    )
    fig2 = [base] + [{**base, "image": image, "source": "table1", "resize": None} for image in prof.fig2_images]
    for seed in seeds:
        for where in fig2:
            for target in FIG2_TARGETS:
                runs.append(
                    Run(
                        mask="none",
                        target=target,
                        iterations=prof.fig2_iterations,
                        seed=seed,
                        log_every=max(1, prof.log_every // 2),
                        label=f"fig2 {target}",
                        **where,
                    )
                )
        runs.append(
            Run(
                **{**base, "preset": "text"},
                mask="file",
                iterations=prof.kate_iterations,
                seed=seed,
                log_every=prof.log_every,
                label="kate",
            )
        )
    runs.append(Run(**{**base, "preset": ""}, mask="file", method="biharmonic", label="kate biharmonic"))
    return runs


def fig2_facts(records: Records) -> dict[str, Any]:
    """The loss each Fig. 2 target reaches at a quarter of the budget (mean over images and seeds), each
    other target's as a multiple of the natural image's (per image over its seeds' means, then the
    geometric mean over images), and how many of them the image is fitted faster than."""
    per_image = fig2_quarter_losses(records)
    at = {
        t: float(np.mean([v[t] for v in per_image.values() if t in v]))
        for t in TARGETS
        if any(t in v for v in per_image.values())
    }
    out: dict[str, Any] = {f"{t}_loss": num(at.get(t), ".2e") for t in TARGETS}
    ratios = {t: [v[t] / v["image"] for v in per_image.values() if t in v and v.get("image")] for t in TARGETS[1:]}
    ratio = {t: float(np.exp(np.mean(np.log(r)))) for t, r in ratios.items() if r}
    for t in TARGETS[1:]:
        out[f"{t}_ratio"] = num(ratio.get(t), ".1f")
    out["slower"] = sum(1 for t in ratio.values() if t > 1)
    out["others"] = len(ratio)
    out["images"] = listing(list(per_image)) or DASH
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


def scale_facts(prof: Profile) -> dict[str, Any]:
    """The figures' scale at ``prof``, for the notebook's setup paragraph."""
    return {
        **prof.scale_facts(),
        "size": side(prof.kate_size),
        "width": prof.figure_width or 128,
        "fig2_iterations": prof.fig2_iterations,
        "fig2_images": listing(["kate", *prof.fig2_images]),
        "fig2_paper_images": listing(["kate", *get_profile("paper").fig2_images]),
        "kate_iterations": prof.kate_iterations,
        "seeds": listing(prof.seeds_sweep),
    }
