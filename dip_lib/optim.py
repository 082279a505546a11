"""The optimiser sweep's numbers for the narrative of notebook 03: the values each paragraph cites,
formatted for the page (a dash where nothing is stored), for ``myst_nb.glue``. The sweep's table
comes from ``plots.optim_table``."""

from __future__ import annotations

from typing import Any

from .facts import DASH, NBSP, num
from .scores import Records, interval_drops


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
    """Falls of the clean PSNR by more than 1 dB between two consecutive checks, over all runs, and
    the output images the runs keep (the bottoms of their three deepest multi-check falls)."""
    return {
        "falls": sum(len(interval_drops(x["history"]["iteration"], x["history"]["psnr_clean"])) for _, x in records),
        "kept": sum(len(x.get("drops") or ()) for _, x in records),
    }
