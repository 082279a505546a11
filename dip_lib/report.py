"""Execute the report notebooks headless with papermill and render them to HTML with an index.

``python -m dip_lib report --profile P [--execute]``: with --execute, compute the missing runs
first (``reproduce``); then run each notebook from stored results into ``report/<P>/`` and
render HTML for readers (``dip_lib.site``: code hidden, real titles, navigation) and the landing
page. Without --execute nothing is computed: every page renders from the runs that are stored and
says which are missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from .errors import DipError
from .experiments import reproduce
from .store import ResultStore, find_root

log = logging.getLogger(__name__)

REPORT_NOTEBOOKS = (
    "01_table1_bernoulli.ipynb",
    "02_architecture_sweep.ipynb",
    "03_optimizer_lr_sweep.ipynb",
    "05_claims.ipynb",
    "06_cost_quality.ipynb",
    "07_paper_figures.ipynb",
)


def execute_notebook(
    src: Path, dst: Path, parameters: dict, cwd: Path | None = None, timeout: int | None = None
) -> None:
    """Run one notebook with papermill (parameters injected after the 'parameters' cell)."""
    import papermill

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(
        f".{dst.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.ipynb"
    )  # unique: reports may run at once
    try:
        papermill.execute_notebook(
            str(src),
            str(tmp),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(cwd or dst.parent),
            progress_bar=False,
            execution_timeout=timeout,
        )
        tmp.replace(dst)
    except papermill.PapermillExecutionError as exc:
        tmp.unlink(missing_ok=True)
        raise DipError(f"{src.name} failed: {exc.ename}: {exc.evalue}".splitlines()[0]) from None
    finally:
        tmp.unlink(missing_ok=True)


def to_html(
    notebook: Path, profile: str = "quick", prev: tuple[str, str] | None = None, next_: tuple[str, str] | None = None
) -> Path:
    """The reader's HTML of an executed notebook (see ``site.to_html``)."""
    from .site import to_html as page

    return page(notebook, profile, prev, next_)


def render(
    profile: str,
    execute: bool = False,
    out_dir: Path | None = None,
    results_dir: str = "results",
    device: str | None = None,
    notebooks: tuple[str, ...] = REPORT_NOTEBOOKS,
    workers: int | None = 1,
    scheduler: str | None = None,
) -> Path:
    """Write report/<profile>/ whole: the pages are built in a fresh folder beside it and swapped in
    only when every page is built and passes the reader checks, so a failure leaves the previous
    report as it was. ``workers``/``scheduler``: where ``execute`` computes (``experiments.reproduce``)."""
    root = find_root()
    final = out_dir or root / "report" / profile
    absent = [n for n in notebooks if not (root / "notebooks" / n).is_file()]
    if absent:
        raise DipError(f"no such notebook in {root / 'notebooks'}: {', '.join(absent)}")
    if execute:
        outcomes = reproduce(profile, device=device, results_dir=results_dir, workers=workers, scheduler=scheduler)
        failed = [f"{exp}/{r.run_id}: {why}" for exp, o in outcomes.items() for r, why in o.failed]
        if failed:
            log.error("%d runs failed (not stored): %s", len(failed), "; ".join(failed))
    final.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        index = _build(root, out, profile, results_dir, device, notebooks)
        _swap(out, final)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return final / index.name


def _swap(new: Path, final: Path) -> None:
    """Replace the folder ``final`` by ``new`` (two renames; the old one is removed after)."""
    old = final.with_name(f".{final.name}.old.{os.getpid()}")
    if final.exists():
        final.rename(old)
    try:
        new.rename(final)
    except OSError:
        if old.exists():
            old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _build(
    root: Path, out: Path, profile: str, results_dir: str, device: str | None, notebooks: tuple[str, ...]
) -> Path:
    from tqdm.auto import tqdm

    from . import site

    out.chmod(0o755)
    executed = []
    for name in tqdm(notebooks, desc=f"notebooks ({profile})"):
        dst = out / name
        execute_notebook(
            root / "notebooks" / name,
            dst,
            {"profile": profile, "results_dir": results_dir, "compute": False, "device": device},
        )
        executed.append(dst)
    titles = [site.page_title(p.stem, out) for p in executed]
    for k, dst in enumerate(executed):
        prev = (executed[k - 1].with_suffix(".html").name, titles[k - 1]) if k else None
        nxt = (executed[k + 1].with_suffix(".html").name, titles[k + 1]) if k + 1 < len(executed) else None
        site.to_html(dst, profile, prev, nxt)
    index = site.write_landing(out, profile, ResultStore(results_dir))
    problems = site.check_folder(out)
    if problems:
        raise DipError(
            "report pages fail the reader checks: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in problems.items())
        )
    return index


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
