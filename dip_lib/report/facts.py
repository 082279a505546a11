"""Numbers for a notebook's Markdown: formatted for the page, a dash where there is none, and glued
(``myst_nb.glue``) under the names the Markdown cites with {glue:text}`name`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

NBSP = "\u00a0"
DASH = "\u2013"


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def mean_of(values: Iterable[Any]) -> float | None:
    """The mean of the finite numbers among ``values``, or None."""
    vals = [v for v in (number(x) for x in values) if v is not None]
    return float(np.mean(vals)) if vals else None


def num(value: Any, spec: str = ".2f") -> str:
    """A number for a glued sentence: formatted by ``spec``, a dash when there is none."""
    v = number(value)
    return DASH if v is None else format(v, spec)


def listing(values: Any) -> str:
    """'2, 3, 4' (a dash for none)."""
    out = ", ".join(map(str, values))
    return out or DASH


def side(px: int | None, native: str = "512x512") -> str:
    """A square image's size: '96x96', or ``native`` where it is not resized."""
    return f"{px}x{px}" if px else native


def glue_facts(facts: dict[str, Any], prefix: str = "") -> None:
    """Glue each value of ``facts`` (not displayed) under ``prefix + key``."""
    from myst_nb import glue

    for key, value in facts.items():
        glue(prefix + key, value, display=False)
