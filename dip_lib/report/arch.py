"""The architecture sweep: its plan, and its numbers for the narrative of notebook 02, on one mask (the seed
report's ``text-seed`` by default, which every profile sweeps): each function returns the values
one paragraph cites, formatted for the page (a dash where nothing is stored), for ``myst_nb.glue``.
The sweep's tables come from ``plots.arch_tables``."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import DipError
from ..core.imageio import atomic_write_bytes, load_image, save_image
from .facts import DASH, listing, num, side
from .runs import Profile, Run, spec_hash, torch_series, widths
from .scores import FLAT_DB, LATE_SHARE

if TYPE_CHECKING:  # the store imports torch, which the CLI's parser (it imports the registry) must not
    from .store import ResultStore

MASK = "text-seed"


def _text_iterations() -> int:
    from ..core.presets import (
        get_preset,
    )  # presets imports torch: not at import time (the CLI's parser imports the registry)

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


# ------------------------------------------------- the prior itself: computed once and stored, never at render

PRIOR_SEED = 0
PRIOR_IN_CHANNELS = 32


def prior_archs(prof: Profile) -> dict[str, Any]:
    """The architectures whose untrained outputs page 02 shows: the three narrowest widths at depth 5
    with skips, and the shallowest and the deepest depth with and without skips."""
    from ..core.presets import sweep_net  # torch: not at import time

    archs = {f"filters={f}": sweep_net(f, 5, True) for f in prof.filters[:3]}
    for d in (prof.depths[0], prof.depths[-1]):
        for s in (True, False):
            archs[f"depth={d}, {'skip' if s else 'no skip'}"] = sweep_net(prof.depth_width, d, s)
    return archs


def prior_spec(prof: Profile, samples: int) -> dict[str, Any]:
    """What the stored untrained outputs depend on (their folder is named by its hash): the networks,
    the side (the deepest net needs 2^depth + 1 px), the samples and seeds, torch's minor version;
    always fp32 on one CPU thread, so the bytes do not depend on the machine that renders the page."""
    return {
        "archs": {k: asdict(v) for k, v in prior_archs(prof).items()},
        "size": max(min(prof.kate_size or 512, 128), 2 ** prof.depths[-1] + 1),
        "samples": samples,
        "seed": PRIOR_SEED,
        "in_channels": PRIOR_IN_CHANNELS,
        "numerics": {"device": "cpu", "precision": "fp32", "threads": 1},
        "torch": torch_series(),
    }


def prior_folder(store: ResultStore, prof: Profile, samples: int) -> Path:
    """results/<profile>/arch-prior/<hash of the spec>/: one PNG per sample and an index.json."""
    return store.root / prof.name / "arch-prior" / spec_hash(prior_spec(prof, samples))[:16]


def _compute_prior(prof: Profile, samples: int, folder: Path) -> None:
    """Each architecture's output f(z) for random weights and a random z, stretched to [0, 1] (raw
    outputs sit near 0.5), saved as 8-bit PNGs; the index is written last, so a killed computation
    leaves no index and is redone."""
    import torch

    from ..core.inputs import noise_input
    from ..core.nets import SkipNet
    from .store import dumps

    spec = prior_spec(prof, samples)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        for r, (name, cfg) in enumerate(prior_archs(prof).items()):
            files = []
            for k in range(samples):
                torch.manual_seed(PRIOR_SEED + k)
                net = SkipNet(replace(cfg, in_channels=PRIOR_IN_CHANNELS, out_channels=3))
                z = noise_input(PRIOR_IN_CHANNELS, spec["size"], spec["size"], seed=PRIOR_SEED + k)
                with torch.no_grad():
                    out = net(z)[0].numpy()
                out = (out - out.min()) / max(1e-8, float(out.max() - out.min()))
                files.append(f"{r}-{k}.png")
                save_image(folder / files[-1], out)
            rows.append({"name": name, "files": files})
    finally:
        torch.set_num_threads(threads)
    atomic_write_bytes(folder / "index.json", dumps({"spec": spec, "rows": rows}))


def prior_outputs(prof: Profile, store: ResultStore, samples: int = 3, compute: bool = False):
    """The stored untrained outputs as ``plots.image_grid`` rows (name, [(title, (C, H, W))]); with
    ``compute`` they are computed first when missing. None when they are not stored."""
    folder = prior_folder(store, prof, samples)
    if compute and not (folder / "index.json").exists():
        _compute_prior(prof, samples, folder)
    try:
        index = json.loads((folder / "index.json").read_text())
        return [
            (row["name"], [(f"sample {k}", load_image(folder / f)) for k, f in enumerate(row["files"])])
            for row in index["rows"]
        ]
    except (OSError, ValueError, KeyError, DipError):
        return None
