"""The documentation: the site builds strictly, the config reference is current, the config
examples fit the schema, links to the repository's files resolve, the README stays short."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from extproc.config.schema import fill
from extproc.config.v1 import config_pb2 as pb
from tests.helpers import ROOT
from tools import gen_config_docs

DOCS = ROOT / "docs"
README_MAX_LINES = 250
_REPO_LINK = re.compile(
    re.escape(gen_config_docs.REPO_FILES.rsplit("blob/", 1)[0]) + r"(?:blob|tree)/main/([^)#\s]+)"
)
_YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_site_builds_strictly(tmp_path: Path) -> None:
    """mkdocs --strict fails on a link to a missing page or heading, or a page not in the nav."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    assert (tmp_path / "configuration" / "reference" / "index.html").is_file()


def test_config_reference_is_current(tmp_path: Path) -> None:
    page = tmp_path / "reference.md"
    assert gen_config_docs.main(["gen_config_docs", str(page)]) == 0
    current = gen_config_docs.PAGE.read_text()
    assert current == page.read_text(), "docs/configuration/reference.md is stale: run `make docs`"


def test_every_config_field_is_documented() -> None:
    schema = gen_config_docs.read_schema(gen_config_docs.descriptor())
    assert gen_config_docs.undocumented(schema) == []


def test_reference_lists_every_message_reachable_from_config() -> None:
    schema = gen_config_docs.read_schema(gen_config_docs.descriptor())
    page = gen_config_docs.PAGE.read_text()
    for type_name, _ in gen_config_docs.walk(schema):
        kind = schema.enums.get(type_name) or schema.messages[type_name]
        assert f"\n## {kind.name}\n" in page


def _config_examples() -> list[tuple[str, int, str]]:
    examples = []
    for page in sorted((DOCS / "configuration").glob("*.md")):
        for number, block in enumerate(_YAML_BLOCK.findall(page.read_text())):
            examples.append((page.name, number, block))
    return examples


@pytest.mark.parametrize(
    ("page", "number", "block"),
    _config_examples(),
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "",
)
def test_config_examples_fit_the_schema(page: str, number: int, block: str) -> None:
    problems: list[str] = []
    fill(pb.Config(), yaml.safe_load(block), "", problems)
    assert problems == [], f"{page}, YAML block {number}"


def test_the_full_config_example_covers_the_main_sections() -> None:
    _, _, full = next(e for e in _config_examples() if e[0] == "index.md")
    sections = set(yaml.safe_load(full))
    assert {"listener", "service", "admin", "limits", "backends", "models", "tenants", "auth"} <= (
        sections
    )


def test_links_to_repository_files_name_files_that_exist() -> None:
    links = [
        (str(page.relative_to(ROOT)), target)
        for page in sorted(DOCS.rglob("*.md"))
        for target in _REPO_LINK.findall(page.read_text())
    ]
    assert links
    assert [(page, target) for page, target in links if not (ROOT / target).exists()] == []


def test_readme_links_resolve() -> None:
    """The README's relative links (into the site, to the repository's files), as GitHub
    renders them; the site's own links are checked by its strict build."""
    targets = re.findall(r"\]\(([^)#\s:]+)", (ROOT / "README.md").read_text())
    assert any(target.startswith("docs/") for target in targets)
    assert [target for target in targets if not (ROOT / target).exists()] == []


def test_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES
