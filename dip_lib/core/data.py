"""Data registry: fetch the Table-1 and original DIP images by sha256 into a cache, load them as arrays.

Nothing here is committed as an image. ``data/registry.tsv`` names every file (relative path, public
URL, sha256, size, width, height, mode, source commit); ``fetch`` copies it into the cache from
``$DIP_DATA_MIRROR`` (a folder or a base URL, tried first) or from its public URL, verifies the
sha256 and only then moves it into place. Cache: ``$DIP_DATA_DIR``, else the user cache dir of
"dip-inpainting". Images come back as float32 (C, H, W) in [0, 1] at their native size.

Sources: Table 1 of Ulyanov, Vedaldi, Lempitsky, "Deep Image Prior", CVPR 2018 (the BM3D grayscale
test set, taken from Ryanshuai/BM3D_py) and the inputs of DmitryUlyanov/deep-image-prior.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .errors import DipError
from .imageio import load_image, load_mask

log = logging.getLogger(__name__)

GROUPS = ("table1", "dip")
# Paper column order of Table 1: (file name, the paper's label).
TABLE1_ORDER: tuple[tuple[str, str], ...] = (
    ("barbara", "Barbara"),
    ("boat", "Boat"),
    ("house", "House"),
    ("lena", "Lena"),
    ("peppers", "Peppers"),
    ("cameraman", "C.man"),
    ("couple", "Couple"),
    ("fingerprint", "Finger"),
    ("hill", "Hill"),
    ("man", "Man"),
    ("montage", "Montage"),
)
# The original inpainting inputs come with a mask; the restoration ones are clean images.
EXAMPLES: dict[str, str | None] = {
    "kate": "kate_mask",
    "vase": "vase_mask",
    "library": "library_mask",
    "restoration_barbara": None,
    "restoration_kate": None,
}
# Images shipped inside scikit-image (no download): the stand-in when the Table-1 set is absent.
EMBEDDED_LABEL = "embedded set, not comparable to the paper"
EMBEDDED_GRAY = ("camera", "astronaut", "moon", "coins")
EMBEDDED_RGB = ("astronaut_rgb", "coffee")
# group-71 labels that differ from our file names
_GROUP71_NAMES = {"peppers256": "peppers"}
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Entry:
    """One registry row: a file of the data set and everything needed to fetch and check it."""

    name: str  # file stem, unique: "barbara", "kate_mask", "restoration_kate"
    group: str  # "table1" or "dip"
    path: str  # relative path inside the cache and the mirror, e.g. "table1/barbara.png"
    url: str  # public URL of the exact bytes
    sha256: str
    size: int  # bytes
    width: int
    height: int
    mode: str  # PIL mode: "L" or "RGB"
    source: str  # "owner/repo@commit:path"


REGISTRY_COLUMNS = tuple(f.name for f in fields(Entry))


class _Unavailable(Exception):
    """No source could deliver a file (the message lists each source and why)."""


# ---------------------------------------------------------------- registry and reference tables


def data_dir() -> Path:
    """The committed ``data/`` folder next to the package (the package is installed editable)."""
    import dip_lib

    path = Path(dip_lib.__file__).resolve().parent.parent / "data"
    if not (path / "registry.tsv").is_file():
        raise DipError(
            f"data registry not found at {path / 'registry.tsv'}; install dip_lib from a source checkout (pip "
            "install -e .)"
        )
    return path


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def registry() -> list[Entry]:
    """All registry entries, in file order (Table 1 in paper order, then the DIP inputs)."""
    path = data_dir() / "registry.tsv"
    rows = _read_tsv(path)
    if not rows or tuple(rows[0]) != REGISTRY_COLUMNS:
        raise DipError(f"{path} must have the columns {', '.join(REGISTRY_COLUMNS)}")
    return [Entry(**{**r, "size": int(r["size"]), "width": int(r["width"]), "height": int(r["height"])}) for r in rows]


def registry_from_manifest(shared: str | os.PathLike) -> list[Entry]:
    """Build the registry from ``<shared>/MANIFEST.tsv`` and the files next to it (for their sizes)."""
    shared = Path(shared)
    out = []
    for r in _read_tsv(shared / "MANIFEST.tsv"):
        rel = r["file"]
        out.append(
            Entry(
                name=Path(rel).stem,
                group=rel.split("/")[0],
                path=rel,
                url=r["raw_url"],
                sha256=r["sha256"],
                size=(shared / rel).stat().st_size,
                width=int(r["width"]),
                height=int(r["height"]),
                mode=r["mode"],
                source=f"{r['source_repo']}@{r['source_commit']}:{r['source_path']}",
            )
        )
    return out


def _read_reference(filename: str, value_columns: tuple[str, ...], names: dict[str, str]) -> list[dict]:
    path = data_dir() / filename
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    want = ("image", *value_columns, "source")
    if not rows or tuple(rows[0]) != want:
        raise DipError(f"{path} must have the columns {', '.join(want)}")
    out = []
    for r in rows:
        if r["image"] not in names:
            raise DipError(f"{path}: unknown image {r['image']!r}")
        out.append({**r, **{c: float(r[c]) for c in value_columns}, "name": names[r["image"]]})
    return out


def paper_table1() -> list[dict]:
    """Rows of ``data/paper_table1.csv`` (Ulyanov et al. 2018, Table 1, PSNR in dB), paper order.

    Keys: image (the paper's label), name (our file name), papyan_psnr, dip_psnr, source.
    """
    return _read_reference("paper_table1.csv", ("papyan_psnr", "dip_psnr"), {label: n for n, label in TABLE1_ORDER})


def group71_kate_sweeps() -> list[dict]:
    """Rows of ``data/group71_kate_sweeps.csv``: the seed report's kate sweeps (filters at depth 5;
    depth with and without skips at 128 filters), PSNR in dB read off its figures (approximate).

    Keys: sweep ("filters" or "depth"), filters, depth (int), skip (bool), psnr, source."""
    path = data_dir() / "group71_kate_sweeps.csv"
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    want = ("sweep", "filters", "depth", "skip", "psnr", "source")
    if not rows or tuple(rows[0]) != want:
        raise DipError(f"{path} must have the columns {', '.join(want)}")
    return [
        {
            **r,
            "filters": int(r["filters"]),
            "depth": int(r["depth"]),
            "skip": r["skip"] == "yes",
            "psnr": float(r["psnr"]),
        }
        for r in rows
    ]


def group71_table1() -> list[dict]:
    """Rows of ``data/group71_table1.csv`` (group-71 reproduction, best PSNR over iterations, dB).

    Keys: image (their label), name (our file name), max_psnr, source.
    """
    names = {n: n for n, _ in TABLE1_ORDER} | _GROUP71_NAMES
    return _read_reference("group71_table1.csv", ("max_psnr",), names)


def select(names_or_group: str | Iterable[str] = "all") -> list[Entry]:
    """Registry entries for a group ("table1", "dip", "all") or file names, in registry order."""
    entries = registry()
    wanted = [names_or_group] if isinstance(names_or_group, str) else list(names_or_group)
    by_name = {e.name: e for e in entries}
    picked: set[str] = set()
    for w in wanted:
        if w == "all":
            picked.update(by_name)
        elif w in GROUPS:
            picked.update(e.name for e in entries if e.group == w)
        elif w in by_name:
            picked.add(w)
        else:
            raise DipError(
                f"unknown data file or group {w!r}; choose from all, {', '.join(GROUPS)}, {', '.join(by_name)}"
            )
    return [e for e in entries if e.name in picked]


# ---------------------------------------------------------------- cache and fetching


def cache_dir() -> Path:
    """``$DIP_DATA_DIR`` if set, else platformdirs' user cache dir for "dip-inpainting"."""
    env = os.environ.get("DIP_DATA_DIR")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
    except ImportError:
        raise DipError(
            "set DIP_DATA_DIR to a cache folder (platformdirs, which picks the default, is not installed)"
        ) from None
    return Path(platformdirs.user_cache_dir("dip-inpainting"))


def cached_path(entry: Entry) -> Path:
    return cache_dir() / entry.path


def _cache_folder(folder: Path) -> Path:
    """Create ``folder`` in the cache; a one-line DipError naming the cache and DIP_DATA_DIR when it
    is a file, lies under one, or cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
        why = f"no permission to write in {folder}"
    except OSError as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is not a folder" if blocker else f"{folder}: {exc.strerror or exc}"
    where = "set by DIP_DATA_DIR" if os.environ.get("DIP_DATA_DIR") else "the default; set DIP_DATA_DIR to change it"
    raise DipError(f"cannot write the data cache {cache_dir()} ({where}): {why}")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def is_verified(entry: Entry) -> bool:
    """True if the cached file exists and has the registry's sha256."""
    path = cached_path(entry)
    return path.is_file() and sha256_file(path) == entry.sha256


def _lock(target: Path) -> contextlib.AbstractContextManager:
    """One lock file per cached file, so two processes never download the same file at once."""
    try:
        from filelock import FileLock
    except ImportError:  # still safe without it: every install is a verified os.replace
        log.debug("filelock not installed; fetching %s without a lock", target.name)
        return contextlib.nullcontext()
    return FileLock(str(target) + ".lock")


def _install(entry: Entry, write: Callable[[object], None], origin: str) -> Path:
    """Write the bytes via ``write(fh)`` to a temp file in the cache, check sha256, then rename into place."""
    target = cached_path(entry)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        got = sha256_file(tmp)
        if got != entry.sha256:
            raise DipError(
                f"checksum mismatch for {entry.path} from {origin}: expected sha256 {entry.sha256}, "
                f"got {got}; the bad bytes were removed"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache must be readable by its other users
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _sources(entry: Entry) -> Iterator[tuple[str, str]]:
    """(kind, location) to try in order: the mirror ("dir" or "url"), then the public URL ("public")."""
    mirror = os.environ.get("DIP_DATA_MIRROR", "").strip()
    if mirror.startswith("file://"):
        mirror = mirror[len("file://") :]
    if mirror.startswith(("http://", "https://")):
        yield "url", f"{mirror.rstrip('/')}/{entry.path}"
    elif mirror:
        yield "dir", str(Path(mirror).expanduser() / entry.path)
    base = os.environ.get("DIP_DATA_PUBLIC_BASE", "").strip()  # tests and re-hosting: replaces the public URLs
    yield "public", f"{base.rstrip('/')}/{entry.path}" if base else entry.url


def _download(url: str, fh) -> None:
    try:
        import pooch
    except ImportError:
        raise OSError("pooch is not installed, so nothing can be downloaded") from None
    pooch.HTTPDownloader(progressbar=False, chunk_size=_CHUNK, timeout=30)(url, fh, None)


def _fetch_entry(entry: Entry) -> tuple[Path, str]:
    """Make one file present and verified in the cache; returns (path, where it came from).

    Raises DipError on a checksum mismatch, _Unavailable (with the reasons) when no source answered.
    """
    target = cached_path(entry)
    if target.is_file() and sha256_file(target) == entry.sha256:
        return target, "cached"
    _cache_folder(target.parent)
    with _lock(target):
        if target.is_file():  # another process may have finished it while we waited
            if sha256_file(target) == entry.sha256:
                return target, "cached"
            log.warning("cached %s fails its checksum; fetching it again", target)
            target.unlink()
        reasons = []
        for kind, where in _sources(entry):
            try:
                if kind == "dir":
                    with open(where, "rb") as src:
                        _install(entry, lambda fh, f=src: shutil.copyfileobj(f, fh, _CHUNK), where)
                else:
                    _install(entry, lambda fh, url=where: _download(url, fh), where)
                log.info("fetched %s from %s", entry.path, where)
                return target, where
            except OSError as exc:  # requests' errors are OSErrors too: try the next source
                reasons.append(f"{'public URL' if kind == 'public' else 'mirror'} {where}: {_short_reason(exc)}")
                log.info("could not fetch %s from %s: %s", entry.path, where, exc)
        raise _Unavailable("; ".join(reasons))


def _short_reason(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code}"
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if isinstance(exc, OSError) and not type(exc).__module__.startswith(("requests", "urllib3")):
        return exc.strerror or str(exc).splitlines()[0]
    return type(exc).__name__


def missing_error(missing: list[Entry], reason: str = "") -> DipError:
    """The one-line error for files that could not be fetched, with the two ways to supply them."""
    why = f" ({reason})" if reason else ""
    return DipError(
        f"{len(missing)} data file(s) missing and not downloadable: {', '.join(e.name for e in missing)}{why}; "
        "supply them with `python -m dip_lib data import DIR` or DIP_DATA_MIRROR=DIR_OR_URL (files at "
        f"<mirror>/{missing[0].path})"
    )


def _fetch_many(entries: list[Entry], report: Callable[[Entry, Path, str], None] | None = None) -> list[Path]:
    """Fetch each entry (``report`` is told of each success); one DipError listing all that failed."""
    from tqdm.auto import tqdm

    paths, missing, reasons = [], [], []
    todo = sum(not cached_path(e).is_file() for e in entries)
    for e in tqdm(entries, desc="fetching data", unit="file", disable=todo < 2 or report is not None, leave=False):
        try:
            path, origin = _fetch_entry(e)
        except _Unavailable as exc:
            missing.append(e)
            reasons.append(str(exc))
            continue
        paths.append(path)
        if report:
            report(e, path, origin)
    if missing:
        raise missing_error(missing, reasons[0])
    return paths


def fetch(names_or_group: str | Iterable[str] = "all") -> list[Path]:
    """Make the files present and verified in the cache (mirror first, then public URL); their paths."""
    return _fetch_many(select(names_or_group))


def import_dir(folder: str | os.PathLike) -> tuple[list[tuple[Entry, Path]], list[Entry]]:
    """Copy registry files found in ``folder`` into the cache after checking their sha256.

    A file is found by its relative path (table1/barbara.png), its basename, or its original name in
    the source repository (e.g. Lena.png). Returns ([(entry, file it came from)], entries still missing).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DipError(f"not a folder: {folder}")
    by_basename: dict[str, list[Path]] = {}
    for p in folder.rglob("*"):
        if p.is_file():
            by_basename.setdefault(p.name.lower(), []).append(p)
    imported, missing = [], []
    for e in registry():
        if is_verified(e):
            continue
        names = {Path(e.path).name.lower(), Path(e.source.rsplit(":", 1)[-1]).name.lower()}
        candidates = [folder / e.path] + [p for n in sorted(names) for p in by_basename.get(n, [])]
        match = next(
            (p for p in candidates if p.is_file() and p.stat().st_size == e.size and sha256_file(p) == e.sha256), None
        )
        if match is None:
            missing.append(e)
            continue
        target = cached_path(e)
        _cache_folder(target.parent)
        with _lock(target), open(match, "rb") as src:
            _install(e, lambda fh: shutil.copyfileobj(src, fh, _CHUNK), str(match))
        imported.append((e, match))
    return imported, missing


# ---------------------------------------------------------------- loaders


def load_table1(names: Iterable[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """The Table-1 images (fetched as needed) as (file name, float32 (1, H, W) in [0, 1]), paper order.

    ``names`` may use file names ("cameraman") or the paper's labels ("C.man").
    """
    label_to_name = {label: n for n, label in TABLE1_ORDER}
    order = [n for n, _ in TABLE1_ORDER]
    if names is None:
        wanted = order
    else:
        asked = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in asked if n not in order and n not in label_to_name]
        if unknown:
            raise DipError(f"not a Table-1 image: {', '.join(unknown)}; choose from {', '.join(order)}")
        chosen = {label_to_name.get(n, n) for n in asked}
        wanted = [n for n in order if n in chosen]
    paths = fetch(wanted)
    return [(n, load_image(p)) for n, p in zip(wanted, paths)]


def load_example(name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """An original DIP input: (image (C, H, W), mask (1, H, W) with 1 = known) or (image, None)."""
    if name not in EXAMPLES:
        raise DipError(f"unknown example {name!r}; choose from {', '.join(EXAMPLES)}")
    mask_name = EXAMPLES[name]
    paths = fetch([name] + ([mask_name] if mask_name else []))
    img = load_image(paths[0])
    mask = load_mask(paths[1], img.shape[-2:]) if mask_name else None
    return img, mask


def load_embedded(names: str | Iterable[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """Images shipped with scikit-image as (name, float32 (C, H, W) in [0, 1]); no download needed.

    ``None`` or "gray": camera, astronaut (gray), moon, coins; "rgb": astronaut_rgb, coffee; "all": both.
    Results on these carry EMBEDDED_LABEL: they are not comparable to the paper.
    """
    import skimage.data
    from skimage.color import rgb2gray

    groups = {"gray": EMBEDDED_GRAY, "rgb": EMBEDDED_RGB, "all": EMBEDDED_GRAY + EMBEDDED_RGB}
    asked = ["gray"] if names is None else [names] if isinstance(names, str) else list(names)
    wanted: list[str] = []
    for n in asked:
        for m in groups.get(n, (n,)):
            if m not in groups["all"]:
                raise DipError(
                    f"unknown embedded image {m!r}; choose from {', '.join(groups['all'])} or gray, rgb, all"
                )
            if m not in wanted:
                wanted.append(m)
    out = []
    for n in wanted:
        if n == "astronaut":
            arr = rgb2gray(skimage.data.astronaut())[None]  # ITU-R 601 luma, float64 in [0, 1]
        else:
            raw = getattr(skimage.data, n.removesuffix("_rgb"))()
            arr = raw[None] / 255.0 if raw.ndim == 2 else raw.transpose(2, 0, 1) / 255.0
        out.append((n, np.ascontiguousarray(arr, dtype=np.float32)))
    return out


# ---------------------------------------------------------------- command line


def cmd_fetch(args: argparse.Namespace) -> int:
    def report(e: Entry, path: Path, origin: str) -> None:
        print(f"{e.name:<22}{e.size:>9,} B  {'cached' if origin == 'cached' else 'fetched'}  {path}")

    _fetch_many(select(args.targets or ["all"]), report)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    print(f"cache: {cache_dir()}")
    print(f"{'name':<22}{'group':<8}{'size':>10}  cached  verified")
    n_ok = 0
    entries = registry()
    for e in entries:
        path = cached_path(e)
        cached = path.is_file()
        ok = cached and sha256_file(path) == e.sha256
        n_ok += ok
        print(f"{e.name:<22}{e.group:<8}{e.size:>10,}  {'yes' if cached else 'no':<6}  {'yes' if ok else 'no'}")
    print(f"{n_ok}/{len(entries)} verified")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    imported, missing = import_dir(args.folder)
    for e, src in imported:
        print(f"imported {e.name:<22}from {src}")
    print(f"imported {len(imported)} file(s) into {cache_dir()}")
    if missing:
        print(f"still missing {len(missing)}: {', '.join(e.name for e in missing)}")
    else:
        print("all registry files are cached and verified")
    return 0
