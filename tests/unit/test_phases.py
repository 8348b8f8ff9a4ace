from __future__ import annotations

import pytest

from extproc.phases import PhaseOrder


def run(*steps: tuple[str | None, bool, bool]) -> list[bool]:
    """Admit each (kind, end_of_stream, answered) in turn; what was admitted."""
    order = PhaseOrder()
    admitted = []
    for kind, end, answered in steps:
        ok = order.admit(kind)
        admitted.append(ok)
        if ok:
            order.done(end, answered)
    return admitted


@pytest.mark.parametrize(
    "steps",
    [
        # Buffered request, streamed response with trailers.
        [
            ("request_headers", False, False),
            ("request_body", True, False),
            ("response_headers", False, False),
            ("response_body", False, False),
            ("response_body", True, False),
            ("response_trailers", True, False),
        ],
        # A request without a body; a response without one.
        [("request_headers", True, False), ("response_headers", True, False)],
        # Request trailers, and a phase the configuration skipped.
        [
            ("request_headers", False, False),
            ("request_trailers", True, False),
            ("response_body", True, False),
        ],
    ],
)
def test_what_envoy_sends_is_admitted(steps: list[tuple[str, bool, bool]]) -> None:
    assert all(run(*steps))


@pytest.mark.parametrize(
    "steps",
    [
        [("request_body", True, False)],  # no headers first
        [(None, False, False)],  # no phase
        [("request_headers", False, False), ("request_headers", False, False)],
        [("request_headers", True, False), ("request_body", True, False)],  # after the end
        [
            ("request_headers", False, False),
            ("request_body", True, False),
            ("request_body", True, False),
        ],
        [
            ("request_headers", False, False),
            ("response_headers", False, False),
            ("request_body", True, False),
        ],  # backwards
        [("request_headers", False, True), ("request_body", True, False)],  # after an answer
        [
            ("request_headers", False, False),
            ("response_headers", True, False),
            ("response_body", True, False),
        ],
    ],
)
def test_what_envoy_never_sends_is_refused(steps: list[tuple[str | None, bool, bool]]) -> None:
    admitted = run(*steps)
    assert admitted[-1] is False and all(admitted[:-1])
