"""The processes a stack starts run the package the stack was imported from."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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


def test_the_processes_run_the_package_the_stack_was_imported_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A benchmark that imports another tree (an A/B of two commits) runs that tree's
    service, not the one installed in the environment."""
    from extproc.control import stack

    tree = tmp_path / "tree" / "extproc"
    tree.mkdir(parents=True)
    (tree / "__init__.py").write_text("")
    (tree / "__main__.py").write_text("print('the other tree')\n")
    monkeypatch.setattr(stack, "_PACKAGE_ROOT", str(tmp_path / "tree"))
    ran = subprocess.run(
        extproc_argv(), env=process_env({}), capture_output=True, text=True, timeout=60
    )
    assert ran.stdout.strip() == "the other tree"
