"""Type and range checks over parsed JSON, and their failures in each client's words.

A check is a plain callable over one JSON value: it returns when the value fits and raises
`Invalid` when it does not. Containers catch an inner failure only to add their key or
index to its path, so a valid request pays for no path bookkeeping, and a failure names the
full path (`messages[0].content[1].type` for OpenAI, `messages.0.content.1` for Anthropic).
Checks look at a value's type, never into its text: a 400 KB string costs one type test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from extproc.apis import ApiError, Schema

Check = Callable[[Any], None]


class Problem(Enum):
    TYPE = "invalid_type"
    MISSING = "missing_required_parameter"
    INTEGER_BELOW = "integer_below_min_value"
    INTEGER_ABOVE = "integer_above_max_value"
    DECIMAL_BELOW = "decimal_below_min_value"
    DECIMAL_ABOVE = "decimal_above_max_value"
    EMPTY = "empty_array"
    TOO_LONG = "array_above_max_length"


@dataclass(frozen=True, slots=True)
class Expected:
    """What a value should have been, as OpenAI and Anthropic (pydantic) say it."""

    openai: str
    anthropic: str


STRING: Final = Expected("a string", "a valid string")
BOOLEAN: Final = Expected("a boolean", "a valid boolean")
INTEGER: Final = Expected("an integer", "a valid integer")
NUMBER: Final = Expected("a number", "a valid number")
ARRAY: Final = Expected("an array", "a valid list")
OBJECT: Final = Expected("an object", "a valid dictionary")


class Invalid(Exception):
    """A value that breaks the published API. `path` is built innermost first."""

    def __init__(self, problem: Problem, value: Any = None, limit: Any = None) -> None:
        super().__init__(problem.value)
        self.problem = problem
        self.value = value
        self.limit = limit
        self.path: list[str | int] = []


def missing(name: str) -> Invalid:
    invalid = Invalid(Problem.MISSING)
    invalid.path.append(name)
    return invalid


# -- checks -----------------------------------------------------------------------------


def string(value: Any) -> None:
    if type(value) is not str:
        raise Invalid(Problem.TYPE, value, STRING)


def boolean(value: Any) -> None:
    if type(value) is not bool:
        raise Invalid(Problem.TYPE, value, BOOLEAN)


def anything(value: Any) -> None:
    """An object whose inside the gateway neither reads nor checks."""
    if type(value) is not dict:
        raise Invalid(Problem.TYPE, value, OBJECT)


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    def check(value: Any) -> None:
        if type(value) is not int:  # bool is not int here; 1.0 is not an integer either
            raise Invalid(Problem.TYPE, value, INTEGER)
        if minimum is not None and value < minimum:
            raise Invalid(Problem.INTEGER_BELOW, value, minimum)
        if maximum is not None and value > maximum:
            raise Invalid(Problem.INTEGER_ABOVE, value, maximum)

    return check


# `int | float`: the bounds are quoted as written (OpenAI's "<= 2"), and compiled code would
# make a `float` of an int.
def number(minimum: int | float, maximum: int | float) -> Check:
    def check(value: Any) -> None:
        kind = type(value)
        if kind is not float and kind is not int:
            raise Invalid(Problem.TYPE, value, NUMBER)
        if value < minimum:
            raise Invalid(Problem.DECIMAL_BELOW, value, minimum)
        if value > maximum:
            raise Invalid(Problem.DECIMAL_ABOVE, value, maximum)

    return check


# The bound of an array no provider bounds (content parts, blocks, stop sequences, ...):
# Anthropic's largest published bound (100,000 messages), beyond any real request. Every
# array a check walks is bounded: by its provider's published bound where there is one,
# else by this.
MAX_ITEMS: Final = 100_000


def array(
    item: Check | None = None,
    *,
    min_items: int = 0,
    max_items: int = MAX_ITEMS,
    expected: Expected = ARRAY,
) -> Check:
    def check(value: Any) -> None:
        if type(value) is not list:
            raise Invalid(Problem.TYPE, value, expected)
        if len(value) < min_items:
            raise Invalid(Problem.EMPTY, value, min_items)
        if len(value) > max_items:
            raise Invalid(Problem.TOO_LONG, len(value), max_items)
        if item is not None:
            for index, element in enumerate(value):
                try:
                    item(element)
                except Invalid as invalid:
                    invalid.path.append(index)
                    raise

    return check


# Keys beyond its table's an object may have before `fields` looks the table's keys up in
# it rather than walking its own (providers add a few fields; a client may send millions).
_SPARE_KEYS: Final = 16


def fields(
    table: Mapping[str, Check], *, required: Iterable[str] = (), expected: Expected = OBJECT
) -> Check:
    """An object: its required keys present (not null), and the keys of `table` it has
    checked. Keys the table does not name are left to the provider (APIs grow fields)."""
    needed = tuple(required)
    known = dict(table)

    def check(value: Any) -> None:
        if type(value) is not dict:
            raise Invalid(Problem.TYPE, value, expected)
        for name in needed:
            if value.get(name) is None:
                raise missing(name)
        if len(value) > len(known) + _SPARE_KEYS:
            # Many keys the table does not name: look up the table's instead, so what an
            # object costs is bounded by its table, not by how many keys a client sends.
            value = {key: value[key] for key in known if key in value}
        for key, item in value.items():
            inner = known.get(key)
            if inner is not None and item is not None:
                try:
                    inner(item)
                except Invalid as invalid:
                    invalid.path.append(key)
                    raise

    return check


def tagged(
    tag: str,
    variants: Mapping[str, Check],
    *,
    other: Check | None = None,
    expected: Expected = OBJECT,
) -> Check:
    """An object of a union told apart by one key (`role`, `type`): the variant it names
    checks it. A name outside the union is the provider's to answer (APIs add variants, and
    compatible servers their own): `other` checks the fields the gateway reads of it, if any."""
    table = dict(variants)

    def check(value: Any) -> None:
        if type(value) is not dict:
            raise Invalid(Problem.TYPE, value, expected)
        kind = value.get(tag)
        if kind is None:
            raise missing(tag)
        if type(kind) is not str:
            invalid = Invalid(Problem.TYPE, kind, STRING)
            invalid.path.append(tag)
            raise invalid
        variant = table.get(kind, other)
        if variant is not None:
            variant(value)

    return check


def by_type(expected: Expected, checks: Mapping[type, Check | None]) -> Check:
    """A value of one of several JSON types (a string or an array of parts, ...), each
    checked its own way (None: nothing more to check)."""
    table = dict(checks)

    def check(value: Any) -> None:
        try:
            inner = table[type(value)]
        except KeyError:
            raise Invalid(Problem.TYPE, value, expected) from None
        if inner is not None:
            inner(value)

    return check


# -- the client's error -------------------------------------------------------------------


def json_type(value: Any) -> str:
    """The JSON type of a value, as OpenAI names it in "but got ... instead"."""
    kind = type(value)
    if kind is bool:
        return "a boolean"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a decimal number"
    if kind is str:
        return "a string"
    if kind is list:
        return "an array"
    if kind is dict:
        return "an object"
    return "null"


def _openai(invalid: Invalid, path: str) -> str:
    problem, value, limit = invalid.problem, invalid.value, invalid.limit
    if problem is Problem.TYPE:
        return (
            f"Invalid type for '{path}': expected {limit.openai}, "
            f"but got {json_type(value)} instead."
        )
    if problem is Problem.MISSING:
        return f"Missing required parameter: '{path}'."
    if problem is Problem.EMPTY:
        return (
            f"Invalid '{path}': empty array. Expected an array with minimum length {limit}, "
            "but got an empty array instead."
        )
    if problem is Problem.TOO_LONG:
        return (
            f"Invalid '{path}': array too long. Expected an array with maximum length "
            f"{limit}, but got an array with length {value} instead."
        )
    kind = "integer" if problem in (Problem.INTEGER_BELOW, Problem.INTEGER_ABOVE) else "decimal"
    below = problem in (Problem.INTEGER_BELOW, Problem.DECIMAL_BELOW)
    bound = "below minimum" if below else "above maximum"
    return (
        f"Invalid '{path}': {kind} {bound} value. "
        f"Expected a value {'>=' if below else '<='} {limit}, but got {value} instead."
    )


def _anthropic(invalid: Invalid) -> str:
    problem, value, limit = invalid.problem, invalid.value, invalid.limit
    if problem is Problem.TYPE:
        return f"Input should be {limit.anthropic}"
    if problem is Problem.MISSING:
        return "Field required"
    if problem is Problem.EMPTY:
        return f"List should have at least {limit} item after validation, not 0"
    if problem is Problem.TOO_LONG:
        return f"List should have at most {limit} items after validation, not {value}"
    if problem in (Problem.INTEGER_BELOW, Problem.DECIMAL_BELOW):
        return f"Input should be greater than or equal to {limit}"
    return f"Input should be less than or equal to {limit}"


def error(invalid: Invalid, api: Schema) -> ApiError:
    """The 400 a client of `api` gets: OpenAI's message, code and param; Anthropic's
    `path: message` (its errors carry no param)."""
    path = invalid.path[::-1]
    code = invalid.problem.value
    if api is Schema.ANTHROPIC:
        where = ".".join(str(part) for part in path)
        return ApiError(400, f"{where}: {_anthropic(invalid)}", code, where)
    param = "".join(f"[{part}]" if type(part) is int else f".{part}" for part in path)
    param = param.removeprefix(".")
    return ApiError(400, _openai(invalid, param), code, param)
