"""Tables (pandas) and figures (matplotlib) for the notebooks, built from stored run records.

Every function takes ``records``: a list of (Run, record dict) as returned by
``experiments.load_records``. Nothing here computes a fit.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler

from .fig8 import IMAGES as FIG8_IMAGES
from .fig8 import NET_NAMES, holes_runs
from .runs import Run, load_problem
from .scores import by as _by
from .scores import hole_psnr, interval_drops, late_gain, oracle, oracle_iteration
from .scores import mean_std as _mean_std
from .store import ResultStore

Records = list[tuple[Run, dict[str, Any]]]

# Okabe & Ito's colour-blind-safe palette (Color Universal Design, 2002), black last; text sizes that
# stay at 10 px or more on a page 1366 px wide (figures are at most about 10 inches at 100 dpi)
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
STYLE = {
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "figure.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
}
PAGE_INCHES = 10.3  # the width a figure has on the page before the browser shrinks it


def styled(build):
    """Build the figure under the report's style (``STYLE``)."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return build(*args, **kwargs)

    return wrapper


def _legend_below(fig, ax, ncol: int) -> None:
    """One legend for the figure, below its panels, off the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(ncol, len(handles)), frameon=False)
        rows = int(np.ceil(len(handles) / ncol))
        fig.tight_layout(rect=(0, min(0.3, 0.35 * rows / fig.get_size_inches()[1]), 1, 1))  # about 0.35 in a row


def held_psnr(history: dict[str, Any]) -> list[float]:
    """The clean output's PSNR of the weights a run holds after each check. At a check where the
    destabilisation guard restored the last good weights (``restored``), the history's ``psnr_clean``
    is that of the iterate the guard threw away; the run goes on from the last good check, so its
    output there is the last good check's (the record's final PSNR is the last value of this series)."""
    out, held = [], np.nan
    for p, restored in zip(history["psnr_clean"], history.get("restored") or [False] * len(history["psnr_clean"])):
        if not restored:
            held = np.nan if p is None else p
        out.append(held)
    return out


def rejected(history: dict[str, Any]) -> tuple[list[int], list[float]]:
    """The checks whose iterate the guard threw away, and that iterate's clean PSNR."""
    pts = [
        (i, p)
        for i, p, r in zip(history["iteration"], history["psnr_clean"], history.get("restored") or ())
        if r and p is not None
    ]
    return [i for i, _ in pts], [p for _, p in pts]


def _pd():
    import pandas as pd

    return pd


def fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or not np.isfinite(mean):
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


# ---------------------------------------------------------------- Table 1


def peers_timing(records: Records):
    pd = _pd()
    rows = []
    for method in ("biharmonic", "csc"):
        secs = [rec["summary"]["wall_time"] for run, rec in records if run.method == method]
        rows.append(
            {"method": method, "runs": len(secs), "median seconds": float(np.median(secs)) if secs else float("nan")}
        )
    for preset, rows_p in _by([(r, x) for r, x in records if r.method == "dip"], lambda r: r.preset).items():
        secs = [rec["summary"]["wall_time"] for _, rec in rows_p]
        devs = sorted({rec["environment"]["device_name"] for _, rec in rows_p})
        rows.append(
            {"method": f"DIP {preset} ({', '.join(devs)})", "runs": len(secs), "median seconds": float(np.median(secs))}
        )
    return pd.DataFrame(rows).round(2)


def _legend_top(fig, axes, ncol: int) -> None:
    """One legend for the figure, at its top under the title (where the eye starts), off the data:
    every label of every panel once."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if not seen:
        fig.tight_layout()
        return
    height = fig.get_size_inches()[1]
    title = 0.45 / height if getattr(fig, "_suptitle", None) else 0.0
    rows = int(np.ceil(len(seen) / ncol))
    fig.legend(
        list(seen.values()),
        list(seen),
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - title),
        ncol=min(ncol, len(seen)),
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - title - 0.3 * rows / height))


# a recipe's colour and a seed's line style: two recipes and two seeds stay four lines a reader tells
# apart (two hues far apart on Okabe & Ito's palette, solid against dashed)
RECIPE_COLOURS = {"table1-paper": OKABE_ITO[0], "table1-seed": OKABE_ITO[3]}
SEED_STYLES = ("-", "--", ":", "-.")


def recipe_seed_style(run: Run) -> dict[str, Any]:
    """The line of one run in a figure of several recipes and seeds: colour by recipe, style by seed."""
    colour = RECIPE_COLOURS.get(run.preset, OKABE_ITO[2])
    return {"color": colour, "ls": SEED_STYLES[run.seed % len(SEED_STYLES)]}


def _curve(ax, rec: dict[str, Any], label: str | None = None, **style) -> None:
    """One run's PSNR against iteration: the output the run holds at each check (``held_psnr``) and,
    where the guard threw an iterate away, that iterate as a faint cross."""
    h = rec["history"]
    (line,) = ax.plot(h["iteration"], held_psnr(h), lw=1, label=label, **style)
    its, ps = rejected(h)
    if its:
        ax.plot(its, ps, "x", ms=2.5, alpha=0.35, color=line.get_color())
        ax.plot([], [], "x", ms=4, color="0.4", label="iterate the guard rejected")  # the legend's one entry


@styled
def psnr_curves(records: Records, group, title: str, ncols: int = 3, label=None, style=None):
    """One panel per group value, one line per run: PSNR (ground truth) of the output the run holds
    vs iteration (``_curve``); ``style(run)``: the line's colour and style; one legend at the top."""
    groups = _by(records, group)
    n = len(groups)
    ncols = min(ncols, n) or 1
    nrows = int(np.ceil(n / ncols)) or 1
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(PAGE_INCHES / 3 * ncols, 2.7 * nrows + 1.0), squeeze=False, sharey=True
    )
    for ax, (key, rows) in zip(axes.flat, groups.items()):
        for run, rec in sorted(rows, key=lambda rx: (rx[0].preset, rx[0].seed)):
            _curve(ax, rec, label(run) if label else None, **(style(run) if style else {}))
        ax.set_title(str(key))
        ax.set_xlabel("iteration")
        ax.set_ylabel("PSNR (dB)")
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(title)
    if label:
        _legend_top(fig, axes.flat[:n], ncol=5)
    else:
        fig.tight_layout()
    return fig


@styled
def image_grid(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], size: float = 2.2):
    """rows: (row title, [(panel title, (C, H, W) image), ...]); panels of ``size`` inches, smaller
    when a row would be wider than the page."""
    ncols = max(len(r[1]) for r in rows)
    size = min(size, PAGE_INCHES / ncols)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(size * ncols, size * len(rows)), squeeze=False)
    for i, (title, panels) in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(panels):
                name, img = panels[j]
                img = np.clip(img, 0, 1)
                ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
                # the row's title once, on its first panel, unless that panel's own title already says it
                ax.set_title(f"{title}\n{name}" if j == 0 and title and title not in name else name, fontsize=10)
    fig.tight_layout()
    return fig


def table1_grid(
    records: Records, store: ResultStore, preset: str, images: Iterable[str] | None = None, size: float = 2.6
):
    rows = []
    for image, recs in _by(records, lambda r: r.image).items():
        if images is not None and image not in images:
            continue
        dip = [
            (r, x)
            for r, x in recs
            if r.method == "dip" and r.preset == preset and r.seed == min(rr.seed for rr, _ in recs)
        ]
        if not dip:
            continue
        run, rec = dip[0]
        gt, _ = load_problem(run)
        panels = [
            ("ground truth", gt),
            ("masked", store.image(run, "observed")),
            (f"best, seed {run.seed}: {rec['summary']['best_psnr']:.2f} dB", store.image(run, "best")),
            (f"final, seed {run.seed}: {rec['summary']['final_psnr']:.2f} dB", store.image(run, "final")),
        ]
        peer = [(r, x) for r, x in recs if r.method == "csc"]
        if peer:
            panels.append((f"CSC: {peer[0][1]['summary']['final_psnr']:.2f} dB", store.image(peer[0][0], "final")))
        rows.append((image, panels))
    return image_grid(rows, size=size) if rows else None


def zoom_box(gt: np.ndarray, outputs: list[np.ndarray], side: int | None = None) -> tuple[int, int, int]:
    """(top, left, side): the square of ``side`` px (default a third of the image's side) where the
    methods' outputs differ most: the largest spread (max minus min over ``outputs``) of their mean
    absolute error inside the square, from the error maps. With fewer than two outputs, where the
    one output errs most."""
    h, w = gt.shape[-2:]
    side = min(h, w, side or max(8, min(h, w) // 3))
    errs = np.stack([np.abs(np.clip(o, 0, 1) - gt).mean(axis=0) for o in outputs]) if outputs else np.zeros((1, h, w))
    # the mean error of every side x side square, per output, from an integral image
    c = np.pad(errs.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    sums = c[:, side:, side:] - c[:, :-side, side:] - c[:, side:, :-side] + c[:, :-side, :-side]
    score = sums.max(axis=0) - sums.min(axis=0) if len(sums) > 1 else sums[0]
    top, left = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(top), int(left), side


@styled
def zoom_compare(
    gt: np.ndarray,
    panels: list[tuple[str, np.ndarray]],
    box: tuple[int, int, int] | None = None,
    size: float = 3.2,
    vmax_error: float = 0.25,
    compare: int = 1,
):
    """Three rows for judging a restoration: the whole images, a zoomed crop (the box drawn on the
    first), and the absolute error against ``gt`` (mean over channels). box: (top, left, side);
    default ``zoom_box`` over the panels from index ``compare`` on (the methods, not the masked input):
    where the methods differ most."""
    from matplotlib.patches import Rectangle

    if box is None:
        box = zoom_box(gt, [img for _, img in panels[compare:]])
    top, left, side = box
    items = [("ground truth", gt), *panels]
    size = min(size, 0.9 * PAGE_INCHES / len(items))  # the colour bar takes the last tenth
    fig, axes = plt.subplots(3, len(items), figsize=(size * len(items) / 0.9, size * 3), squeeze=False)
    im = None
    for j, (name, img) in enumerate(items):
        img = np.clip(img, 0, 1)
        show = lambda a: a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
        axes[0, j].imshow(show(img), cmap="gray", vmin=0, vmax=1)
        axes[0, j].add_patch(Rectangle((left, top), side, side, fill=False, ec="#ff3b30", lw=1.2))
        axes[0, j].set_title(name, fontsize=10)
        axes[1, j].imshow(
            show(img[:, top : top + side, left : left + side]), cmap="gray", vmin=0, vmax=1, interpolation="nearest"
        )
        axes[1, j].set_title("zoom (red box)", fontsize=10)
        err = np.abs(img - gt).mean(axis=0)
        im = axes[2, j].imshow(err, cmap="magma", vmin=0, vmax=vmax_error)
        axes[2, j].set_title(f"|error|, mean {err.mean():.3f}", fontsize=10)
        for i in range(3):
            axes[i, j].axis("off")
    fig.subplots_adjust(left=0.02, right=0.9, top=0.93, bottom=0.02, wspace=0.08, hspace=0.2)
    if im is not None:  # in its own axis, so the error maps keep the size of the images above them
        fig.colorbar(im, cax=fig.add_axes((0.92, 0.04, 0.012, 0.26)), label="absolute error")
    fig.zoom_box = box  # where the zoom is, for the page's words and the tests
    return fig


# ---------------------------------------------------------------- architecture sweep


def arch_tables(records: Records):
    """(filters table, depth table): oracle best and final PSNR, mean ± std over seeds, per mask."""
    pd = _pd()
    f_rows, d_rows = [], []
    for (label, mask), rows in _by(records, lambda r: (r.label, r.mask)).items():
        best = _mean_std(oracle(rec) for _, rec in rows)
        final = _mean_std(rec["summary"]["final_psnr"] for _, rec in rows)
        hole = _mean_std(hole_psnr(rec) for _, rec in rows)
        gain = _mean_std(late_gain(rec) for _, rec in rows)
        params = rows[0][1]["summary"]["params"]
        run = rows[0][0]
        cells = {
            "params": params,
            "n": best[2],
            "best PSNR": fmt(*best),
            "hole PSNR": fmt(*hole),
            "final PSNR": fmt(*final),
            "last 20% gain": gain[0],
            "_best": best[0],
        }
        if not label.startswith("depth"):
            f_rows.append({"mask": mask, "filters": run.filters, **cells})
        else:
            d_rows.append({"mask": mask, "depth": run.depth, "skip": run.skip, **cells})
    fdf = pd.DataFrame(f_rows).sort_values(["mask", "filters"]).reset_index(drop=True) if f_rows else pd.DataFrame()
    ddf = (
        pd.DataFrame(d_rows).sort_values(["mask", "skip", "depth"]).reset_index(drop=True) if d_rows else pd.DataFrame()
    )
    return fdf, ddf


@styled
def arch_plots(records: Records):
    fdf, ddf = arch_tables(records)
    fig, (a, b) = plt.subplots(1, 2, figsize=(PAGE_INCHES, 3.8))
    for mask, sub in fdf.groupby("mask"):
        a.plot(sub["filters"], sub["_best"], "o-", label=f"mask {mask}")
    a.set_xscale("log", base=2)
    a.set_xlabel("filters per layer (depth 5)")
    a.set_ylabel("best PSNR (dB)")
    a.set_title("width")
    a.legend(loc="lower right")
    for (mask, skip), sub in ddf.groupby(["mask", "skip"]):
        b.plot(sub["depth"], sub["_best"], "o-" if skip else "s--", label=f"{mask}, {'skip' if skip else 'no skip'}")
    b.set_xlabel("depth (levels)")
    b.set_ylabel("best PSNR (dB)")
    b.set_title("depth, with and without skips")
    b.legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.tight_layout()
    return fig


def arch_outputs(records: Records, store: ResultStore, mask: str):
    rows = []
    if not records:
        return None
    sel = [(r, x) for r, x in records if r.mask == mask and r.seed == min(rr.seed for rr, _ in records)]
    if not sel:
        return None
    gt, _ = load_problem(sel[0][0])
    rows.append(("", [("ground truth", gt), ("masked", store.image(sel[0][0], "observed"))]))
    for kind in ("filters", "depth"):
        group = [(r, x) for r, x in sel if r.label.startswith("depth") == (kind == "depth")]
        group.sort(key=lambda rx: (not rx[0].skip, rx[0].depth, rx[0].filters or 0))
        for start in range(0, len(group), 4):  # four to a row: outputs large enough to see their artefacts
            chunk = group[start : start + 4]
            rows.append(  # each panel names its setting: no row title to repeat it
                (
                    "",
                    [
                        (f"{r.label}, oracle\nseed {r.seed}: {oracle(x):.1f} dB", store.image(r, "best"))
                        for r, x in chunk
                    ],
                )
            )
    return image_grid(rows, size=2.4)


def prior_grid(rows):
    """The stored untrained outputs (``arch.prior_outputs``), one row per architecture; None: none stored."""
    return image_grid(rows, size=1.8) if rows else None


# ---------------------------------------------------------------- optimiser sweep


def optim_table(records: Records):
    pd = _pd()
    rows = []
    for label, recs in _by(records, lambda r: r.label).items():
        best = _mean_std(oracle(x) for _, x in recs)
        final = _mean_std(x["summary"]["final_psnr"] for _, x in recs)
        ms = float(np.median([x["summary"]["ms_per_iteration"] for _, x in recs]))
        # every fall > 1 dB between consecutive checks of the clean PSNR, from the history (the
        # record's "drops" keep images of the three deepest falls only)
        # of the output the run holds (``held_psnr``): an iterate the guard rejected is not a drop the run took
        drops = [d for _, x in recs for d in interval_drops(x["history"]["iteration"], held_psnr(x["history"]))]
        biggest = max((d[2] for d in drops), default=0.0)
        hole = _mean_std(hole_psnr(x) for _, x in recs)
        rows.append(
            {
                "optimizer": label,
                "n": best[2],
                "best PSNR": fmt(*best),
                "hole PSNR": fmt(*hole),
                "best it": round(np.mean([oracle_iteration(x) for _, x in recs])),
                "final PSNR": fmt(*final),
                "best - final (dB)": best[0] - final[0],
                "drops > 1 dB": len(drops) / len(recs),
                "guard restores": float(np.mean([x["summary"].get("guard_restores") or 0 for _, x in recs])),
                "largest drop (dB)": biggest,
                "ms / iteration": ms,
                "device": recs[0][1]["environment"]["device_name"],
            }
        )
    return pd.DataFrame(rows).round(2)


@styled
def optim_curves(records: Records):
    """Small multiples: one panel per optimiser setting, one line per seed (a shared PSNR axis): the
    output the run holds at each check, the iterates the guard rejected as faint crosses."""
    groups = _by(records, lambda r: r.label)
    ncols = min(3, len(groups)) or 1
    nrows = int(np.ceil(len(groups) / ncols)) or 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_INCHES, 2.8 * nrows + 0.9), squeeze=False, sharey=True)
    for ax, (label, rows) in zip(axes.flat, groups.items()):
        for run, rec in sorted(rows, key=lambda rx: rx[0].seed):
            _curve(ax, rec, f"seed {run.seed}", color=OKABE_ITO[run.seed % len(OKABE_ITO)])
        ax.set_title(label)
        ax.set_xlabel("iteration (L-BFGS: evaluation)" if "lbfgs" in label else "iteration")
        ax.set_ylabel("PSNR (dB)")
    for ax in axes.flat[len(groups) :]:
        ax.axis("off")
    _legend_top(fig, axes.flat[: len(groups)], ncol=4)
    return fig


def optim_drops(records: Records, store: ResultStore):
    rows = []
    for run, rec in records:
        if not rec["drops"]:
            continue
        panels = [
            (f"it {d['bottom_iteration']}: {d['from_psnr']:.1f}->{d['to_psnr']:.1f}", store.image(run, d["image"]))
            for d in rec["drops"]
        ]
        rows.append((f"{run.label} s{run.seed}", panels))
    return image_grid(rows) if rows else None


def reference_table():
    """The published numbers with their sources (the only typed-in values, from data/*.csv)."""
    from ..core.data import TABLE1_ORDER, group71_table1, paper_table1

    pd = _pd()
    g71 = {row["image"]: row for row in group71_table1()}
    rows = []
    for file_name, display in TABLE1_ORDER:
        p = next(r for r in paper_table1() if r["image"] == display)
        g = next((v for k, v in g71.items() if k.startswith(file_name[:4])), None)
        rows.append(
            {
                "image": display,
                "Papyan et al. (paper)": float(p["papyan_psnr"]),
                "DIP (paper)": float(p["dip_psnr"]),
                "group-71 max PSNR": float(g["max_psnr"]) if g else float("nan"),
            }
        )
    df = pd.DataFrame(rows)
    mean = {"image": "mean", **{c: df[c].mean() for c in df.columns if c != "image"}}
    return pd.concat([df, pd.DataFrame([mean])], ignore_index=True).round(2)


# ---------------------------------------------------------------- the paper's figures


@styled
def fig2_curves(records: Records):
    """The paper's Fig. 2: the fitting loss (MSE, log scale) against iteration for a natural image,
    it with noise added, its pixels shuffled, and U(0, 1) noise; one panel per image, one colour per
    target, one line per seed."""
    runs = [(r, x) for r, x in records if r.method == "dip" and r.mask == "none"]
    if not runs:
        return None
    images = list(dict.fromkeys(r.image for r, _ in runs))
    fig, axes = plt.subplots(1, len(images), figsize=(PAGE_INCHES, 3.9), squeeze=False, sharey=True)
    colors = dict(zip(("image", "noisy", "shuffled", "noise"), OKABE_ITO))
    for ax, image in zip(axes[0], images):
        seeds = sorted({r.seed for r, _ in runs if r.image == image})
        for run, rec in runs:
            if run.image == image:
                h = rec["history"]
                first = run.seed == seeds[0]
                ax.plot(
                    h["iteration"], h["loss"], lw=1.2, color=colors.get(run.target), label=run.target if first else None
                )
        ax.set_yscale("log")
        ax.set_title(f"{image} ({len(seeds)} seed{'' if len(seeds) == 1 else 's'})")
        ax.set_xlabel("iteration")
    axes[0][0].set_ylabel("MSE to the target (log)")
    fig.tight_layout()
    _legend_below(fig, axes[0][0], ncol=4)
    return fig


def kate_figure(records: Records, store: ResultStore):
    """kate with the original text mask: ground truth, masked input, DIP at its oracle check (first
    seed) and biharmonic inpainting on the same mask, with whole-image and hole PSNRs."""
    dip = sorted([(r, x) for r, x in records if r.method == "dip" and r.mask == "file"], key=lambda rx: rx[0].seed)
    peer = [(r, x) for r, x in records if r.method == "biharmonic" and r.mask == "file"]
    if not dip and not peer:
        return None
    first = (dip or peer)[0][0]
    gt, _ = load_problem(first)
    panels = [("ground truth", gt), ("masked input", store.image(first, "observed"))]
    for run, rec in dip[:1]:
        s = rec["summary"]
        panels.append(
            (
                f"DIP seed {run.seed}, check {s['oracle_iteration']}\n{s['oracle_psnr']:.2f} dB "
                f"(hole {s['oracle_hole_psnr']:.2f})",
                store.image(run, "best"),
            )
        )
    for run, rec in peer[:1]:
        s = rec["summary"]
        panels.append(
            (f"biharmonic\n{s['final_psnr']:.2f} dB (hole {s['final_hole_psnr']:.2f})", store.image(run, "final"))
        )
    return image_grid([("kate", panels)], size=3.2)


def cost_cells(panels: list[tuple[str, list, list, Any]]) -> list[tuple[str, list, list, list, Any]]:
    """The panels of ``cost_quality``: per problem set ``(title, points, front, choice)`` and recipe,
    one cell of its widths at its usual learning rate and, where it has others, one of its learning
    rates at those widths, as (title, points shown, all points, front, choice, (y low, y high)). A
    cell's front is the problem set's Pareto front where at least one of the front's points is a point
    of the cell inside its PSNR range, else empty: a front drawn where none of its points lie would read
    as a line of the cell's own runs."""
    cells = []
    for title, pts, fr, choice in panels:
        top = max(p.psnr for p in pts)
        ylim = (max(top - 12, min(p.psnr for p in pts) - 0.5), top + 0.5)
        for recipe in sorted({p.recipe for p in pts}):
            mine = [p for p in pts if p.recipe == recipe]
            lrs = [p.lr for p in mine]
            usual = max(set(lrs), key=lrs.count)
            subsets = [(f"{title}\n{recipe}: widths at lr {usual:g}", [p for p in mine if p.lr == usual])]
            others = {p.width for p in mine if p.lr != usual}
            if others:
                label = ", ".join(str(w) for w in sorted(others))
                subsets.append(
                    (f"{title}\n{recipe}: learning rates at {label} filters", [p for p in mine if p.width in others])
                )
            for name, shown in subsets:
                on = fr if any(p in shown and ylim[0] <= p.psnr <= ylim[1] for p in fr) else []
                cells.append((name, shown, pts, on, choice, ylim))
    return cells


@styled
def cost_quality(panels: list[tuple[str, list, list, Any]]):
    """Clean-output PSNR against training compute (GFLOP per fit, log scale) as small multiples
    (``cost_cells``); one line per (width, lr) through its iteration budgets. A cell shows its problem
    set's Pareto front (grey) where some of the front's points are its own; the reference (best point)
    and the cheap choice are marked where they lie."""
    cells = cost_cells(panels)
    if not cells:
        return None
    ncols = 2
    nrows = int(np.ceil(len(cells) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_INCHES, 4.4 * nrows), squeeze=False)
    for ax, (title, shown, _, fr, choice, ylim) in zip(axes.flat, cells):
        lines: dict[tuple, list] = {}
        for p in shown:
            lines.setdefault((p.width, p.lr), []).append(p)
        for (width, lr), ps in sorted(lines.items()):
            ps = sorted(ps, key=lambda p: p.gflop)
            ax.plot(
                [p.gflop for p in ps], [p.psnr for p in ps], marker=".", ms=4, lw=1.2, label=f"{width} f, lr {lr:g}"
            )
        if fr:
            ax.plot([p.gflop for p in fr], [p.psnr for p in fr], color="0.3", lw=4, alpha=0.2, label="Pareto front")
        if choice is not None:
            ref, pick = choice.reference, choice.point
            ax.axhline(ref.psnr - choice.tolerance_db, color="0.4", lw=0.8, ls=":")
            if ref in shown:
                ax.plot(ref.gflop, ref.psnr, "s", mfc="none", mec="k", ms=9, label="best point")
            if pick in shown:
                ax.plot(pick.gflop, pick.psnr, "*", color=OKABE_ITO[3], ms=13, label="cheapest within tolerance")
        ax.set_xscale("log")
        ax.set_xlabel("training compute per fit (GFLOP, log)")
        ax.set_ylabel("clean-output PSNR (dB)")
        ax.set_title(title)
        ax.set_ylim(*ylim)
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    for ax in axes.flat[len(cells) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def fig8_table(records: Records):
    """Final-output PSNR on the missing pixels per image and network: mean ± sd over the stored seeds
    (their count in brackets), biharmonic beside them; a dash where nothing is stored yet."""
    from .tables import Table

    pd = _pd()
    runs = holes_runs(records)
    rows = []
    for image, _, _ in FIG8_IMAGES:
        row = {"image": image}
        for key, name in (("biharmonic", "biharmonic"), *NET_NAMES.items()):
            vals = [
                x["summary"].get("final_hole_psnr")
                for r, x in runs
                if r.image == image and (r.method == key or (r.method == "dip" and r.preset == key))
            ]
            m, sd, n = _mean_std(vals)
            row[name] = f"{fmt(m, sd, n)} ({n})" if n else "-"
        rows.append(row)
    caption = (
        "Fig. 8 at native size: the final output's PSNR on the missing pixels (dB), mean ± sd over the stored "
        "seeds (their number in brackets)."
    )
    return Table(pd.DataFrame(rows), caption)


def _fig8_panels(records: Records, store: ResultStore, image: str) -> list[tuple[str, np.ndarray]]:
    """Ground truth, masked input, biharmonic and the five networks' final outputs (the first stored seed
    of each) on one image's large holes, each titled with its PSNR on the missing pixels (dB)."""
    runs = [(r, x) for r, x in holes_runs(records) if r.image == image]
    if not runs:
        return []
    first = {}
    for r, x in sorted(runs, key=lambda rx: rx[0].seed):
        first.setdefault(r.preset or r.method, (r, x))
    gt, _ = load_problem(runs[0][0])
    panels = [("ground truth", gt), ("masked input", store.image(runs[0][0], "observed"))]
    for key, name in (("biharmonic", "biharmonic"), *NET_NAMES.items()):
        if key in first:
            r, x = first[key]
            panels.append((f"{name}\n{x['summary']['final_hole_psnr']:.2f} dB", store.image(r, "final")))
    return panels


def fig8_figure(records: Records, store: ResultStore, image: str = "library", size: float = 2.5):
    """The paper's Fig. 8 for one image (``_fig8_panels``), in rows of four; None while nothing of it is stored."""
    panels = _fig8_panels(records, store, image)
    rows = [(image if k == 0 else "", panels[k : k + 4]) for k in range(0, len(panels), 4)]
    return image_grid(rows, size=size) if rows else None


def fig8_grid(records: Records, store: ResultStore, images: Iterable[str]):
    """Fig. 8's panels (``_fig8_panels``) for several images, one row each; None while none is stored."""
    rows = [(image, panels) for image in images for panels in [_fig8_panels(records, store, image)] if panels]
    return image_grid(rows) if rows else None
