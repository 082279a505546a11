"""The README's findings are the committed results' (written by ``make report``), never typed."""

from __future__ import annotations

from pathlib import Path

from dip_lib.report import book

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_findings_are_generated_from_the_committed_results():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split(book.README_START, 1)[1].split(book.README_END, 1)[0].strip("\n")
    assert block == book.findings(ROOT / "notebooks" / "index.md", ROOT / "report" / "quick", "quick")


def test_update_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{book.README_START}\nold\n{book.README_END}\n\nrest\n")
    assert book.update_readme(readme, "new")
    assert readme.read_text() == f"# title\n\n{book.README_START}\nnew\n{book.README_END}\n\nrest\n"
    (tmp_path / "other.md").write_text("no markers\n")
    assert not book.update_readme(tmp_path / "other.md", "new")
