"""The results store: ``results/<profile>/<experiment>/<run-id>.json`` plus output PNGs.

A record is written last and atomically, in strict JSON (no NaN tokens), and carries its run id,
its resolved configuration, the store's schema version and the size and sha256 of each image it
names; a record that does not match its run (another run's file, an old schema, missing fields, a
non-finite result, an impossible one such as a final output above the oracle, an image that is
missing, damaged or replaced) is invalid: it is reported once with its path and recomputed by
``reproduce``, and the report shows its run as missing. A lock file per run lets several processes
share one store: whoever holds a run's lock computes it, the others move on.
"""

from __future__ import annotations

import hashlib
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
from PIL import Image

from ..core.errors import DipError
from ..core.imageio import atomic_write_bytes, load_image, save_image, to_uint8
from ..core.presets import get_preset
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
    return Path(__file__).resolve().parents[2]


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
        # a file where the store should be would make every record look invalid: one line instead
        found = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
        if found is not None and not found.is_dir():
            raise DipError(f"the results folder {self.root} is not a folder: {found} is a file")

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

    def get(self, run: Run) -> dict[str, Any] | None:
        """The run's valid record, or None; an invalid one counts as missing (so ``reproduce``
        recomputes it and the report leaves it out) and is logged with its path once per process,
        not at every call."""
        try:
            return self.load(run)
        except InvalidRecord as exc:
            _warn_once(self.path(run), exc)
        except FileNotFoundError:
            pass
        return None

    def exists(self, run: Run) -> bool:
        """A valid record is stored for ``run`` (``get``)."""
        return self.get(run) is not None

    def load(self, run: Run) -> dict[str, Any]:
        """The run's record; FileNotFoundError if none, InvalidRecord (naming the file) if it does not
        belong to the run, is malformed or impossible, or names an image that is not beside it as it
        was stored (``validate``)."""
        path = self.path(run)
        try:
            rec = json.loads(path.read_text())
        except FileNotFoundError:
            raise
        except NotADirectoryError:  # a file where one of its folders should be: no record (check_writable says so)
            raise FileNotFoundError(path) from None
        except RecursionError:  # json recurses once per nesting level
            raise InvalidRecord(f"invalid record {path} (nested too deeply): delete it to recompute") from None
        except (OSError, ValueError) as exc:
            raise InvalidRecord(f"invalid record {path} ({exc}): delete it to recompute") from None
        problem = validate(rec, run, folder=path.parent)
        if problem:
            raise InvalidRecord(f"invalid record {path} ({problem}): delete it to recompute")
        return rec

    def image(self, run: Run, kind: str = "final") -> np.ndarray:
        """A stored output ('final', 'best', 'observed', 'eswmv' or 'drop<k>') as (C, H, W)."""
        rec = self.load(run)  # valid: its image names are safe and the files were there
        name = rec["images"].get(kind)
        if name is None:
            raise DipError(f"run {run.run_id} has no {kind!r} image (its record: {self.path(run)})")
        return load_image(self.folder(run) / name)

    def save(self, run: Run, record: dict[str, Any], images: dict[str, np.ndarray | None]) -> None:
        """Write the images, then the record naming each with its size and sha256 (a run counts as
        stored only once all its files are there)."""
        problem = validate(record, run, images=False)
        if problem:
            raise DipError(f"refusing to store run {run.run_id}: {problem}")
        folder = self.folder(run)
        names: dict[str, str] = {}
        sums: dict[str, dict[str, Any]] = {}
        try:
            for kind, arr in images.items():
                if arr is None:
                    continue
                name = f"inputs/{run.problem_id}.png" if kind == "observed" else f"{run.run_id}-{kind}.png"
                # the problem's input is shared by its runs: kept when it holds these pixels, so that the
                # checksums other records keep for it stay true; rewritten when it is absent or damaged
                if kind != "observed" or not _holds(folder / name, arr):
                    save_image(folder / name, arr)
                names[kind] = name
                sums[kind] = _digest(folder / name)
            record["images"] = names
            record["checksums"] = sums
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
        and with no process holding their run's lock; returns how many were removed. A removal that
        fails (a read-only store) is skipped: leftovers are untidy, not wrong."""
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
MAX_DEPTH = 16  # records nest 4 levels deep; deeper JSON is refused before anything recurses into it
PSNR_MAX = 200.0  # dB: above any real fit's; an exact match is infinite, stored as null

_reported: set[Path] = set()  # invalid records already logged by this process


def _warn_once(path: Path, exc: Exception) -> None:
    if path not in _reported:
        _reported.add(path)
        log.warning("%s", exc)


def _number(v: Any, lo: float = -math.inf, hi: float = math.inf) -> bool:
    """A finite JSON number in [lo, hi] (a bool is not one, though Python counts it as an int)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return lo <= v <= hi and (isinstance(v, int) or math.isfinite(v))  # an int of any size has no isfinite


# what a field may hold: a check and its description (a trailing "?" in a field's kind allows None)
KINDS: dict[str, tuple[Any, str]] = {
    "psnr": (lambda v: _number(v, 0.0, PSNR_MAX), f"a PSNR in [0, {PSNR_MAX:.0f}] dB"),
    "ssim": (lambda v: _number(v, -1.0, 1.0), "an SSIM in [-1, 1]"),
    "nonneg": (lambda v: _number(v, 0.0), "a number >= 0"),
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "sha256": (lambda v: isinstance(v, str) and len(v) == 64 and set(v) <= set("0123456789abcdef"), "a sha256"),
    "object": (lambda v: isinstance(v, dict), "an object"),
}
TOP = {"schema": "count", "run_id": "text", "config": "object", "environment": "object", "wall_time": "nonneg"}
TOP_OPTIONAL = {"batched": "count"}
SUMMARY = {
    "final_psnr": "psnr",
    "final_hole_psnr": "psnr?",
    "final_ssim": "ssim",
    "masked_psnr": "psnr?",
    "wall_time": "nonneg",
    "device": "text",
}
DIP_SUMMARY = {
    "best_psnr": "psnr",
    "best_iteration": "count",
    "best_hole_psnr": "psnr?",
    "ema_psnr": "psnr",
    "ema_hole_psnr": "psnr?",
    "oracle_psnr": "psnr",
    "oracle_iteration": "count",
    "oracle_hole_psnr": "psnr?",
    "guard_restores": "count",
    "iterations_run": "count",
    "stopped_at": "count?",
    "params": "count",
    "ms_per_iteration": "nonneg",
}
# a restored check's iterate was discarded: its loss may be None (it was not finite), no other row's
HISTORY = {
    "restored": "bool",  # first: the loss's check reads it
    "iteration": "count",
    "loss": "nonneg?",
    "psnr": "psnr?",
    "psnr_observed": "psnr?",
    "elapsed": "nonneg",
    "psnr_clean": "psnr?",
    "psnr_hole": "psnr?",
}
ESWMV_FIELDS = {
    "window": "count",
    "patience": "count",
    "iteration": "count?",
    "stop_iteration": "count?",
    "psnr": "psnr?",
    "psnr_clean": "psnr?",
}
ESWMV_OPTIONAL = {"clean_iteration": "count"}
CHECKSUM = {"bytes": "count", "sha256": "sha256"}
DROP_FIELDS = {
    "start_iteration": "count",
    "bottom_iteration": "count",
    "from_psnr": "psnr",
    "to_psnr": "psnr",
    "image": "text",
}


def _bad_value(v: Any, kind: str) -> str | None:
    """Why ``v`` is not of ``kind`` (None when it is)."""
    if v is None and kind.endswith("?"):
        return None
    check, what = KINDS[kind.rstrip("?")]
    if check(v):
        return None
    shown = repr(v)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"is {shown}, not {what}" + (" or null" if kind.endswith("?") else "")


def _check_fields(obj: Any, fields: dict[str, str], where: str, optional: dict[str, str] | None = None) -> str | None:
    """Why the object ``where`` lacks one of ``fields`` or holds a wrong value (None when it is fine)."""
    if not isinstance(obj, dict):
        return f"{where} is not an object"
    for key, kind in fields.items():
        if key not in obj:
            return f"{where} has no {key}"
        bad = _bad_value(obj[key], kind)
        if bad:
            return f"{where}.{key} {bad}"
    for key, kind in (optional or {}).items():
        bad = _bad_value(obj[key], kind) if key in obj else None
        if bad:
            return f"{where}.{key} {bad}"
    return None


def _too_deep(obj: Any, limit: int) -> bool:
    """Whether JSON containers nest more than ``limit`` levels (walked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        children = o.values() if isinstance(o, dict) else o if isinstance(o, list) else ()
        for c in children:
            if isinstance(c, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((c, depth + 1))
    return False


def _check_history(h: Any) -> str | None:
    """Equal-length lists of the right values; a None loss only in a restored row."""
    if not isinstance(h, dict):
        return "history is not an object"
    for key in HISTORY:
        if not isinstance(h.get(key), list):
            return f"history has no list {key}"
    lengths = {len(h[key]) for key in HISTORY}
    if len(lengths) != 1 or 0 in lengths:
        return f"history lists are empty or of unequal lengths {sorted(lengths)}"
    for key, kind in HISTORY.items():
        for i, v in enumerate(h[key]):
            bad = _bad_value(v, kind) or (key == "loss" and v is None and not h["restored"][i] and "is null")
            if bad:
                return f"history.{key}[{i}] {bad}"
    return None


def _check_eswmv_drops(rec: dict[str, Any]) -> str | None:
    problem = _check_fields(rec.get("eswmv"), ESWMV_FIELDS, "eswmv", ESWMV_OPTIONAL)
    if problem:
        return problem
    drops = rec.get("drops")
    if not isinstance(drops, list):
        return "drops is not a list"
    for k, d in enumerate(drops):
        problem = _check_fields(d, DROP_FIELDS, f"drops[{k}]")
        if problem:
            return problem
    return None


def _bad_image_name(name: Any) -> str | None:
    """Why ``name`` is not a PNG beside the record (or under its inputs/): no other folder, no '..'."""
    if not isinstance(name, str) or not name.endswith(".png"):
        return "is not the name of a PNG"
    base = name.removeprefix("inputs/")
    if "/" in base or "\\" in base or ".." in base or base.startswith(".") or base == ".png":
        return "is not a plain file name beside the record"
    return None


def _digest(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _holds(path: Path, arr: np.ndarray) -> bool:
    """Whether the PNG at ``path`` decodes to ``arr`` as ``save_image`` would write it."""
    try:
        with Image.open(path) as img:
            return np.array_equal(np.asarray(img), to_uint8(arr))
    except Exception:  # absent, or damaged in any of the ways Pillow reports (OSError, SyntaxError, ...)
        return False


def _decoded_size(path: Path) -> tuple[int, int] | None:
    """The size of the image at ``path`` once it is decoded whole, or None when it does not decode."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.size
    except Exception:  # damaged in any of the ways Pillow reports (OSError, SyntaxError, ValueError, ...)
        return None


def _check_images(rec: dict[str, Any], folder: Path | None) -> str | None:
    """``images``: kind -> a safe file name, each with its size and sha256 in ``checksums``; with
    ``folder``, each file must be there as it was stored. A record written before checksums were
    kept has none: its images must then decode whole and be of one size."""
    images, sums = rec["images"], rec.get("checksums")
    if not isinstance(images, dict):
        return "images is not an object"
    if sums is not None and (not isinstance(sums, dict) or set(sums) != set(images)):
        return "checksums does not name the images that images names"
    sizes: set[tuple[int, int]] = set()
    for kind, name in images.items():
        bad = _bad_image_name(name)
        if bad:
            return f"images.{kind} {bad}"
        bad = sums is not None and _check_fields(sums[kind], CHECKSUM, f"checksums.{kind}")
        if bad:
            return bad
        if folder is None:
            continue
        path = folder / name
        if not path.is_file():
            return f"its {kind} image {path} is missing"
        if sums is None:
            size = _decoded_size(path)
            if size is None:
                return f"its {kind} image {path} does not decode"
            sizes.add(size)
            continue
        try:
            found = _digest(path)
        except OSError as exc:
            return f"its {kind} image {path} cannot be read ({exc.strerror or exc})"
        if found["bytes"] != sums[kind]["bytes"]:
            return f"its {kind} image {path} is {found['bytes']} bytes, not the {sums[kind]['bytes']} stored"
        if found["sha256"] != sums[kind]["sha256"]:
            return f"its {kind} image {path} does not match the sha256 stored"
    if len(sizes) > 1:
        return f"its images are of different sizes {sorted(sizes)}"
    return None


def _check_invariants(rec: dict[str, Any], run: Run) -> str | None:
    """What a DIP fit guarantees by construction: the oracle (and best) PSNR is the best clean check
    of the history (a restored check's iterate was discarded: not a candidate) and the final PSNR its
    last, so oracle >= final; no iteration past the budget."""
    s, h = rec["summary"], rec["history"]
    if s["final_psnr"] > s["oracle_psnr"]:
        return f"summary.final_psnr {s['final_psnr']} is above its oracle_psnr {s['oracle_psnr']}"
    clean = [v for v, restored in zip(h["psnr_clean"], h["restored"]) if v is not None and not restored]
    for key in ("oracle_psnr", "best_psnr"):
        if not clean or s[key] != max(clean):
            return f"summary.{key} {s[key]} is not the best clean PSNR of its history"
    if s["final_psnr"] != h["psnr_clean"][-1]:
        return f"summary.final_psnr {s['final_psnr']} is not the last clean PSNR of its history"
    budget = run.iterations or get_preset(run.preset).iterations
    if s["iterations_run"] > budget:
        return f"summary.iterations_run {s['iterations_run']} is past the run's {budget} iterations"
    es = rec["eswmv"]
    steps = {
        "summary.best_iteration": s["best_iteration"],
        "summary.oracle_iteration": s["oracle_iteration"],
        "summary.stopped_at": s["stopped_at"],
        "history.iteration": max(h["iteration"]),
        "eswmv.iteration": es["iteration"],
        "eswmv.stop_iteration": es["stop_iteration"],
        **{f"drops[{k}].bottom_iteration": d["bottom_iteration"] for k, d in enumerate(rec["drops"])},
    }
    for where, it in steps.items():
        if it is not None and it > s["iterations_run"]:
            return f"{where} {it} is past the {s['iterations_run']} iterations run"
    return None


def validate(rec: Any, run: Run, images: bool = True, folder: Path | None = None) -> str | None:
    """Why ``rec`` is not a valid record of ``run`` (None when it is): it must be of this schema,
    run id and configuration, with every field of the right type and in a plausible range (PSNRs
    in [0, 200] dB, SSIM in [-1, 1], counts and times >= 0, no bools for numbers), the history's
    lists of equal length, a DIP run's summary consistent with its history and budget
    (``_check_invariants``), and ``images`` (required unless ``images`` is False) naming files
    beside it, which must be in ``folder`` as they were stored when it is given (``_check_images``)."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    if _too_deep(rec, MAX_DEPTH):
        return f"nested deeper than {MAX_DEPTH} levels"
    missing = [k for k in REQUIRED + (("images",) if images else ()) if k not in rec]
    if missing:
        return f"missing {', '.join(missing)}"
    if rec["schema"] != SCHEMA:
        return f"schema {rec['schema']!r}, expected {SCHEMA}"
    if rec["run_id"] != run.run_id:
        return f"it holds run {rec['run_id']!r}, not {run.run_id}"
    if json.loads(json.dumps(rec["spec"])) != json.loads(json.dumps(spec(run))):
        return "its configuration differs from the run's"
    problem = _check_fields(rec, TOP, "record", TOP_OPTIONAL) or _check_fields(rec["summary"], SUMMARY, "summary")
    if problem:
        return problem
    if run.method == "dip":
        problem = (
            _check_fields(rec["summary"], DIP_SUMMARY, "summary")
            or _check_history(rec.get("history"))
            or _check_eswmv_drops(rec)
            or _check_invariants(rec, run)
        )
        if problem:
            return problem
    return _check_images(rec, folder) if "images" in rec else None


def environment(device: torch.device) -> dict[str, Any]:
    from ..core.device import cpu_name

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "device_name": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
