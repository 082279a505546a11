"""The package metadata builds without setuptools' warnings and ships the site's style sheet."""

from __future__ import annotations

import subprocess
import sys


def test_the_package_builds_without_warnings_and_with_its_templates(tmp_path, repo_root):
    """What ``make setup`` builds: no deprecated license table, no data folder outside ``packages``."""
    build = ["egg_info", "--egg-base", str(tmp_path), "build_py", "--build-lib", str(tmp_path / "lib")]
    proc = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", *build],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "Warning" in line]
    assert warnings == []
    assert (tmp_path / "lib" / "dip_lib" / "report" / "templates" / "book" / "dip.css").is_file()
