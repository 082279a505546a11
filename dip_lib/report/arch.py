"""The architecture sweep: its plan, and its numbers for the narrative of notebook 02, on one mask (the seed
report's ``text-seed`` by default, which every profile sweeps): each function returns the values
one paragraph cites, formatted for the page (a dash where nothing is stored), for ``myst_nb.glue``.
The sweep's tables come from ``plots.arch_tables``."""

from __future__ import annotations

from typing import Any

from .facts import DASH, listing, num, side
from .runs import Profile, Run, widths
from .scores import FLAT_DB, LATE_SHARE

MASK = "text-seed"


def _text_iterations() -> int:
    from ..core.presets import get_preset  # presets imports torch: not at import time (the CLI's parser imports the registry)

    return get_preset("text").iterations


def plan(prof: Profile, seeds: tuple[int, ...] | None = None) -> list[Run]:
    """kate with each sweep mask, seed by seed: the widths at depth 5, then each depth with and without
    skips, every other setting the ``text`` recipe (``seeds`` defaults to the profile's)."""
    seeds = seeds or prof.seeds_sweep
    runs: list[Run] = []
    base = dict(
        experiment="arch", profile=prof.name, image="kate", source="dip", preset="text", log_every=prof.log_every
    )
    for seed in seeds:
        for mask in prof.sweep_masks:
            for f in prof.filters:
                runs.append(
                    Run(
                        resize=prof.kate_size,
                        mask=mask,
                        net=widths(f),
                        iterations=prof.filter_iterations,
                        seed=seed,
                        label=f"{f} filters",
                        **base,
                    )
                )
            for skip in (True, False):
                for d in prof.depths:
                    w = prof.depth_width
                    runs.append(
                        Run(
                            resize=prof.depth_size,
                            mask=mask,
                            net=widths(w, d, w if skip else 0),
                            iterations=prof.depth_iterations,
                            seed=seed,
                            label=f"depth {d}, {'skip' if skip else 'no skip'}",
                            **base,
                        )
                    )
    return runs


def _part(df, mask: str, **match: Any):
    if df is None or df.empty:
        return None
    sub = df[df["mask"] == mask]
    for key, value in match.items():
        sub = sub[sub[key] == value]
    return sub if len(sub) else None


def width_facts(fdf, mask: str = MASK) -> dict[str, Any]:
    """The narrowest and widest networks' best PSNR and the best width."""
    sub = _part(fdf, mask)
    if sub is None:
        return dict.fromkeys(("lo_filters", "lo", "hi_filters", "hi", "best_filters", "best"), DASH)
    sub = sub.sort_values("filters")
    best = sub.loc[sub["_best"].idxmax()]
    lo, hi = sub.iloc[0], sub.iloc[-1]
    return {
        "lo_filters": int(lo["filters"]),
        "lo": num(lo["_best"]),
        "hi_filters": int(hi["filters"]),
        "hi": num(hi["_best"]),
        "best_filters": int(best["filters"]),
        "best": num(best["_best"]),
    }


def depth_facts(ddf, mask: str = MASK) -> dict[str, Any]:
    """With and without skips: the best depth and its PSNR, the shallowest depth's PSNR, and the mean
    change from removing the skips at depths up to 3 and deeper."""
    out: dict[str, Any] = {}
    for skip, name in ((True, "skip"), (False, "noskip")):
        part = _part(ddf, mask, skip=skip)
        if part is None:
            out |= dict.fromkeys((f"{name}_best_depth", f"{name}_best", f"{name}_first_depth", f"{name}_first"), DASH)
            continue
        part = part.sort_values("depth")
        best, first = part.loc[part["_best"].idxmax()], part.iloc[0]
        out |= {
            f"{name}_best_depth": int(best["depth"]),
            f"{name}_best": num(best["_best"]),
            f"{name}_first_depth": int(first["depth"]),
            f"{name}_first": num(first["_best"]),
        }
    sub = _part(ddf, mask)
    shallow = deep = None
    if sub is not None:
        both = sub.pivot_table(index="depth", columns="skip", values="_best")
        if True in both and False in both:
            diff = (both[False] - both[True]).dropna()
            shallow = float(diff[diff.index <= 3].mean()) if (diff.index <= 3).any() else None
            deep = float(diff[diff.index > 3].mean()) if (diff.index > 3).any() else None
    return out | {"shallow_change": num(shallow, "+.2f"), "deep_change": num(deep, "+.2f")}


def regime_facts(df, iterations: int) -> dict[str, Any]:
    """How many of a sweep's settings had flattened by the end of their budget (mean gain over the
    last ``LATE_SHARE`` of iterations below ``FLAT_DB``), at how many iterations against the text
    recipe's own count."""
    gains = df["last 20% gain"].dropna() if df is not None and not df.empty else []
    flat = int((gains < FLAT_DB).sum()) if len(gains) else 0
    return {
        "iterations": iterations,
        "own": _text_iterations(),
        "settings": len(gains),
        "flat": flat,
        "rising": len(gains) - flat,
        "late_share": f"{LATE_SHARE:.0%}",
        "flat_db": FLAT_DB,
    }


def scale_facts(prof: Profile) -> dict[str, Any]:
    """The sweep's scale at ``prof``, for the notebook's setup paragraph."""
    return {
        **prof.scale_facts(),
        "filters": listing(prof.filters),
        "filter_size": side(prof.kate_size),
        "filter_iterations": prof.filter_iterations,
        "depths": listing(prof.depths),
        "depth_width": prof.depth_width,
        "depth_size": side(prof.depth_size),
        "depth_iterations": prof.depth_iterations,
        "masks": listing(prof.sweep_masks),
        "seeds": listing(prof.seeds_sweep),
    }
