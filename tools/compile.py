"""Compile the request path with mypyc into extproc/_compiled (run by `make compiled`).

The modules below are the ones a request, a streamed chunk and the ext_proc transport run
through (no package's `__init__`: a compiled one would look for its submodules among the
compiled files; the configuration's records are read on every request, its loading is
not); the rest of the package (loading the configuration, the control commands, MCP, the
stores) stays interpreted. The build is written to a temporary folder and moved into place
with its manifest only once it succeeded, so a failed build leaves the sources running.

Each module is its own C file (mypyc's multi-file mode) and the files of the one shared
library are compiled in parallel: one C file for all modules kept gcc on one core.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from extproc import compiled  # noqa: E402

MODULES = [
    "extproc/accounting/prices.py",
    "extproc/accounting/usage.py",
    "extproc/apis/checks.py",
    "extproc/apis/endpoints.py",
    "extproc/apis/text.py",
    "extproc/apis/validation.py",
    "extproc/cache.py",
    "extproc/config/runtime.py",
    "extproc/dataplane/budget.py",
    "extproc/dataplane/conversation.py",
    "extproc/dataplane/decisions.py",
    "extproc/dataplane/effects.py",
    "extproc/dataplane/envoy.py",
    "extproc/dataplane/exchange.py",
    "extproc/dataplane/incoming.py",
    "extproc/dataplane/phases.py",
    "extproc/dataplane/processor.py",
    "extproc/dataplane/reader.py",
    "extproc/dataplane/report.py",
    "extproc/dataplane/response.py",
    "extproc/dataplane/stages.py",
    "extproc/dataplane/steps.py",
    "extproc/dataplane/stream.py",
    "extproc/dataplane/upstream.py",
    "extproc/digits.py",
    "extproc/identity.py",
    "extproc/policy/detectors.py",
    "extproc/policy/engine.py",
    "extproc/policy/filters.py",
    "extproc/policy/rules.py",
    "extproc/routing.py",
    "extproc/slices.py",
    "extproc/sse.py",
    "extproc/telemetry/logging.py",
    "extproc/telemetry/metrics.py",
    "extproc/telemetry/observation.py",
    "extproc/tokens.py",
    "extproc/translate/anthropic_messages.py",
    "extproc/translate/anthropic_messages_stream.py",
    "extproc/translate/hub.py",
    "extproc/translate/openai_chat.py",
    "extproc/translate/openai_chat_stream.py",
    "extproc/translate/openai_responses.py",
    "extproc/translate/openai_responses_items.py",
    "extproc/translate/openai_responses_stream.py",
    "extproc/translate/translation.py",
    "extproc/transport/calls.py",
    "extproc/transport/frames.py",
    "extproc/transport/h2.py",
    "extproc/transport/headers.py",
    "extproc/transport/received.py",
    "extproc/transport/server.py",
    "extproc/transport/stream.py",
]


def parallel_compile(compiler: Any, workers: int) -> None:
    """Have `compiler` (a distutils C compiler) run its sources' compilations `workers` at a
    time: setuptools compiles the sources of one extension one after another. Its `compile`
    is its own steps (`_setup_compile`, `_get_cc_args`, one `_compile` per object) with the
    loop spread over threads, each waiting on its gcc."""

    def compile_all(
        sources: list[str],
        output_dir: str | None = None,
        macros: Any = None,
        include_dirs: Any = None,
        debug: bool = False,
        extra_preargs: list[str] | None = None,
        extra_postargs: list[str] | None = None,
        depends: list[str] | None = None,
    ) -> list[str]:
        macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs
        )
        cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)

        def one(obj: str) -> None:
            src, ext = build[obj]
            compiler._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, [obj for obj in objects if obj in build]))
        return list(objects)

    compiler.compile = compile_all


def main() -> None:
    from mypyc.build import mypycify
    from setuptools import setup
    from setuptools.command.build_ext import build_ext

    workers = os.cpu_count() or 1

    class ParallelBuildExt(build_ext):  # type: ignore[misc]
        def build_extension(self, ext: Any) -> None:
            parallel_compile(self.compiler, workers)
            super().build_extension(ext)

    os.chdir(ROOT)
    source_print = compiled.fingerprint()
    with tempfile.TemporaryDirectory(prefix="extproc-compile-") as tmp:
        out = Path(tmp) / "out"
        extensions = mypycify(
            MODULES,
            opt_level=os.environ.get("MYPYC_OPT_LEVEL", "3"),
            target_dir=str(Path(tmp) / "c"),
            multi_file=True,
        )
        setup(
            name="extproc-compiled",
            cmdclass={"build_ext": ParallelBuildExt},
            ext_modules=extensions,
            script_args=[
                "--quiet",
                "build_ext",
                *("--build-lib", str(out)),
                *("--build-temp", str(Path(tmp) / "temp")),
                *("--parallel", str(workers)),
            ],
        )
        shared = [e.name for e in extensions if "." not in e.name]
        if len(shared) != 1:
            raise SystemExit(f"expected one shared library among {[e.name for e in extensions]}")
        if compiled.fingerprint() != source_print:
            raise SystemExit("the sources changed while they were compiled: run it again")
        manifest = {
            "fingerprint": source_print,
            "extension": compiled.EXTENSION,
            "shared": shared[0],
            "modules": [m.removesuffix(".py").replace("/", ".") for m in MODULES],
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(compiled.BUILT, ignore_errors=True)
        shutil.move(out, compiled.BUILT)
    print(f"compiled {len(MODULES)} modules into {compiled.BUILT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
