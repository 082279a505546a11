"""No-reference early stopping: ES-WMV (Wang et al., "Early Stopping for Deep Image Prior", arXiv 2112.06074).

Windowed moving variance of the last W outputs x_{t-W+1..t}, each flattened to n numbers:
    VAR_t = (1/W) sum_i ||x_i - mean_window||^2 / n
The rule stops once P consecutive updates brought no new minimum of VAR and returns the iterate x_t*
at the minimum t* (its defaults: W = 100, P = 1000; their official notebook ``ES_WMV.ipynb`` in
sun-umn/Early_Stopping_for_DIP keeps the newest iterate of the best window, as here).

Everything per iteration stays on the device: a ring buffer of the window, running sums, and the
minimum (value, iteration, image) tracked with ``torch.where``. The host only reads the device when
the stop could first happen (iteration = last known best + P) and when the VAR curve is flushed
(at fit's checks), so the stop is detected at exactly the iteration the rule names.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)


class ESWMV:
    """ES-WMV as a fit callback: ``fit(..., callbacks=[ESWMV()])``.

    ``on_iteration(it, output)`` takes the detached output (1, C, H, W) every iteration and returns
    True when the rule triggers and ``stop`` is True. With ``stop=False`` the fit runs on and the
    callback only records where it would have stopped (and freezes its choice there).

    Attributes: ``best_output`` (C, H, W) float32 numpy, the iterate at the lowest VAR so far (frozen
    once the rule triggers; None before the first full window), ``best_iteration``,
    ``stop_iteration`` (None if the rule never triggered: then ``best_output`` is only the candidate
    the rule would return at the end of the budget), ``variances`` (list of (iteration, VAR)).
    """

    def __init__(self, window: int = 100, patience: int = 1000, stop: bool = True) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        if patience < 1:
            raise ValueError(f"patience must be positive, got {patience}")
        self.window = int(window)
        self.patience = int(patience)
        self.stop = stop
        self.reset()

    @classmethod
    def for_iterations(cls, n: int, stop: bool = True) -> "ESWMV":
        """Scale W and P to a budget of n iterations: W = max(5, min(100, n // 60)),
        P = max(3 W, min(1000, n // 6)); a 6000-iteration run gets the paper's W = 100, P = 1000."""
        window = max(5, min(100, n // 60))
        patience = max(3 * window, min(1000, n // 6))
        return cls(window, patience, stop)

    def reset(self) -> None:
        self.stop_iteration: int | None = None
        self._count = 0  # outputs pushed so far
        self._buf: torch.Tensor | None = None  # (W, n) ring buffer of the window
        self._shift: torch.Tensor | None = None  # centre c of the running sums (limits cancellation)
        self._sum: torch.Tensor | None = None  # sum_i (x_i - c), shape (n,)
        self._sumsq: torch.Tensor | None = None  # sum_i ||x_i - c||^2, 0-d
        self._best_var: torch.Tensor | None = None
        self._best_it: torch.Tensor | None = None
        self._best_out: torch.Tensor | None = None
        self._shape: tuple[int, ...] | None = None
        self._deadline: int | None = None  # first iteration at which the rule could trigger
        self._pending: list[tuple[int, torch.Tensor]] = []
        self._variances: list[tuple[int, float]] = []

    def _start(self, x: torch.Tensor) -> None:
        acc = torch.float32 if x.device.type == "mps" else torch.float64  # MPS has no float64
        n = x.numel()
        self._buf = torch.empty((self.window, n), dtype=x.dtype, device=x.device)
        self._shift = x.to(acc).clone()
        self._sum = torch.zeros(n, dtype=acc, device=x.device)
        self._sumsq = torch.zeros((), dtype=acc, device=x.device)
        self._best_var = torch.full((), float("inf"), dtype=acc, device=x.device)
        self._best_it = torch.zeros((), dtype=torch.long, device=x.device)

    def _recentre(self) -> None:
        """Recompute the sums exactly around the current window mean (drops accumulated rounding)."""
        buf = self._buf.to(self._sum.dtype)
        self._shift = buf.mean(0)
        d = buf - self._shift
        self._sum = d.sum(0)
        self._sumsq = d.pow(2).sum()

    def on_iteration(self, it: int, output: torch.Tensor) -> bool:
        x = output.detach().reshape(-1)
        if self._buf is None:
            self._shape = tuple(output.shape[-3:])
            self._start(x)
        slot = self._count % self.window
        d = x.to(self._sum.dtype) - self._shift
        self._sum += d
        self._sumsq += d.pow(2).sum()
        if self._count >= self.window:
            old = self._buf[slot].to(self._sum.dtype) - self._shift
            self._sum -= old
            self._sumsq -= old.pow(2).sum()
        self._buf[slot] = x
        self._count += 1
        if self._count < self.window:
            return False
        if self._count % self.window == 0:
            self._recentre()
        w, n = self.window, x.numel()
        var = (self._sumsq / w - (self._sum / w).pow(2).sum()).clamp_min(0) / n
        self._pending.append((it, var))
        if self.stop_iteration is not None:  # already triggered: keep the curve, freeze the choice
            return False
        better = var < self._best_var
        self._best_var = torch.where(better, var, self._best_var)
        self._best_it = torch.where(better, it, self._best_it)
        self._best_out = x.clone() if self._best_out is None else torch.where(better, x, self._best_out)
        if self._deadline is None:
            self._deadline = it + self.patience  # this first VAR is the first minimum
        if it < self._deadline:
            return False
        best = int(self._best_it)  # the one host read per possible stop
        if it - best < self.patience:
            self._deadline = best + self.patience
            return False
        self.stop_iteration = it
        log.info(
            "ES-WMV: VAR had no new minimum for %d iterations; stop at %d, best iterate %d", self.patience, it, best
        )
        return self.stop

    _STATE = (
        "stop_iteration",
        "_count",
        "_buf",
        "_shift",
        "_sum",
        "_sumsq",
        "_best_var",
        "_best_it",
        "_best_out",
        "_shape",
        "_deadline",
        "_variances",
    )

    def state_dict(self) -> dict:
        """What the rest of the fit's stopping depends on (tensors and plain values; ``dip_lib.core.resume``)."""
        self._flush()
        return {k: getattr(self, k) for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        self.reset()
        for k in self._STATE:
            setattr(self, k, state[k])
        self._shape = None if self._shape is None else tuple(self._shape)
        self._variances = [tuple(v) for v in self._variances]

    def on_check(self, state) -> None:
        """At fit's checks (which sync anyway) move the pending VAR values to the host."""
        self._flush()

    def _flush(self) -> None:
        if self._pending:
            values = torch.stack([v for _, v in self._pending]).cpu().tolist()
            self._variances.extend(zip((i for i, _ in self._pending), values))
            self._pending = []

    @property
    def variances(self) -> list[tuple[int, float]]:
        self._flush()
        return list(self._variances)

    @property
    def best_iteration(self) -> int | None:
        return None if self._best_out is None else int(self._best_it)

    @property
    def best_output(self) -> np.ndarray | None:
        if self._best_out is None:
            return None
        return self._best_out.float().cpu().numpy().reshape(self._shape)
