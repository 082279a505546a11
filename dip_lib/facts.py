"""Numbers for a notebook's Markdown: formatted for the page, a dash where there is none, and glued
(``myst_nb.glue``) under the names the Markdown cites with {glue:text}`name`."""

from __future__ import annotations

import math
from typing import Any

NBSP = "\u00a0"
DASH = "\u2013"


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def num(value: Any, spec: str = ".2f") -> str:
    """A number for a glued sentence: formatted by ``spec``, a dash when there is none."""
    v = number(value)
    return DASH if v is None else format(v, spec)


def glue_facts(facts: dict[str, Any], prefix: str = "") -> None:
    """Glue each value of ``facts`` (not displayed) under ``prefix + key``."""
    from myst_nb import glue

    for key, value in facts.items():
        glue(prefix + key, value, display=False)
