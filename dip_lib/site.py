"""The HTML report: notebook pages for readers (nbconvert with the report's template: code hidden,
real titles, navigation) and the landing page (a reproducibility summary, the claims table, the key
numbers and the page list), plus ``check_page``, the rules every page must pass.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from . import pages, table1_cpu
from .claims import CLAIMS
from .errors import DipError
from .imageio import atomic_write_bytes
from .runs import EXPERIMENTS, Profile, get_profile
from .store import ResultStore, find_root

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
HIDDEN_TAGS = ("parameters", "injected-parameters", "remove-cell")
# the notebooks of the report, in reading order: (stem, what a reader finds there)
PAGES = (
    (
        "01_table1_bernoulli",
        (
            "the paper's Table 1 recreated: 50% of the pixels missing in 11 images, DIP with two "
            "recipes beside two classical peers and the published values"
        ),
    ),
    (
        "02_architecture_sweep",
        (
            "what the network's width, depth and skip connections do to text inpainting of kate, "
            "and what each network draws before it has seen the image"
        ),
    ),
    (
        "03_optimizer_lr_sweep",
        ("Adam at three learning rates and L-BFGS: PSNR curves, time per iteration, and the sudden drops"),
    ),
    ("05_claims", "the seed report's six claims, each scored from the stored results with its rule"),
    (
        "06_cost_quality",
        (
            "what a cheaper recipe gives up: PSNR against training compute for widths, learning rates and "
            "iteration budgets, the Pareto front, and the `fast` preset chosen from it"
        ),
    ),
    (
        "07_paper_figures",
        (
            "the paper's Fig. 2 (how fast the network fits an image, the image with noise, its "
            "shuffled pixels and noise) and kate's text inpainting beside biharmonic"
        ),
    ),
)
EXPLORER = (
    "04_explore",
    "Live explorer (JupyterLab)",
    "pick an image, a mask and a recipe and watch the fit; run `make lab` and open notebooks/04_explore.ipynb",
)


def css() -> str:
    return (TEMPLATES / "report.css").read_text()


def notebook_title(nb) -> str:
    """The first Markdown heading of a notebook, without its '#'."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return "Untitled"


def page_title(stem: str, folder: Path | None = None) -> str:
    import nbformat

    for base in ([folder] if folder else []) + [find_root() / "notebooks"]:
        path = base / f"{stem}.ipynb"
        if path.exists():
            return notebook_title(nbformat.read(str(path), as_version=4))
    return stem


def _for_readers(nb) -> None:
    """Drop the plumbing cells and what a reader should not see (warnings on stderr)."""
    nb.cells = [c for c in nb.cells if not set(c.metadata.get("tags", [])) & set(HIDDEN_TAGS)]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
            ]


def to_html(
    notebook: Path,
    profile: str,
    prev: tuple[str, str] | None = None,
    next_: tuple[str, str] | None = None,
    index: str = "index.html",
) -> Path:
    """Render an executed notebook for readers: code hidden, a real title, links to the index and neighbours.
    The .ipynb beside it keeps the code."""
    import nbconvert
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    _for_readers(nb)
    nb.metadata["title"] = f"{notebook_title(nb)} | DIP inpainting report ({profile})"
    exporter = nbconvert.HTMLExporter(
        template_name="dip_page",
        extra_template_basedirs=[str(TEMPLATES)],
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(
        nb, resources={"dip": {"css": css(), "index": index, "prev": prev, "next": next_}}
    )
    out = notebook.with_suffix(".html")
    atomic_write_bytes(out, body.encode())
    return out


# ---------------------------------------------------------------- checks


_PLUMBING = (r"NBVAL_", r"\bcompute\s*=\s*(True|False)", r"injected-parameters", r"results_dir\s*=")


def check_page(text: str, landing: bool = False) -> list[str]:
    """What is wrong with a report page for a reader (an empty list when nothing)."""
    problems = []
    m = re.search(r"<title>(.*?)</title>", text, re.DOTALL)
    title = html.unescape(m.group(1)).strip() if m else ""
    if not title or title.lower() in ("notebook", "untitled") or len(title) < 8:
        problems.append(f"no real <title> (got {title!r})")
    visible = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.DOTALL | re.IGNORECASE)
    visible = re.sub(r"<[^>]+>", " ", visible)
    for pattern in _PLUMBING:
        if re.search(pattern, visible):
            problems.append(f"visible plumbing: {pattern}")
    if landing:
        if 'class="dip-claims"' not in text:
            problems.append("no claims table")
    elif not re.search(r'<a [^>]*href="index\.html"', text):
        problems.append("no link back to the index")
    return problems


def check_folder(folder: Path) -> dict[str, list[str]]:
    """check_page for every HTML page of a report folder: {file name: problems} for the failing ones."""
    out = {}
    for path in sorted(folder.glob("*.html")):
        problems = check_page(path.read_text(), landing=path.name == "index.html")
        if problems:
            out[path.name] = problems
    return out


# ---------------------------------------------------------------- landing page


def _verdict_class(verdict: str) -> str:
    return re.sub(r"[^a-z]+", "-", verdict.lower()).strip("-")


def _score_claims(loaded: dict[str, pages.Loaded], native):
    try:
        return pages.score_claims(loaded, native)
    except (DipError, ValueError, KeyError, TypeError, ZeroDivisionError, IndexError) as exc:
        log.warning("claims could not be scored from the stored runs: %s", exc)
        return None


def _key_table(t1, native) -> tuple[list[str], list[list[str]], str]:
    """Table-1 means per method over the images stored for it, beside the published means over the same
    images; ``native``: the paper-scale records of the 256 px images on a CPU (``table1_cpu``)."""
    pub = pages.published()
    head = [
        "method",
        "images",
        "mean PSNR here (dB)",
        "paper DIP, same images",
        "paper Papyan, same images",
        "group 71, same images",
    ]
    rows = []

    def published_means(images: list[str]) -> list[str]:
        cells = []
        for key in ("paper DIP", "paper Papyan", "group 71"):
            m = pages._mean(pub.get(i, {}).get(key) for i in images)
            cells.append(pages.DASH if m is None else f"{m:.2f}")
        return cells

    for preset in ("table1-paper", "table1-seed"):
        rows_p = pages.table1_rows(t1, preset)
        for key, label in (("oracle", "oracle"), ("eswmv", "ES-WMV")):
            vals = {v["image"]: v[key][0] for v in rows_p if v[key][2]}
            m = pages._mean(vals.values())
            rows.append(
                [
                    f"DIP {preset}, {label}",
                    str(len(vals)),
                    pages.DASH if m is None else f"{m:.2f}",
                    *published_means(list(vals)),
                ]
            )
    finals = {r.image: rec["summary"]["final_psnr"] for r, rec in native if r.method == "dip"}
    if finals:
        rows.append(
            [
                "DIP table1-paper, final, paper scale (native size, CPU bf16)",
                str(len(finals)),
                f"{pages._mean(finals.values()):.2f}",
                *published_means(list(finals)),
            ]
        )
    peer_rows = pages.table1_rows(t1, "table1-paper")
    for key, label in (("csc", "CSC (sporco), our run"), ("biharmonic", "biharmonic, our run")):
        vals = {v["image"]: v[key][0] for v in peer_rows if v[key][2]}
        m = pages._mean(vals.values())
        rows.append([label, str(len(vals)), pages.DASH if m is None else f"{m:.2f}", *published_means(list(vals))])
    all_images = list(pub)
    rows.append(["published, all 11 images", str(len(all_images)), pages.DASH, *published_means(all_images)])
    return head, rows, pages.sources()


def _sentences(loaded: dict[str, pages.Loaded], verdicts, prof, native) -> str:
    t1 = loaded["table1"].records
    out = []
    ns = table1_cpu.summary(native)
    if ns.images:
        out.append(
            f"At the paper's own scale (native size, 11000 iterations, 128 filters), on this CPU for {ns.images} "
            f"of Table 1's {ns.of_table} images, table1-paper's final output averages {ns.mean_final:.2f} dB "
            f"against the paper's {ns.mean_paper:.2f} dB on the same images ({ns.mean_diff:+.2f} dB); the "
            f"{ns.images} fits took {ns.hours:.1f} h in all, each on one {ns.device} core ({ns.numerics})."
        )
    best = None
    for preset in ("table1-paper", "table1-seed"):
        vals = pages._per_image(t1, preset)
        if vals and (best is None or np.mean(list(vals.values())) > best[1]):
            best = (preset, float(np.mean(list(vals.values()))), len(vals))
    if best:
        rows = pages.table1_rows(t1, best[0])
        csc = pages._mean(v["csc"][0] for v in rows if v["csc"][2])
        bih = pages._mean(v["biharmonic"][0] for v in rows if v["biharmonic"][2])
        out.append(
            f"On Table 1 at this scale the better DIP recipe, {best[0]}, reaches a mean oracle PSNR of "
            f"{best[1]:.2f} dB over {best[2]} images, against {pages._dB(csc)} for our CSC peer and "
            f"{pages._dB(bih)} for biharmonic interpolation."
        )
        es = pages._per_image(t1, best[0], "eswmv")
        gap = pages._mean(pages._per_image(t1, best[0])[i] - es[i] for i in es)
        if gap is not None:
            out.append(
                f"Without the ground truth, ES-WMV early stopping ends {gap:.2f} dB below that oracle on average."
            )
    else:
        out.append("No Table-1 run is stored yet.")
    if verdicts is not None and len(verdicts):
        counts = [
            _verdict_count(str(v), int(n)) + " (" + ", ".join(c.split(". ", 1)[0] for c in group["claim"]) + ")"
            for v, group in verdicts.groupby("verdict", sort=False)
            for n in [len(group)]
        ]
        listing = ", ".join(counts[:-1]) + " and " + counts[-1] if len(counts) > 1 else counts[0]
        out.append(f"Of the seed report's {len(verdicts)} claims, at this scale {listing}.")
    walls = [pages._num(x["summary"].get("wall_time")) for L in loaded.values() for _, x in L.records]
    walls = [w for w in walls if w is not None]
    if walls:
        out.append(
            f"The {len(walls)} stored runs of this profile took {sum(walls) / 3600:.1f} h of compute in all "
            "(the sum of their wall times, one CPU thread each)."
        )
    return " ".join(out)


def _verdict_count(verdict: str, n: int) -> str:
    """'1 is supported', '2 are undecided', '1 has no data': the sentence says 'at this scale' once."""
    from .claims import PARTIAL, UNDECIDED

    one, many = {
        "no data": ("has no data", "have no data"),
        UNDECIDED: ("is undecided", "are undecided"),
        PARTIAL: ("is undecided until all its runs are stored", "are undecided until all their runs are stored"),
    }.get(verdict, (f"is {verdict}", f"are {verdict}"))
    return f"{n} {one if n == 1 else many}"


def _easy_hard(loaded: dict[str, pages.Loaded], prof) -> tuple[str, str]:
    recs = [x for L in loaded.values() for x in L.records]
    dip = [pages._num(x["summary"].get("wall_time")) for r, x in recs if r.method == "dip"]
    dip = [v for v in dip if v is not None]
    peers = [pages._num(x["summary"].get("wall_time")) for r, x in recs if r.method != "dip"]
    peers = [v for v in peers if v is not None]
    easy = (
        "The method is simple to state and its code is public: the recipes here follow the original notebooks, "
        "and the 11 Table-1 images were found and verified by hash."
    )
    if peers:
        easy += f" The classical peers run in a median {np.median(peers):.2f} s per image on a CPU."
    hard = (
        "The paper does not say which iterate its Table 1 reports, so the comparison uses the oracle (best) "
        "iterate, which needs the ground truth; a user without it gets the final or an early-stopped output."
    )
    if dip:
        devices = sorted({x["environment"]["device_name"] for r, x in recs if r.method == "dip" and "environment" in x})
        hard += (
            f" Compute: the {len(dip)} stored DIP runs took a median {np.median(dip):.0f} s each "
            f"({sum(dip) / 3600:.1f} h in all) on {', '.join(devices)}"
        )
        hard += "; the paper's scale needs a GPU." if not prof.comparable else "."
    cheap = pages.cost_headline(loaded, prof)
    if cheap:
        hard += " " + cheap
    return easy, hard


def shown_folder(path: Path) -> str:
    """A folder as the pages name it: relative to the project root when inside it (``results/quick``,
    the same on every checkout), else absolute."""
    root, path = find_root(), path.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def landing_context(profile: str, store: ResultStore, folder: Path) -> dict[str, Any]:
    """Everything the landing page shows, computed from the stored results."""
    import mistune

    prof = get_profile(profile)
    loaded = {e: pages.load(e, profile, store) for e in EXPERIMENTS}
    native = table1_cpu.load(store)
    verdicts = _score_claims(loaded, native)
    titles = {stem: page_title(stem, folder) for stem, _ in PAGES}
    incomplete = [pages.coverage_line(L) for L in loaded.values() if not L.complete]
    claims_rows = []
    for k, claim in enumerate(CLAIMS):
        row = verdicts.iloc[k] if verdicts is not None and k < len(verdicts) else None
        verdict = str(row["verdict"]) if row is not None else "no data"
        claims_rows.append(
            {
                "claim": claim.title,
                "paper": str(row["paper"]) if row is not None else pages.DASH,
                "seed": str(row["seed"]) if row is not None else pages.DASH,
                "verdict": verdict,
                "verdict_class": _verdict_class(verdict),
                "key": (str(row["key"]) or pages.DASH) if row is not None else pages.DASH,
                "partial": "",
                "links": [(f"{stem}.html", titles.get(stem, stem)) for stem in claim.pages if stem != "05_claims"]
                + [("05_claims.html", "scored claim")],
            }
        )
    scope = (
        "The paper's Table 1 (inpainting with 50% of the pixels missing, 11 images, DIP against Papyan et al.), "
        "its kate text-inpainting example used for the seed report's architecture and optimiser sweeps, and the "
        f"seed report's {len(CLAIMS)} claims; beyond them, the paper's Fig. 2 and what a cheaper recipe gives up "
        "(PSNR against compute)."
    )
    method = (
        "<p>Recipes: "
        + "; ".join(
            f"<b>{html.escape(t)}</b>: {html.escape(d)}"
            for t, d in pages.GLOSSARY
            if t in ("table1-paper", "table1-seed", "text")
        )
        + ". "
        "Peers: biharmonic inpainting (scikit-image) and convolutional sparse coding (sporco) on the same masks.</p>"
        + "".join(mistune.html(pages.scale_note(e, prof)) for e in EXPERIMENTS)
    )
    head, rows, caption = _key_table(loaded["table1"].records, native)
    easy, hard = _easy_hard(loaded, prof)
    status = {
        "01_table1_bernoulli": "table1",
        "02_architecture_sweep": "arch",
        "03_optimizer_lr_sweep": "optim",
        "06_cost_quality": "cost",
        "07_paper_figures": "figures",
    }
    page_list = [
        {
            "href": f"{stem}.html",
            "title": titles[stem],
            "text": text,
            "status": pages.coverage_line(loaded[status[stem]]) if stem in status else "",
        }
        for stem, text in PAGES
    ]
    page_list.append(
        {"href": f"../../notebooks/{EXPLORER[0]}.ipynb", "title": EXPLORER[1], "text": EXPLORER[2], "status": ""}
    )
    return {
        "title": f"Deep Image Prior inpainting: a reproduction ({profile} profile)",
        "profile": profile,
        "css": css(),
        "comparable": prof.comparable,
        "results": f"{shown_folder(store.root / profile)}/",
        "missing": incomplete,
        "scope": scope,
        "methodology": method,
        "results_text": _sentences(loaded, verdicts, prof, native),
        "easy": easy,
        "hard": hard,
        "claims": claims_rows,
        "key_head": head,
        "key_rows": rows,
        "key_caption": caption,
        "pages": page_list,
        "glossary": pages.GLOSSARY,
    }


def _inline_markdown(text: str):
    """Markdown (backticks, bold) rendered inline for the landing template."""
    import markupsafe
    import mistune

    out = mistune.html(text).strip()
    return markupsafe.Markup(out[3:-4] if out.startswith("<p>") and out.endswith("</p>") else out)


def write_landing(
    folder: Path, profile: str, store: ResultStore | None = None, context: dict[str, Any] | None = None
) -> Path:
    """report/<profile>/index.html from the stored results (whatever part of them is stored);
    ``context``: ``landing_context``'s, when the caller has it already."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
    env.filters["md"] = _inline_markdown
    context = context or landing_context(profile, store or ResultStore(), folder)
    text = env.get_template("landing.html.j2").render(**context)
    out = folder / "index.html"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode())
    return out


# the README's findings: generated from the stored results like the landing page (``make report``)
README_START = "<!-- findings: written by `make report PROFILE=quick` from the stored results; do not edit -->"
README_END = "<!-- /findings -->"


def findings_markdown(profile: str, store: ResultStore) -> str:
    """What the report found, for the README: the landing page's result sentences."""
    prof = get_profile(profile)
    loaded = {e: pages.load(e, profile, store) for e in EXPERIMENTS}
    native = table1_cpu.load(store)
    return findings(prof, _sentences(loaded, _score_claims(loaded, native), prof, native))


def findings(prof: Profile, text: str) -> str:
    """The README's findings block from the landing page's result sentences ``text``."""
    scale = f'"This scale" below is the {prof.name} profile\'s: {prof.description.split(":")[0]}' + (
        "." if prof.comparable else ", not comparable to the paper."
    )
    return f"{scale}\n\n{text}\n\nThe rendered report: `report/{prof.name}/index.html`."


def update_readme(readme: Path, findings: str) -> bool:
    """Replace the findings block of ``readme`` (between its markers); False when it has none."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{findings}\n{README_END}{tail}"
    if new != text:
        atomic_write_bytes(readme, new.encode("utf-8"))
    return True
