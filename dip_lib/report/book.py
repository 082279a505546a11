"""The rendered report: a Sphinx site built with myst-nb (the Jupyter Book stack) from the executed
notebooks and the book's own pages in ``notebooks/`` (``index.md``, the landing page, the glossary
and ``references.bib``), plus ``check_page``, the rules every page must pass, and ``paste``, which fills
the glue references of a Markdown text from executed notebooks (the README's findings).

The site opens offline: the theme's files are copied beside the pages and nothing is loaded from
elsewhere (no CDN for MathJax or require.js); ``check_page`` fails a page that would load anything.
"""

from __future__ import annotations

import html
import io
import json
import re
import shutil
from pathlib import Path

from ..core.errors import DipError
from ..core.imageio import atomic_write_bytes
from .facts import DASH

STATIC = Path(__file__).resolve().parent / "templates" / "book"
TITLE = "Deep Image Prior inpainting, reproduced"
# the footer's "By ...": the project, as pyproject.toml names it
AUTHOR = "dip-inpainting"
# the site numbers its own figures and tables "Report fig. N": the pages cite the paper's figures as
# "Fig. N", and one name for both would make our second figure read as the paper's Fig. 2
NUMFIG_FORMAT = {"figure": "Report fig. %s", "table": "Report table %s", "code-block": "Listing %s"}


def _config(profile: str) -> dict:
    """Sphinx's configuration (no conf.py: everything is here)."""
    return {
        "project": TITLE,
        "author": AUTHOR,
        "html_title": f"{TITLE} ({profile})",
        "extensions": ["myst_nb", "sphinxcontrib.bibtex"],
        "nb_execution_mode": "off",  # the notebooks arrive executed by papermill
        "nb_remove_code_source": True,  # readers see the outputs; the .ipynb beside the page keeps the code
        "nb_output_stderr": "remove",
        "nb_ipywidgets_js": {},  # no require.js or widget manager from a CDN
        "nb_merge_streams": True,
        "myst_enable_extensions": ["colon_fence", "deflist"],
        "bibtex_bibfiles": ["references.bib"],
        "bibtex_reference_style": "author_year",
        "numfig": True,
        "numfig_format": NUMFIG_FORMAT,
        "html_theme": "sphinx_book_theme",
        "html_theme_options": {
            "show_toc_level": 2,
            "home_page_in_toc": True,
            "use_download_button": False,
            "secondary_sidebar_items": [],  # the page's width goes to its tables and figures
        },
        "html_static_path": [str(STATIC)],
        "html_css_files": ["dip.css"],
        "html_copy_source": False,
        "html_show_sourcelink": False,
        "html_last_updated_fmt": None,
        "html_permalinks": False,
        "html_show_sphinx": False,
        "suppress_warnings": ["myst.header"],
        "exclude_patterns": ["_build", "**.ipynb_checkpoints"],
    }


def build(executed: list[Path], out: Path, profile: str, book: Path) -> Path:
    """Build the HTML site of the executed notebooks ``executed`` and the book pages in ``book`` into
    ``out`` (flat: ``index.html``, one page per notebook, ``_static/``, ``_images/``, search). A
    warning (a glue key that no notebook defines, a missing reference) fails the build."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    work = out / ".build"  # sources, doctrees, myst-nb's jupyter_execute/ and the HTML: removed when built
    src, html_dir = work / "source", work / "html"
    shutil.rmtree(work, ignore_errors=True)
    src.mkdir(parents=True)
    try:
        for nb in executed:
            shutil.copy(nb, src / nb.name)
        for page in [*book.glob("*.md"), *book.glob("*.bib")]:  # the book's own pages and bibliography
            shutil.copy(page, src / page.name)
        # a report of some notebooks (a test's) lists only those in its table of contents, and shows a
        # dash for a value glued from a notebook it does not hold (and no table from one)
        have = {nb.stem for nb in executed}
        lines = (book / "index.md").read_text(encoding="utf-8").splitlines(keepends=True)
        keep = "".join(ln for ln in lines if not (re.fullmatch(r"\d\d_\w+", ln.strip()) and ln.strip() not in have))
        keep = re.sub(r"```\{glue\} \w+\n:doc: (\d\d_\w+)\.ipynb\n```\n", lambda m: m[0] * (m[1] in have), keep)
        keep = re.sub(r"\{glue:text\}`(\d\d_\w+)\.ipynb::[^`]+`", lambda m: m[0] if m[1] in have else DASH, keep)
        (src / "index.md").write_text(keep, encoding="utf-8")
        warnings = io.StringIO()
        # docutils keeps its roles and directives in globals: a second build in one process (a test's)
        # gets a fresh set, as sphinx-build does
        with patch_docutils(str(src)), docutils_namespace():
            app = Sphinx(
                str(src),
                None,
                str(html_dir),
                str(work / "doctrees"),
                "html",
                confoverrides=_config(profile),
                status=None,
                warning=warnings,
                freshenv=True,
            )
            app.build()
        if app.statuscode or warnings.getvalue().strip():
            raise DipError("the report's site has warnings: " + " | ".join(warnings.getvalue().strip().splitlines()))
        for path in [html_dir / ".buildinfo", *html_dir.glob("_static/**/*.map")]:
            path.unlink(missing_ok=True)  # a hash of the configuration and source maps: nothing a reader needs
        shutil.rmtree(html_dir / "_sources", ignore_errors=True)  # the notebooks sit beside their pages
        for path in html_dir.iterdir():
            path.replace(out / path.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out / "index.html"


# ---------------------------------------------------------------- checks

_PLUMBING = (r"NBVAL_", r"\bcompute\s*=\s*(True|False)", r"injected-parameters", r"results_dir\s*=")
# what makes a browser fetch from elsewhere: src/href/url() to an absolute http(s) or protocol-relative URL
_REMOTE = re.compile(r"""(?:\bsrc\s*=\s*["']|<link\b[^>]*\bhref\s*=\s*["']|url\(\s*["']?)(?:https?:)?//""", re.I)


def check_page(text: str, landing: bool = False) -> list[str]:
    """What is wrong with a report page for a reader (an empty list when nothing)."""
    problems = []
    m = re.search(r"<title>(.*?)</title>", text, re.DOTALL)
    title = html.unescape(m.group(1)).strip() if m else ""
    if not title or title.lower().startswith(("notebook", "untitled", "<no title>")) or len(title) < 8:
        problems.append(f"no real <title> (got {title!r})")
    visible = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.DOTALL | re.IGNORECASE)
    visible = re.sub(r"<[^>]+>", " ", visible)
    for pattern in _PLUMBING:
        if re.search(pattern, visible):
            problems.append(f"visible plumbing: {pattern}")
    remote = _REMOTE.search(text)
    if remote:
        problems.append(f"loads from another site: {remote.group(0)}")
    if landing:
        if "dip-claims" not in text:
            problems.append("no claims table")
    elif not re.search(r'<a [^>]*href="index\.html"', text):
        problems.append("no link back to the index")
    return problems


def check_folder(folder: Path) -> dict[str, list[str]]:
    """check_page for every HTML page of a report folder (and every stylesheet it ships, for remote
    loads): {file name: problems} for the failing ones."""
    out = {}
    for path in sorted(folder.glob("*.html")):
        if path.name in ("genindex.html", "search.html"):
            problems = [p for p in check_page(path.read_text()) if "plumbing" not in p]
        else:
            problems = check_page(path.read_text(), landing=path.name == "index.html")
        if problems:
            out[path.name] = problems
    for path in sorted(folder.glob("_static/**/*.css")):
        if _REMOTE.search(path.read_text(errors="replace")):
            out[str(path.relative_to(folder))] = ["loads from another site"]
    return out


# ---------------------------------------------------------------- glue outside Sphinx

_GLUE = re.compile(r"\{glue(?::text)?\}`(?:(?P<doc>[^`:]+?)(?:\.ipynb)?::)?(?P<key>[\w.-]+)(?::(?P<fmt>[^`]+))?`")


def glued(notebook: Path) -> dict[str, str]:
    """The text/plain value of every key an executed notebook glued (``myst_nb.glue``)."""
    out = {}
    for cell in json.loads(notebook.read_text()).get("cells", []):
        for o in cell.get("outputs", []):
            book = o.get("metadata", {}).get("scrapbook", {})
            text = o.get("data", {}).get(book.get("mime_prefix", "") + "text/plain")
            name = book.get("name")
            if name and text is not None:
                out[name] = "".join(text) if isinstance(text, list) else text
    return out


def paste(text: str, folder: Path) -> str:
    """``text`` with its glue roles ({glue}`nb::key` and {glue:text}`nb::key:fmt`) replaced by the
    values the executed notebooks in ``folder`` glued, as myst-nb's {glue:text} role shows them (a dash
    for a notebook the folder does not hold); a key its notebook did not glue is an error, as it is in
    the Sphinx build."""
    from myst_nb.core.variables import format_plain_text

    cache: dict[str, dict[str, str]] = {}

    def value(m: re.Match) -> str:
        doc = m["doc"]
        if doc is None:
            raise DipError(f"glue key {m['key']!r} names no notebook")
        path = folder / f"{doc}.ipynb"
        if not path.is_file():  # a report of some notebooks: a dash, as its landing page shows
            return DASH
        if doc not in cache:
            cache[doc] = glued(path)
        if m["key"] not in cache[doc]:
            raise DipError(f"{doc}.ipynb glued no {m['key']!r}")
        return format_plain_text(cache[doc][m["key"]], m["fmt"] or "")

    return _GLUE.sub(value, text)


def section(text: str, name: str) -> str:
    """The part of a Markdown page between ``<!-- name -->`` and ``<!-- /name -->``."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if start not in text or end not in text:
        raise DipError(f"no {start} ... {end} section")
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


# the README's findings: the landing page's summary with its numbers pasted (``make report``)
README_START = "<!-- findings: written by `make report PROFILE=quick` from the stored results; do not edit -->"
README_END = "<!-- /findings -->"


def findings(landing: Path, folder: Path, profile: str) -> str:
    """The README's findings block: the summary of the landing page ``landing`` with the values the
    executed notebooks in ``folder`` glued."""
    summary = paste(section(landing.read_text(encoding="utf-8"), "summary"), folder)
    return f"{summary}\n\nThe rendered report: `report/{profile}/index.html`."


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
