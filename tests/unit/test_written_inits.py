"""Dataclasses of the compiled modules that write their own `__init__` (so that it compiles)
set every field they declare, and only those: a field left out would be unset on every
instance, which neither the type check nor the dataclass decorator notices."""

from __future__ import annotations

import ast
import dataclasses
import importlib

import pytest

from tests.helpers import ROOT
from tools.compile import MODULES


def _is_dataclass_decorator(node: ast.expr) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return isinstance(target, ast.Name) and target.id == "dataclass"


def written_inits() -> list[tuple[str, ast.ClassDef]]:
    """(module, class) of every dataclass in the compiled modules with its own __init__."""
    found = []
    for path in MODULES:
        tree = ast.parse((ROOT / path).read_text())
        module = path.removesuffix(".py").replace("/", ".")
        for node in tree.body:
            if (
                isinstance(node, ast.ClassDef)
                and any(_is_dataclass_decorator(d) for d in node.decorator_list)
                and any(
                    isinstance(item, ast.FunctionDef) and item.name == "__init__"
                    for item in node.body
                )
            ):
                found.append((module, node))
    return found


def assigned(init: ast.FunctionDef) -> set[str]:
    """The attributes `__init__` sets on self (chained assignments included)."""
    names = set()
    for node in ast.walk(init):
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                names.add(target.attr)
    return names


CLASSES = written_inits()


def test_the_hot_records_write_their_inits() -> None:
    """The records built on every request are among them (the list is not empty by
    accident of a parse)."""
    names = {node.name for _, node in CLASSES}
    assert {"Continue", "Draft", "Plan", "Arrival", "Usage", "Meter", "Routed"} <= names


@pytest.mark.parametrize(("module", "node"), CLASSES, ids=[n.name for _, n in CLASSES])
def test_a_written_init_sets_every_field(module: str, node: ast.ClassDef) -> None:
    init = next(i for i in node.body if isinstance(i, ast.FunctionDef) and i.name == "__init__")
    cls = getattr(importlib.import_module(module), node.name)
    fields = {f.name for f in dataclasses.fields(cls)}
    assert assigned(init) == fields
