"""Execute the report notebooks headless with papermill and render them to HTML with an index.

``python -m dip_lib report --profile P [--execute]``: with --execute, compute the missing runs
first (``reproduce``); then run each notebook from stored results into ``report/<P>/`` and
render HTML. Without --execute a missing run makes the notebooks fail with the list of them.
"""
from __future__ import annotations

import html
import logging
from pathlib import Path

from .errors import DipError
from .experiments import reproduce
from .runs import PROFILE_NAMES, get_profile
from .store import find_root
from .imageio import atomic_write_bytes

log = logging.getLogger(__name__)

REPORT_NOTEBOOKS = (
    "01_table1_bernoulli.ipynb",
    "02_architecture_sweep.ipynb",
    "03_optimizer_lr_sweep.ipynb",
    "05_claims.ipynb",
)


def execute_notebook(src: Path, dst: Path, parameters: dict, cwd: Path | None = None, timeout: int | None = None) -> None:
    """Run one notebook with papermill (parameters injected after the 'parameters' cell)."""
    import papermill

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp.ipynb")
    try:
        papermill.execute_notebook(str(src), str(tmp), parameters=parameters, kernel_name="python3",
                                   cwd=str(cwd or dst.parent), progress_bar=False, execution_timeout=timeout)
        tmp.replace(dst)
    except papermill.PapermillExecutionError as exc:
        tmp.unlink(missing_ok=True)
        raise DipError(f"{src.name} failed: {exc.ename}: {exc.evalue}".splitlines()[0]) from None
    finally:
        tmp.unlink(missing_ok=True)


def to_html(notebook: Path) -> Path:
    import nbconvert
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = nbconvert.HTMLExporter(template_name="lab").from_notebook_node(nb)
    out = notebook.with_suffix(".html")
    atomic_write_bytes(out, body.encode())
    return out


def write_index(folder: Path, profile: str, pages: list[Path]) -> Path:
    prof = get_profile(profile)
    items = "\n".join(f'<li><a href="{p.name}">{html.escape(p.stem)}</a></li>' for p in pages)
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>DIP inpainting report ({profile})</title></head>"
            f"<body><h1>Deep Image Prior inpainting: a reproduction ({html.escape(profile)} profile)</h1>"
            f"<p>{html.escape(prof.description)}.</p>"
            + ("" if prof.comparable else "<p><b>Reduced scale: these numbers are not comparable to the paper's.</b></p>")
            + f"<ul>\n{items}\n</ul></body></html>")
    out = folder / "index.html"
    atomic_write_bytes(out, text.encode())
    return out


def render(profile: str, execute: bool = False, out_dir: Path | None = None, results_dir: str = "results",
           device: str | None = None, notebooks: tuple[str, ...] = REPORT_NOTEBOOKS) -> Path:
    root = find_root()
    out = out_dir or root / "report" / profile
    if execute:
        reproduce(profile, device=device, results_dir=results_dir)
    from tqdm.auto import tqdm

    pages = []
    for name in tqdm(notebooks, desc=f"notebooks ({profile})"):
        dst = out / name
        execute_notebook(root / "notebooks" / name, dst,
                         {"profile": profile, "results_dir": results_dir, "compute": False, "device": device})
        pages.append(to_html(dst))
    return write_index(out, profile, pages)


def cmd_report(args) -> int:
    index = render(args.profile, execute=args.execute, results_dir=args.results_dir, device=args.device)
    print(f"report written: {index}")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("report", help="run the notebooks from stored results and render the HTML report")
    p.add_argument("--profile", choices=PROFILE_NAMES, required=True)
    p.add_argument("--execute", action="store_true", help="compute missing runs first (make reproduce)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--device", help="the device whose runs to compute and show (default: the profile's)")
    p.set_defaults(func=cmd_report)
