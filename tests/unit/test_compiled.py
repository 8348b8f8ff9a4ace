"""The compiled request path is run only when it was built from the package's sources."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from extproc import compiled
from tests.helpers import ROOT

MODULE = "extproc.dataplane.exchange"


def run(package: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A new process of `package` prints its state, then imports the module and prints
    the file it was loaded from."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import extproc.compiled as c; "
        f"print(c.STATE, flush=True); import {MODULE} as m; print(m.__file__)"
    )
    environment = {k: v for k, v in os.environ.items() if k != "EXTPROC_PURE"}
    return subprocess.run(
        [sys.executable, "-P", "-c", code, str(package.parent)],
        env={**environment, **env},
        capture_output=True,
        text=True,
        check=False,
        cwd=package.parent,
    )


def where(env: dict[str, str], package: Path) -> list[str]:
    """What a new process of `package` runs: the state, then the module's file."""
    result = run(package, env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A copy of the package with a build of one module, named in its manifest as
    tools/compile.py names it; a copy, so that its sources can change."""
    copy = tmp_path / "extproc"
    shutil.copytree(
        ROOT / "extproc", copy, ignore=shutil.ignore_patterns("_compiled", "__pycache__")
    )
    build = copy / "_compiled"
    # A stand-in extension module: an interpreted copy of the module would not show which
    # file was loaded, and a real build takes minutes. The finder is what is tested here.
    (build / "extproc" / "dataplane").mkdir(parents=True)
    so = build / "extproc" / "dataplane" / f"exchange{compiled.EXTENSION}"
    shared = build / f"shared{compiled.EXTENSION}"
    for target in (so, shared):
        target.write_bytes(b"")
    manifest = {
        "fingerprint": compiled.fingerprint(copy),
        "extension": compiled.EXTENSION,
        "shared": "shared",
        "modules": [MODULE],
    }
    (build / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_build_of_the_same_sources_is_loaded(package: Path) -> None:
    """The finder serves the built file (an empty one here, so the import fails on it)."""
    result = run(package, {})
    assert result.stdout.splitlines() == ["compiled (1 modules)"]
    assert f"_compiled/extproc/dataplane/exchange{compiled.EXTENSION}" in result.stderr


def test_a_build_of_other_sources_is_not_loaded(package: Path) -> None:
    with (package / "routing.py").open("a") as source:
        source.write("\n# an edit\n")
    state, file = where({}, package)
    assert state.startswith("sources: compiled from other sources")
    assert file == str(package / "dataplane" / "exchange.py")


def test_the_sources_run_when_asked_for(package: Path) -> None:
    state, file = where({"EXTPROC_PURE": "1"}, package)
    assert state == "sources: EXTPROC_PURE=1"
    assert file == str(package / "dataplane" / "exchange.py")


def test_a_build_for_another_interpreter_is_not_loaded(package: Path) -> None:
    manifest = package / "_compiled" / "manifest.json"
    manifest.write_text(manifest.read_text().replace(compiled.EXTENSION, ".cpython-399.so"))
    state, file = where({}, package)
    assert state.startswith("sources: compiled for .cpython-399.so")
    assert file.endswith("exchange.py")


def test_a_build_missing_a_module_is_not_loaded(package: Path) -> None:
    (package / "_compiled" / f"shared{compiled.EXTENSION}").unlink()
    state, file = where({}, package)
    assert state == "sources: shared is missing from the build"
    assert file.endswith("exchange.py")


@pytest.mark.parametrize("text", ["{", "[]", '{"extension": 1}', '{"modules": [1]}'])
def test_a_damaged_manifest_runs_the_sources(package: Path, text: str) -> None:
    manifest = package / "_compiled" / "manifest.json"
    if text.startswith('{"modules"'):
        text = manifest.read_text().replace('"modules": [', '"modules": [1, ')
    manifest.write_text(text)
    state, file = where({}, package)
    assert state.startswith("sources: the manifest is unreadable")
    assert file.endswith("exchange.py")


def test_no_build_runs_the_sources(package: Path) -> None:
    shutil.rmtree(package / "_compiled")
    assert where({}, package) == ["sources: not compiled", str(package / "dataplane/exchange.py")]


def test_this_suite_runs_what_make_test_built() -> None:
    """`make test` builds the request path first: the suite tests the compiled code."""
    if os.environ.get("EXTPROC_PURE") == "1":
        assert compiled.STATE == "sources: EXTPROC_PURE=1"
        return
    assert compiled.STATE.startswith("compiled"), compiled.STATE
    from extproc.dataplane import exchange

    assert exchange.__file__ is not None and exchange.__file__.endswith(compiled.EXTENSION)


def test_a_compiled_request_runs_no_interpreted_code_of_the_package() -> None:
    """A 1 KB request through the demo policy and accounting: none of the package's own
    functions, and no generated dataclass method, runs interpreted (bench/interpreted.py
    counts them). Under the sources they all do."""
    from bench.interpreted import interpreted_calls

    # What grows with the requests: a connection's own calls (its limits, its HPACK
    # tables) are the same in both runs.
    fewer, more = interpreted_calls(16), interpreted_calls(32)
    grown = {key for key, count in more.items() if count > fewer[key]}
    own = {key for key in grown if key[0].startswith("extproc/") or key[1].startswith("extproc.")}
    if compiled.STATE.startswith("compiled"):
        assert not own, own
    else:
        assert ("extproc/dataplane/exchange.py", "Exchange.request_body") in own
