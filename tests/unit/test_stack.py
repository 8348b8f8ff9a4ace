"""The processes a stack starts run the package the stack was imported from."""

from __future__ import annotations

import subprocess
from pathlib import Path

from extproc.control.stack import extproc_argv, process_env


def test_a_folder_named_extproc_in_the_working_directory_is_not_run(tmp_path: Path) -> None:
    """A benchmark of another tree, or a checkout with an `extproc` folder beside it, must
    not start that folder's code in place of the stack's own package."""
    shadow = tmp_path / "extproc"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    (shadow / "__main__.py").write_text("print('the wrong package')\n")
    ran = subprocess.run(
        [*extproc_argv("--help")],
        cwd=tmp_path,
        env=process_env({}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "the wrong package" not in ran.stdout
    assert ran.returncode == 0 and "serve" in ran.stdout
