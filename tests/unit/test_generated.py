from __future__ import annotations

from pathlib import Path

from tests.helpers import ROOT
from tools.gen_proto import GENERATED, generate


def test_generated_config_code_is_current(tmp_path: Path) -> None:
    generate(tmp_path)
    for relative in GENERATED:
        fresh = (tmp_path / relative).read_text()
        assert (ROOT / relative).read_text() == fresh, f"{relative} is stale: run `make proto`"
