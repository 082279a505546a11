"""The "sudden drops" of PSNR during a fit: every fall between two consecutive checks counted from
the history (``scores.interval_drops``), and the outputs at the bottom of the deepest falls kept by a fit
callback (``DropRecorder``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .solver import CheckState

_DROP_FIELDS = ("start_iteration", "bottom_iteration", "from_psnr", "to_psnr")


@dataclass
class Drop:
    start_iteration: int
    bottom_iteration: int
    from_psnr: float
    to_psnr: float
    output: np.ndarray | None = field(default=None, repr=False)

    @property
    def depth(self) -> float:
        return self.from_psnr - self.to_psnr


class DropRecorder:
    """Fit callback for the images of the deepest falls: a fall starts when PSNR (of the clean output
    against the ground truth, else of the iterate, else on observed pixels) drops by more than
    ``threshold_db`` from one check to the next and lasts while it keeps falling (so it may span
    several checks); the ``keep`` deepest are kept with the output at their bottom. To count drops
    use ``scores.interval_drops`` on the history: this keeps only ``keep`` of them."""

    def __init__(self, threshold_db: float = 1.0, keep: int = 3) -> None:
        self.threshold_db = threshold_db
        self.keep = keep
        self.drops: list[Drop] = []
        self._prev: tuple[int, float] | None = None
        self._open: Drop | None = None

    def on_check(self, state: CheckState) -> None:
        clean = state.psnr_clean is not None and state.clean_output is not None
        value = state.psnr_clean if clean else (state.psnr if state.psnr is not None else state.psnr_observed)
        output = state.clean_output if clean else state.output
        if self._open is not None:
            if value < self._open.to_psnr:
                self._open.to_psnr, self._open.bottom_iteration = value, state.iteration
                self._open.output = output.detach().float().cpu().numpy()[0]
            else:
                self._close()
        elif self._prev is not None and self._prev[1] - value > self.threshold_db:
            self._open = Drop(
                self._prev[0], state.iteration, self._prev[1], value, output.detach().float().cpu().numpy()[0]
            )
        self._prev = (state.iteration, value)

    def state_dict(self) -> dict:
        """The recorder's state as tensors and plain values (``dip_lib.core.resume``)."""

        def pack(d: Drop | None) -> dict | None:
            if d is None:
                return None
            out = None if d.output is None else torch.from_numpy(d.output.copy())
            return {**{k: getattr(d, k) for k in _DROP_FIELDS}, "output": out}

        return {"drops": [pack(d) for d in self.drops], "prev": self._prev, "open": pack(self._open)}

    def load_state_dict(self, state: dict) -> None:
        def unpack(d: dict | None) -> Drop | None:
            if d is None:
                return None
            return Drop(**{k: d[k] for k in _DROP_FIELDS}, output=None if d["output"] is None else d["output"].numpy())

        self.drops = [unpack(d) for d in state["drops"]]
        self._prev = None if state["prev"] is None else tuple(state["prev"])
        self._open = unpack(state["open"])

    def _close(self) -> None:
        if self._open is not None:
            self.drops.append(self._open)
            self.drops.sort(key=lambda d: d.depth, reverse=True)
            del self.drops[self.keep :]
            self._open = None

    def result(self) -> list[Drop]:
        self._close()
        return list(self.drops)
