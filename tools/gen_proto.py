"""Compile proto/ into extproc/config/v1 (run by `make proto`; a test checks it is current).

proto/buf/validate/validate.proto is protovalidate's rule schema (vendored: the
protovalidate package ships only its own runtime's copy). Its generated module lives
beside ours as buf_validate_pb2, and the imports of it are rewritten to that name, so the
package needs no top-level `buf` module.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = "extproc/config/v1"
VALIDATE = "buf/validate/validate.proto"
# Generated module -> where it goes.
PLACES = {
    "buf/validate/validate_pb2.py": f"{OUT}/buf_validate_pb2.py",
    f"{OUT}/config_pb2.py": f"{OUT}/config_pb2.py",
    f"{OUT}/config_pb2.pyi": f"{OUT}/config_pb2.pyi",
    f"{OUT}/options_pb2.py": f"{OUT}/options_pb2.py",
    f"{OUT}/options_pb2.pyi": f"{OUT}/options_pb2.pyi",
}
GENERATED = tuple(PLACES.values())
_IMPORTS = {
    "from buf.validate import validate_pb2": "from extproc.config.v1 import buf_validate_pb2",
    "import buf.validate.validate_pb2": "import extproc.config.v1.buf_validate_pb2",
}


def _protoc(out_dir: Path, plugins: list[str], sources: list[str]) -> None:
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", *plugins, *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generate(out_dir: Path) -> None:
    """Write the generated modules under out_dir (mirroring the package path)."""
    ours = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / OUT).rglob("*.proto"))
    # protoc finds the protoc-gen-mypy plugin on PATH, next to this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch)
        _protoc(raw, [f"--python_out={raw}"], [VALIDATE])
        _protoc(raw, [f"--python_out={raw}", f"--mypy_out={raw}"], ours)
        for source, target in PLACES.items():
            text = (raw / source).read_text()
            for old, new in _IMPORTS.items():
                text = text.replace(old, new)
            destination = out_dir / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(text)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
