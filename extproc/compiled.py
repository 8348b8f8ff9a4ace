"""The request path compiled to C (by mypyc), used when it was built from these sources.

`tools/compile.py` (`make compiled`) builds the modules it lists into `_compiled/` beside
this file, with a manifest naming them and a fingerprint of every source of the package.
`install()` puts a finder first in `sys.meta_path` that serves those modules from there, and
only when the fingerprint still matches: compiled code built from other sources (an edit
since, a checkout) is never run; the package's own sources are, and `STATE` says why.
`EXTPROC_PURE=1` runs the sources alone.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent
BUILT = PACKAGE / "_compiled"
MANIFEST = BUILT / "manifest.json"
EXTENSION = importlib.machinery.EXTENSION_SUFFIXES[0]

# How the package runs: "compiled (N modules)", or "sources: <why>".
STATE = "sources: not installed"


def fingerprint(package: Path = PACKAGE) -> str:
    """Every source file of the package, by path and content: compiled code depends on the
    types of the modules it imports as well as on its own."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


class _Finder(MetaPathFinder):
    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        found = self.paths.get(fullname)
        if found is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(found))
        return importlib.util.spec_from_file_location(fullname, found, loader=loader)


def _paths() -> tuple[dict[str, Path] | None, str]:
    """The compiled modules' files by module name, or None and why the sources run."""
    if os.environ.get("EXTPROC_PURE") == "1":
        return None, "sources: EXTPROC_PURE=1"
    try:
        manifest = json.loads(MANIFEST.read_text())
        extension, built_from = manifest["extension"], manifest["fingerprint"]
        modules, shared = list(manifest["modules"]), manifest["shared"]
        if not all(isinstance(name, str) for name in [*modules, shared]):
            raise ValueError("a module name is not a string")
    except FileNotFoundError:
        return None, "sources: not compiled"
    # A damaged build must not stop the package from importing.
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, f"sources: the manifest is unreadable ({error!r})"
    if extension != EXTENSION:
        return None, f"sources: compiled for {extension}, not {EXTENSION}"
    if built_from != fingerprint():
        return None, "sources: compiled from other sources (make compiled builds them anew)"
    paths = {}
    for name in [*modules, shared]:
        path = BUILT.joinpath(*name.split(".")).with_suffix(EXTENSION)
        if not path.is_file():
            return None, f"sources: {name} is missing from the build"
        paths[name] = path
    return paths, f"compiled ({len(modules)} modules)"


def install() -> None:
    """Serve the compiled modules when they match the sources (once per process)."""
    global STATE
    if any(isinstance(finder, _Finder) for finder in sys.meta_path):
        return
    paths, STATE = _paths()
    if paths is not None:
        sys.meta_path.insert(0, _Finder(paths))
