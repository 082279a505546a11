"""Execute the report notebooks headless with papermill and build the report's site from them.

``python -m dip_lib report --profile P [--execute]``: with --execute, compute the missing runs
first (``reproduce``); then run each notebook from stored results into ``report/<P>/`` and build
the site for readers from them (``dip_lib.report.book``: Sphinx with myst-nb, code hidden, the landing
page ``notebooks/index.md``). Without --execute nothing is computed: every page renders from the
runs that are stored and says which are missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ..core.errors import DipError
from .registry import NOTEBOOKS
from .runner import reproduce
from .store import ResultStore, find_root

log = logging.getLogger(__name__)


def execute_notebook(
    src: Path, dst: Path, parameters: dict, cwd: Path | None = None, timeout: int | None = None
) -> None:
    """Run one notebook with papermill (parameters injected after the 'parameters' cell)."""
    import papermill

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(
        f".{dst.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.ipynb"
    )  # unique: reports may run at once
    quiet = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # the kernel inherits it: no progress widget in a page (a first data fetch)
    try:
        papermill.execute_notebook(
            str(src),
            str(tmp),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(cwd or dst.parent),
            progress_bar=False,
            execution_timeout=timeout,
            config=_kernel_config(),
        )
        stable(tmp, src.name)
        tmp.replace(dst)
    except papermill.PapermillExecutionError as exc:
        tmp.unlink(missing_ok=True)
        raise DipError(f"{src.name} failed: {exc.ename}: {exc.evalue}".splitlines()[0]) from None
    finally:
        tmp.unlink(missing_ok=True)
        if quiet is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = quiet


# what an execution adds that changes from run to run: timestamps, durations, this machine's paths
_VOLATILE_PAPERMILL = ("start_time", "end_time", "duration", "input_path", "output_path")
_WIDGET = "application/vnd.jupyter.widget-view+json"


def stable(path: Path, source_name: str) -> None:
    """Drop from an executed notebook what differs between two executions of the same notebook on
    the same results (timestamps, durations, paths, widget state and views), so that re-rendering an
    unchanged report leaves the committed files unchanged."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    pm = nb.metadata.get("papermill", {})
    for key in _VOLATILE_PAPERMILL:
        pm.pop(key, None)
    pm["input_path"] = f"notebooks/{source_name}"
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", ()):
            cell.id = "injected-parameters"  # papermill draws a new random id for it at every run
        cell.metadata.pop("execution", None)
        for key in ("start_time", "end_time", "duration"):
            cell.metadata.get("papermill", {}).pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if _WIDGET not in o.get("data", {})]
    nbformat.write(nb, path)


def _kernel_config():
    """Kernel-manager settings: CurveZMQ keys for the kernel's sockets where pyzmq has Curve (the
    kernel declares whether it takes them), so the kernel has nothing to warn about on every run
    ('running over TCP without encryption'); without Curve the warning stays, as it is true."""
    import zmq
    from traitlets.config import Config

    return Config({"KernelManager": {"transport_encryption": "auto"}} if zmq.has("curve") else {})


def render(
    profile: str,
    execute: bool = False,
    out_dir: Path | None = None,
    results_dir: str | Path = "results",
    device: str | None = None,
    notebooks: tuple[str, ...] = NOTEBOOKS,
    workers: int | None = 1,
    scheduler: str | None = None,
) -> Path:
    """Write report/<profile>/ whole: the pages are built in a fresh folder beside it and swapped in
    (``_swap``) only when every page is built and passes the reader checks, so a failure leaves the
    previous report as it was. Building and swapping hold the profile's lock (``_locked``), so reports
    of one profile run one after another; build folders that killed reports left are removed first.
    ``results_dir``: relative to the project root, like ``ResultStore``'s. ``workers``/``scheduler``:
    where ``execute`` computes (``experiments.reproduce``)."""
    root = find_root()
    final = out_dir or root / "report" / profile
    absent = [n for n in notebooks if not (root / "notebooks" / n).is_file()]
    if absent:
        raise DipError(f"no such notebook in {root / 'notebooks'}: {', '.join(absent)}")
    store = ResultStore(results_dir)
    if execute:  # outside the lock: the store shares the runs between processes by itself
        outcomes = reproduce(profile, device=device, results_dir=store.root, workers=workers, scheduler=scheduler)
        failed = [f"{exp}/{r.run_id}: {why}" for exp, o in outcomes.items() for r, why in o.failed]
        if failed:
            log.error("%d runs failed (not stored): %s", len(failed), "; ".join(failed))
    _check_data()
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final):
        _remove_leftovers(final)
        out = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            index, found = _build(
                root, out, profile, store, _notebook_results(store.root, root, final), device, notebooks
            )
            _swap(out, final)
            if profile == "quick" and final == root / "report" / "quick" and store.root == root / "results":
                from . import book

                book.update_readme(root / "README.md", found)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return final / index.name


def _check_data() -> None:
    """The pages draw their ground-truth panels and error maps from the images, which the project
    downloads rather than commits: refuse in one line, before any page, when they cannot be had."""
    from ..core import data

    try:
        data.fetch("all")
    except DipError as exc:
        raise DipError(f"the report draws its ground truths from the images, and {exc}") from None


def _notebook_results(results: Path, root: Path, final: Path) -> str:
    """The notebooks' results_dir: relative to the project root when both the results and the report
    are inside it (the notebook finds the root from its folder; the committed report then names no
    machine's path and replays anywhere), else absolute."""
    results = results.resolve()
    if results.is_relative_to(root) and final.resolve().is_relative_to(root):
        return str(results.relative_to(root))
    return str(results)


def _lock_path(final: Path, name: str | None = None) -> Path:
    """The lock of the report folder ``final`` (or of its sibling ``name``); in a hidden folder, which
    git ignores as it ignores the build folders."""
    return final.parent / ".locks" / f"{name or final.name}.lock"


@contextmanager
def _locked(final: Path) -> Iterator[None]:
    lock_file = _lock_path(final)
    lock_file.parent.mkdir(exist_ok=True)
    lock = FileLock(lock_file)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("another report of %s is being written: waiting for it", final)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _remove_leftovers(final: Path) -> None:
    """Remove the build folders (``.<name>.XXXX``) that killed reports left beside ``final``. A build
    folder exists only while its report holds its folder's lock, so one whose lock is free (or ours,
    held by the caller) is a leftover; one of a report at work is kept, and so is any hidden folder
    whose name no report's lock file claims."""
    for folder in sorted(final.parent.glob(".*.*")):
        name = folder.name[1:].split(".")[0]
        if not folder.is_dir() or not _lock_path(final, name).is_file():
            continue
        if name == final.name:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        lock = FileLock(_lock_path(final, name))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            lock.release()


def _swap(new: Path, final: Path) -> None:
    """Move the pages of the build folder ``new`` into the folder ``final``, file by file with
    os.replace (atomic: a reader sees each page old or new, never missing), index.html last, so the
    new index appears once every page it links to is there; then remove what the new report no
    longer has. ``final`` stays a real folder (the committed report/quick/ is one in git); the pages
    are one flat folder beside the site's asset folders, each of which is swapped whole. Callers hold
    the lock: two swaps never interleave."""
    final.mkdir(exist_ok=True)
    pages = sorted(new.iterdir(), key=lambda p: p.name == "index.html")
    for page in pages:
        target = final / page.name
        if page.is_dir() and target.is_dir() and not target.is_symlink():
            # a folder (the site's _static/, _images/) cannot replace a folder that has files: move
            # the old one into the build folder, which is removed after the swap
            os.replace(target, new / f".old{page.name}")
        os.replace(page, target)
    keep = {p.name for p in pages}
    for stale in final.iterdir():
        if stale.name in keep:
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink()


def _build(
    root: Path,
    out: Path,
    profile: str,
    store: ResultStore,
    results_dir: str,
    device: str | None,
    notebooks: tuple[str, ...],
) -> tuple[Path, str]:
    from tqdm.auto import tqdm

    from . import book

    executed = []
    for name in tqdm(notebooks, desc=f"notebooks ({profile})"):
        dst = out / ".executed" / name  # moved beside its page once the site is built
        execute_notebook(
            root / "notebooks" / name,
            dst,
            {"profile": profile, "results_dir": results_dir, "compute": False, "device": device},
        )
        executed.append(dst)
    index = book.build(executed, out, profile, root / "notebooks")
    for nb in executed:
        nb.replace(out / nb.name)  # the executed notebooks beside their pages: nbval replays them
    shutil.rmtree(out / ".executed")
    problems = book.check_folder(out)
    if problems:
        raise DipError(
            "report pages fail the reader checks: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in problems.items())
        )
    return index, book.findings(root / "notebooks" / "index.md", out, profile)


def cmd_report(args) -> int:
    index = render(
        args.profile,
        execute=args.execute,
        results_dir=args.results_dir,
        device=args.device,
        workers=args.workers,
        scheduler=args.scheduler,
    )
    print(f"report written: {index}")
    return 0
