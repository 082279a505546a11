"""The results store: ``results/<profile>/<experiment>/<run-id>.json`` plus output PNGs.

A record is written last and atomically, in strict JSON (no NaN tokens), and carries its run id,
its resolved configuration and the store's schema version; a record that does not match its run
(another run's file, an old schema, missing fields, a non-finite result) is invalid: it is reported
with its path and recomputed by ``reproduce``. A lock file per run lets several processes share
one store: whoever holds a run's lock computes it, the others move on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from filelock import FileLock, Timeout

from .errors import DipError
from .imageio import atomic_write_bytes, load_image, save_image
from .runs import Run, spec

log = logging.getLogger(__name__)

SCHEMA = 2  # bump when the record layout or the scoring in it changes: older records are recomputed
ORPHAN_AGE_S = 120.0  # temp files and unclaimed PNGs older than this, with no run computing them, are leftovers


def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest folder above ``start`` (default: cwd) holding pyproject.toml."""
    here = (start or Path.cwd()).resolve()
    for p in [here, *here.parents]:
        if (p / "pyproject.toml").exists() and (p / "dip_lib").is_dir():
            return p
    return Path(__file__).resolve().parent.parent


class InvalidRecord(DipError):
    """A stored record that does not belong to its run or is incomplete."""


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, infinity) replaced by None, so it dumps as strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return strict_json(obj.item())
    return obj


def dumps(obj: Any) -> bytes:
    return json.dumps(strict_json(obj), indent=1, allow_nan=False).encode()


class ResultStore:
    """results/<profile>/<experiment>/<run-id>.json plus PNGs; one problem's input is shared."""

    def __init__(self, root: str | Path = "results") -> None:
        """``root``: a relative one is taken from the project root (the notebooks' convention; the CLI
        resolves its --results-dir against the current folder first). An empty one is refused: it
        would put the profile folders in the project root."""
        if not str(root).strip():
            raise DipError("the results folder is empty: name one (the default is results/ in the project root)")
        root = Path(root)
        self.root = root if root.is_absolute() else find_root() / root

    def folder(self, run: Run) -> Path:
        return self.root / run.profile / run.experiment

    def path(self, run: Run) -> Path:
        return self.folder(run) / f"{run.run_id}.json"

    def resume_dir(self, run: Run) -> Path:
        """Where a long run's saved fit states live while it computes (ignored by git, beside the
        records: ``results/.resume/<profile>/<experiment>/``)."""
        return self.root / ".resume" / run.profile / run.experiment

    def resume_state(self, run: Run) -> Path:
        return self.resume_dir(run) / f"{run.run_id}.pt"

    def exists(self, run: Run) -> bool:
        """A valid record is stored for ``run`` (an invalid one is logged with its path)."""
        try:
            self.load(run)
            return True
        except InvalidRecord as exc:
            log.warning("%s", exc)
            return False
        except FileNotFoundError:
            return False

    def load(self, run: Run) -> dict[str, Any]:
        """The run's record; FileNotFoundError if none, InvalidRecord if it does not belong to the run."""
        path = self.path(run)
        try:
            rec = json.loads(path.read_text())
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise InvalidRecord(f"invalid record {path} ({exc}): delete it to recompute") from None
        problem = validate(rec, run)
        if problem:
            raise InvalidRecord(f"invalid record {path} ({problem}): delete it to recompute")
        return rec

    def image(self, run: Run, kind: str = "final") -> np.ndarray:
        """A stored output ('final', 'best', 'observed', 'eswmv' or 'drop<k>') as (C, H, W)."""
        rec = self.load(run)
        name = rec["images"].get(kind)
        if name is None:
            raise DipError(f"run {run.run_id} has no {kind!r} image")
        return load_image(self.folder(run) / name)

    def save(self, run: Run, record: dict[str, Any], images: dict[str, np.ndarray | None]) -> None:
        """Write the images, then the record (a run counts as stored only once all its files are there)."""
        problem = validate(record, run, images=False)
        if problem:
            raise DipError(f"refusing to store run {run.run_id}: {problem}")
        folder = self.folder(run)
        names: dict[str, str] = {}
        try:
            for kind, arr in images.items():
                if arr is None:
                    continue
                name = f"inputs/{run.problem_id}.png" if kind == "observed" else f"{run.run_id}-{kind}.png"
                if kind != "observed" or not (folder / name).exists():
                    save_image(folder / name, arr)
                names[kind] = name
            record["images"] = names
            atomic_write_bytes(self.path(run), dumps(record))
        except OSError as exc:
            raise DipError(f"cannot write results to {folder}: {exc.strerror or exc}") from None

    def lock(self, run: Run) -> FileLock:
        """The run's lock (an OS file lock: released when its holder exits, even by kill -9)."""
        folder = self.folder(run) / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(folder / f"{run.run_id}.lock")

    def try_lock(self, run: Run) -> FileLock | None:
        lock = self.lock(run)
        try:
            lock.acquire(timeout=0)
            return lock
        except Timeout:
            return None

    def missing(self, runs: Iterable[Run]) -> list[Run]:
        return [r for r in runs if not self.exists(r)]

    def check_writable(self, runs: Iterable[Run]) -> None:
        """Refuse, before any fit, a results folder that cannot be written."""
        for folder in sorted({self.folder(r) for r in runs}):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                probe = folder / f".write-probe-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise DipError(f"cannot write results to {folder}: {exc.strerror or exc}") from None

    def clean_leftovers(self, runs: Iterable[Run]) -> int:
        """Remove temp files and output PNGs that no stored record claims, older than ORPHAN_AGE_S
        and with no process holding their run's lock; returns how many were removed."""
        by_folder: dict[Path, set[str]] = {}
        for r in runs:
            by_folder.setdefault(self.folder(r), set())
        removed = 0
        now = time.time()
        for folder in by_folder:
            if not folder.is_dir():
                continue
            stored = {p.stem for p in folder.glob("*.json")}
            candidates = [p for p in folder.glob(".*.tmp")] + [p for p in folder.glob("inputs/.*.tmp")]
            candidates += [p for p in folder.glob("*-*.png") if p.name.split("-", 1)[0] not in stored]
            for p in candidates:
                try:
                    if now - p.stat().st_mtime < ORPHAN_AGE_S:
                        continue
                    run_id = p.name.lstrip(".").split("-", 1)[0].split(".", 1)[0]
                    lock = FileLock(folder / ".locks" / f"{run_id}.lock")
                    if (folder / ".locks").is_dir():
                        lock.acquire(timeout=0)
                        try:
                            p.unlink(missing_ok=True)
                        finally:
                            lock.release()
                    else:
                        p.unlink(missing_ok=True)
                    removed += 1
                except (Timeout, OSError):
                    continue
        if removed:
            log.info("removed %d leftover files from interrupted runs", removed)
        return removed


REQUIRED = ("schema", "run_id", "config", "spec", "summary", "environment")


def validate(rec: Any, run: Run, images: bool = True) -> str | None:
    """Why ``rec`` is not a valid record of ``run`` (None when it is)."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED + (("images",) if images else ()) if k not in rec]
    if missing:
        return f"missing {', '.join(missing)}"
    if rec["schema"] != SCHEMA:
        return f"schema {rec['schema']}, expected {SCHEMA}"
    if rec["run_id"] != run.run_id:
        return f"it holds run {rec['run_id']}, not {run.run_id}"
    if json.loads(json.dumps(rec["spec"])) != json.loads(json.dumps(spec(run))):
        return "its configuration differs from the run's"
    s = rec["summary"]
    if (
        not isinstance(s, dict)
        or not isinstance(s.get("final_psnr"), (int, float))
        or not math.isfinite(s["final_psnr"])
    ):
        return "no finite final PSNR"
    if run.method == "dip" and not isinstance(rec.get("history"), dict):
        return "no history"
    return None


def environment(device: torch.device) -> dict[str, Any]:
    from .device import cpu_name

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "device_name": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
