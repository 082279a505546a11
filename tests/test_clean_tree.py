"""Re-rendering leaves the committed tree as it was: the quick report rendered on a clean clone of
the last commit (its executed notebooks, its site and the README's findings) is byte-identical to
the committed one, which an earlier render wrote; so two renders agree and nothing volatile
(timestamps, machine paths, progress widgets) is committed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_rendering_the_quick_report_on_a_clean_clone_changes_nothing(tmp_path, shared_data):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(clone), "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dip_lib", "report", "--profile", "quick"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone, capture_output=True, text=True
    )
    assert status.stdout == "", status.stdout[:3000]
