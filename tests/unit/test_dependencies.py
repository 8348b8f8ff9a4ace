"""The image installs the package's own dependencies alone and `make run` those and the `demo`
extra: every module the package imports must come from one of its dependencies, and only the
demo MCP server's from the `demo` extra; none from a test or tooling extra."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

from tests.helpers import ROOT


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string ("google-re2>=1.1")."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _imported_top_level_modules(paths: Iterable[Path]) -> set[str]:
    modules = set()
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"extproc", "__future__"}


def _unprovided(modules: set[str], requirements: list[str]) -> dict[str, list[str]]:
    """The modules none of the requirements installs, with the distributions that do."""
    allowed = {_name(r) for r in requirements}
    providers = importlib.metadata.packages_distributions()
    # A namespace several distributions install into (google: protobuf and others): any of
    # them listed is enough.
    return {
        module: providers.get(module, [])
        for module in modules
        if not allowed & {_name(d) for d in providers.get(module, [])}
    }


def test_every_module_the_package_imports_is_a_runtime_dependency() -> None:
    runtime: list[str] = _project()["dependencies"]  # type: ignore[assignment]
    extras: dict[str, list[str]] = _project()["optional-dependencies"]  # type: ignore[assignment]
    demo = ROOT / "extproc" / "devtools" / "mcp_demo"
    outside = (p for p in (ROOT / "extproc").rglob("*.py") if demo not in p.parents)
    assert _unprovided(_imported_top_level_modules(outside), runtime) == {}
    demo_modules = _imported_top_level_modules(demo.rglob("*.py"))
    assert _unprovided(demo_modules, runtime + extras["demo"]) == {}


def test_dev_holds_every_other_extra() -> None:
    extras: dict[str, list[str]] = _project()["optional-dependencies"]  # type: ignore[assignment]
    dev = extras["dev"]
    included = next(r for r in dev if r.startswith("extproc["))
    assert set(included[len("extproc[") : -1].split(",")) == set(extras) - {"dev"}


def test_every_direct_dependency_is_pinned() -> None:
    extras: dict[str, list[str]] = _project()["optional-dependencies"]  # type: ignore[assignment]
    declared = {_name(r) for r in _project()["dependencies"]}  # type: ignore[attr-defined]
    declared |= {
        _name(r) for group in extras.values() for r in group if not r.startswith("extproc")
    }
    pinned = {
        _name(line)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert declared - pinned == set()
