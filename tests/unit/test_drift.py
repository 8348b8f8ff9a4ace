"""Schema drift: field paths learned per backend and endpoint, changes reported once."""

from __future__ import annotations

from extproc.drift import Change, DriftMonitor, event_paths, paths


def test_paths_of_a_body() -> None:
    body = {
        "id": "x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 1, "prompt_tokens_details": {"cached_tokens": 0}},
    }
    assert paths(body) == {
        "id",
        "choices",
        "choices[].index",
        "choices[].message",
        "choices[].message.role",
        "choices[].message.content",
        "usage",
        "usage.prompt_tokens",
        "usage.prompt_tokens_details",
        "usage.prompt_tokens_details.cached_tokens",
    }
    found: set[str] = set()
    event_paths({"type": "message_delta", "usage": {"output_tokens": 3}}, found)
    assert found == {
        "message_delta:type",
        "message_delta:usage",
        "message_delta:usage.output_tokens",
    }


def test_huge_and_deep_bodies_are_bounded() -> None:
    assert len(paths({f"k{i}": i for i in range(10_000)})) == 256
    deep: dict[str, object] = {}
    node = deep
    for _ in range(50):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    assert len(paths(deep)) == 6


def test_changes_after_learning_are_reported_once() -> None:
    monitor = DriftMonitor(learning_responses=3)
    usual = {"id", "choices", "usage"}
    for found in (usual, usual | {"system_fingerprint"}, usual):
        assert monitor.observe("openai", "/chat/completions (buffered)", found) == []
    # An optional field seen while learning is fine; a new one is reported, once.
    assert (
        monitor.observe("openai", "/chat/completions (buffered)", usual | {"system_fingerprint"})
        == []
    )
    assert monitor.observe("openai", "/chat/completions (buffered)", usual | {"service_tier"}) == [
        Change("openai", "/chat/completions (buffered)", "added", "service_tier")
    ]
    assert monitor.observe("openai", "/chat/completions (buffered)", usual | {"service_tier"}) == []
    # A field every learning response had goes missing: reported, once.
    assert monitor.observe("openai", "/chat/completions (buffered)", {"id", "choices"}) == [
        Change("openai", "/chat/completions (buffered)", "missing", "usage")
    ]
    assert monitor.observe("openai", "/chat/completions (buffered)", {"id", "choices"}) == []
    # Each backend and endpoint learns on its own.
    assert monitor.observe("other", "/chat/completions (buffered)", {"x"}) == []


def test_a_new_object_is_one_change() -> None:
    monitor = DriftMonitor(learning_responses=1)
    monitor.observe("b", "e", {"id", "usage", "usage.total"})
    changes = monitor.observe("b", "e", {"id", "extra", "extra.a", "extra.b[].c"})
    assert [(c.change, c.path) for c in changes] == [("added", "extra"), ("missing", "usage")]


def test_after_learning_one_response_in_n_is_read() -> None:
    monitor = DriftMonitor(learning_responses=2, check_every=3)
    assert monitor.wants("b", "e") and monitor.wants("b", "e")  # learning: every response
    monitor.observe("b", "e", {"id"})
    monitor.observe("b", "e", {"id"})
    assert [monitor.wants("b", "e") for _ in range(6)] == [False, False, True] * 2
