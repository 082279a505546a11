"""Resumable fits: the whole state of a fit saved atomically at intervals, and loaded back.

``fit(..., resume=SavedState(path, key))`` saves, every ``every_s`` seconds (at the end of an
iteration), what the next iteration depends on: the weights and BatchNorm buffers, the optimiser's
state, the noise generators, the iteration, the history, the EMA, the snapshots, the guard's good
copy, the best output so far and the state of every callback. A fit given a saved state of the same
``key`` continues from it; on a CPU its history and outputs are then bit-identical to those of a fit
that was never interrupted (timings aside). A state whose key or format differs (another fit's, an
older one) or that cannot be read is discarded with a warning, never used.

The file holds tensors and plain Python values only and is read with ``torch.load(weights_only=True)``:
loading a foreign file cannot run code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

FORMAT = 1  # bump when what a state holds changes: older states are discarded
EVERY_S = 300.0  # the default interval between saves


class SavedState:
    """Where one fit's state is saved (``path``), the fit it belongs to (``key``: a run id, a hash
    of an ``inpaint`` command's inputs) and how often it is saved."""

    def __init__(self, path: str | os.PathLike, key: str, every_s: float = EVERY_S) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be positive, got {every_s}")
        self.path, self.key, self.every_s = Path(path), str(key), float(every_s)
        self._last = time.monotonic()
        self.saves = 0
        self._interrupted = False

    def interrupt(self) -> None:
        """Save at the end of the current iteration (``due``), then stop the fit (KeyboardInterrupt):
        a Ctrl-C keeps the progress since the last save."""
        self._interrupted = True

    def load(self) -> dict[str, Any] | None:
        """The saved state of this fit, or None (nothing saved, or discarded as stale or foreign)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file is discarded, whatever torch raises
            return self._discard(f"it cannot be read ({type(exc).__name__})")
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            return self._discard("it has another format")
        if state.get("key") != self.key:
            return self._discard("it belongs to another fit")
        log.info("resuming from %s at iteration %d", self.path, state["problem"]["it"])
        return state

    def _discard(self, why: str) -> None:
        log.warning("discarding the saved state %s: %s", self.path, why)
        self.remove()
        return None

    def due(self) -> bool:
        return self._interrupted or time.monotonic() - self._last >= self.every_s

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically (a temp file in the same folder, fsynced, then renamed). A
        failed write (a full disk, a folder this process cannot write) stops the saving, not the fit.
        After ``interrupt`` it then raises KeyboardInterrupt."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                torch.save({**state, "format": FORMAT, "key": self.key}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot save the fit's state to %s (%s); it goes on without saving", self.path, exc)
            self.every_s = float("inf")
        else:
            self._last = time.monotonic()
            self.saves += 1
            log.info("saved the fit's state at iteration %d to %s", state["problem"]["it"], self.path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if self._interrupted:
            raise KeyboardInterrupt

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
