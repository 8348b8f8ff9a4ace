"""Provider schema drift: the JSON field paths each backend returns, learned, then watched.

For every backend and endpoint the service records which field paths its responses
carry ("choices[].message.content"; stream events are prefixed with their type,
"message_delta:usage.output_tokens"). During a learning period it only counts; after it,
a path never seen while learning is reported as added, and a path every learning
response carried that a response lacks is reported as missing. Each change is reported
once, so a provider's silent API change is noticed before it breaks clients.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Bounds per response, so a pathological body costs little: deep structures and huge
# objects (free-form maps) stop being walked.
MAX_DEPTH = 6
MAX_PATHS = 256


def paths(value: Any, prefix: str = "", out: set[str] | None = None, depth: int = 0) -> set[str]:
    """Field paths of a JSON value: object keys joined by ".", arrays as "[]"."""
    found = set() if out is None else out
    if depth >= MAX_DEPTH or len(found) >= MAX_PATHS:
        return found
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            found.add(path)
            if len(found) >= MAX_PATHS:
                break
            if isinstance(item, dict | list):
                paths(item, path, found, depth + 1)
    elif isinstance(value, list):
        for item in value[:8]:  # the items of one array share a shape
            if isinstance(item, dict | list):
                paths(item, f"{prefix}[]", found, depth + 1)
    return found


def event_paths(payload: dict[str, Any], out: set[str]) -> None:
    """Paths of one stream event, prefixed by its type (Anthropic) or object (OpenAI)."""
    kind = payload.get("type") or payload.get("object") or "event"
    prefix = f"{kind}:" if isinstance(kind, str) else "event:"
    for path in paths(payload):
        out.add(prefix + path)
        if len(out) >= 4 * MAX_PATHS:
            return


def _parent(path: str) -> str | None:
    head, dot, _ = path.rpartition(".")
    return head.removesuffix("[]") if dot else None


def tops(found: set[str] | frozenset[str]) -> list[str]:
    """The paths none of whose ancestors is in the set as well."""
    tops = []
    for path in found:
        parent = _parent(path)
        while parent is not None and parent not in found:
            parent = _parent(parent)
        if parent is None:
            tops.append(path)
    return tops


@dataclass(frozen=True, slots=True)
class Change:
    backend: str
    endpoint: str
    change: str  # "added" or "missing"
    path: str


@dataclass(slots=True)
class _Shape:
    responses: int = 0
    seen: Counter[str] = field(default_factory=Counter)
    baseline: frozenset[str] | None = None
    required: frozenset[str] = frozenset()
    reported: set[tuple[str, str]] = field(default_factory=set)
    skipped: int = 0


class DriftMonitor:
    def __init__(self, learning_responses: int, check_every: int = 1) -> None:
        self.learning = learning_responses
        self.check_every = max(1, check_every)
        self._shapes: dict[tuple[str, str], _Shape] = {}

    def wants(self, backend: str, endpoint: str) -> bool:
        """Whether to read this response's field names: every response while learning,
        then one in `check_every`."""
        shape = self._shapes.get((backend, endpoint))
        if shape is None:
            shape = self._shapes[(backend, endpoint)] = _Shape()
        if shape.baseline is None:
            return True
        shape.skipped += 1
        if shape.skipped < self.check_every:
            return False
        shape.skipped = 0
        return True

    def observe(self, backend: str, endpoint: str, found: set[str]) -> list[Change]:
        """One response's paths; the changes to report now (each one only once)."""
        shape = self._shapes.get((backend, endpoint))
        if shape is None:
            shape = self._shapes[(backend, endpoint)] = _Shape()
        if shape.baseline is None:
            shape.responses += 1
            shape.seen.update(found)
            if shape.responses >= self.learning:
                shape.baseline = frozenset(shape.seen)
                shape.required = frozenset(
                    path for path, count in shape.seen.items() if count == shape.responses
                )
                shape.seen.clear()
            return []
        # A new object reports once, at its top: not each field inside it as well.
        added = found - shape.baseline
        missing = shape.required - found
        changes = [Change(backend, endpoint, "added", p) for p in tops(added)]
        changes += [Change(backend, endpoint, "missing", p) for p in tops(missing)]
        fresh = [c for c in changes if (c.change, c.path) not in shape.reported]
        shape.reported.update((c.change, c.path) for c in fresh)
        return sorted(fresh, key=lambda c: (c.change, c.path))
