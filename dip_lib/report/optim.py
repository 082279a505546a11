"""The optimiser sweep: its plan, and its numbers for the narrative of notebook 03: the values each paragraph cites,
formatted for the page (a dash where nothing is stored), for ``myst_nb.glue``. The sweep's table
comes from ``plots.optim_table``."""

from __future__ import annotations

from typing import Any

from .facts import DASH, NBSP, listing, num, side
from .runs import Profile, Run, widths
from .scores import Records, interval_drops


def plan(prof: Profile, seeds: tuple[int, ...] | None = None) -> list[Run]:
    """kate with the seed report's text mask, seed by seed: Adam at three learning rates, L-BFGS, and
    the seed report's trial 3 (Adam at lr 0.1) with the guard off and on (``seeds`` defaults to the
    profile's)."""
    seeds = seeds or prof.seeds_sweep
    runs: list[Run] = []
    base = dict(
        experiment="optim",
        profile=prof.name,
        image="kate",
        source="dip",
        resize=prof.kate_size,
        mask="text-seed",
        preset="text",
        net=widths(prof.optim_width),
        log_every=max(1, prof.log_every // 2),
    )
    for seed in seeds:
        for opt, lr in (("adam", 0.1), ("adam", 0.01), ("adam", 0.001), ("lbfgs", 0.01)):
            runs.append(
                Run(iterations=prof.optim_iterations, lr=lr, optimizer=opt, seed=seed, label=f"{opt} lr={lr:g}", **base)
            )
        for guard in (False, True):  # the seed's trial 3, which collapsed to black there
            runs.append(
                Run(
                    iterations=prof.trial3_iterations,
                    lr=0.1,
                    optimizer="adam",
                    guard=guard,
                    seed=seed,
                    label=f"trial 3: adam lr=0.1, guard {'on' if guard else 'off'}",
                    **base,
                )
            )
    return runs


def _value(cell: Any) -> float | None:
    """The mean of a '40.35 ± 0.27' cell."""
    try:
        return float(str(cell).split(" ")[0].split(NBSP)[0])
    except ValueError:
        return None


def sweep_facts(df) -> dict[str, Any]:
    """The settings with the highest and lowest oracle PSNR, the one that gives back most after its
    peak (oracle minus final), and the largest drop between two checks."""
    keys = ("top", "top_psnr", "low", "low_psnr", "gives_back", "given_back", "largest_drop")
    if df is None or df.empty:
        return dict.fromkeys(keys, DASH)
    best = [(v, r) for v, r in ((_value(v), r) for v, r in zip(df["best PSNR"], df["optimizer"])) if v is not None]
    top, low = max(best), min(best)
    gap = df.loc[df["best - final (dB)"].idxmax()]
    return dict(
        zip(
            keys,
            (
                top[1],
                num(top[0]),
                low[1],
                num(low[0]),
                gap["optimizer"],
                num(gap["best - final (dB)"]),
                num(df["largest drop (dB)"].max()),
            ),
        )
    )


def drop_facts(records: Records) -> dict[str, Any]:
    """Falls of the clean PSNR of the output a run holds (``plots.held_psnr``: an iterate the guard
    rejected is not one) by more than 1 dB between two consecutive checks, over all runs, and the output
    images the runs keep (the bottoms of their three deepest multi-check falls)."""
    from .plots import held_psnr

    return {
        "falls": sum(len(interval_drops(x["history"]["iteration"], held_psnr(x["history"]))) for _, x in records),
        "kept": sum(len(x.get("drops") or ()) for _, x in records),
    }


def scale_facts(prof: Profile) -> dict[str, Any]:
    """The sweep's scale at ``prof``, for the notebook's setup paragraph."""
    return {
        **prof.scale_facts(),
        "size": side(prof.kate_size),
        "width": prof.optim_width or 128,
        "iterations": prof.optim_iterations,
        "trial3_iterations": prof.trial3_iterations,
        "seeds": listing(prof.seeds_sweep),
    }
