"""The README's findings are the committed results' (written by ``make report``), never typed."""

from __future__ import annotations

from pathlib import Path

from dip_lib import site
from dip_lib.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_findings_are_generated_from_the_committed_results():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split(site.README_START, 1)[1].split(site.README_END, 1)[0].strip("\n")
    assert block == site.findings_markdown("quick", ResultStore(ROOT / "results"))


def test_update_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{site.README_START}\nold\n{site.README_END}\n\nrest\n")
    assert site.update_readme(readme, "new")
    assert readme.read_text() == f"# title\n\n{site.README_START}\nnew\n{site.README_END}\n\nrest\n"
    (tmp_path / "other.md").write_text("no markers\n")
    assert not site.update_readme(tmp_path / "other.md", "new")
