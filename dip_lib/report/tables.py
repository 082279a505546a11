"""Tables for people: a DataFrame shown with no index, integers as integers, a dash for a missing
value, and numbers that do not break across lines."""

from __future__ import annotations

import numpy as np

from .facts import DASH, NBSP

PM = f"{NBSP}\u00b1{NBSP}"


class Table:
    """A DataFrame shown to readers: no index, integers as integers, no NaN, cells that do not wrap
    inside a number. ``repr`` is the plain text (stable for nbval), ``_repr_html_`` the page."""

    def __init__(self, df, caption: str = "", wrap_last: bool = False, css: str = "") -> None:
        self.df = _tidy(df)
        self.caption = caption
        self.wrap_last = wrap_last  # the last column holds prose: let it wrap
        self.css = css  # one more class for the page's style sheet

    def __repr__(self) -> str:
        return (self.caption + "\n" if self.caption else "") + self.df.to_string(index=False)

    def _repr_html_(self) -> str:
        import html

        classes = " ".join(["dip-table"] + ["dip-wrap-last"] * self.wrap_last + [self.css] * bool(self.css))
        body = self.df.to_html(index=False, classes=classes, border=0, na_rep=DASH)
        cap = f'<p class="dip-caption">{html.escape(self.caption)}</p>' if self.caption else ""
        return cap + body


def _tidy(df):
    """Floats that are all whole numbers become integers; other floats get 2 decimals; NaN a dash."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype.kind == "f":
            vals = s.dropna()
            if len(vals) and (vals == vals.round()).all() and vals.abs().max() < 1e12:
                out[col] = [DASH if (v is None or not np.isfinite(v)) else f"{round(v)}" for v in s]
            else:
                out[col] = [DASH if (v is None or not np.isfinite(v)) else f"{v:.2f}" for v in s]
        elif s.dtype.kind == "O":
            out[col] = [DASH if v is None or (isinstance(v, float) and not np.isfinite(v)) else v for v in s]
    return out


def pm(mean: float, std: float, n: int) -> str:
    """'31.30 ± 0.51' with non-breaking spaces (one seed: '31.30'; none: a dash)."""
    if not n or mean is None or not np.isfinite(mean):
        return DASH
    return f"{mean:.2f}{PM}{std:.2f}" if n > 1 else f"{mean:.2f}"
